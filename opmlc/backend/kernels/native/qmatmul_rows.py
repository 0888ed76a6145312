"""Host kernel of opmlc/ir/ops/qmatmul.py for a batch of rows (a prompt: M ≥ ROWS_MIN) with 8-bit
weights on AVX-512 VNNI: `vpdpbusd` lanes along the rows of x, so no lane is ever summed with
another, and the activations are split into as few byte planes as their range allows.

Only on a host with avx512vnni (qmatmul_vnni.has_vnni; the native object is keyed by the CPU
description). qmatmul.py dispatches: this kernel for i8 weights at M ≥ ROWS_MIN = 8 with one scale
per channel or blocks of whole 64-element chunks; qmatmul_vnni.py's (lanes along the reduction: a
token, M = 1, reads each weight byte once) otherwise.

Planes, chosen per call by the activations' range. A part first counts, over all of x, the
elements outside [−2^(8P−1), 2^(8P−1)) for P = 2 and 3 (v ^ (v >> 31) ≥ 2^(8P−1) exactly when v
lies outside). P ∈ {2, 3, 4} is the fewest planes with at most L = min(256, M·K/512) elements
outside (every int32 lies inside at P = 4). Those few, the outliers, enter the planes as 0 and a
list as (row, k, v); for every other element u = v + 2^(8P−1) ∈ [0, 2^(8P)) and
  u = Σ_{p<P} 2^(8p)·b_p,  b_p = (v >> 8p) & 255 for p < P − 1,  b_{P−1} = ((v >> 8(P−1)) + 128) & 255
(arithmetic shifts; v >> 8(P−1) ∈ −128..127, so the top byte is exact). Fewer planes, fewer
products: a plane less saves M·K/64 `vpdpbusd` per weight row, an outlier costs a few scalar
operations per weight row (so L ~ M·K/512 keeps it a win). LLaMA's norm outputs (fx32<24>,
~28 bits) take four planes, its down projection's input (~25 bits, a handful past 2^23) three.

Layout. Per group of G = 16·V rows (V = VECS = 1: with two lane vectors a group's planes leave
L1 at K = 512 and measured 1.5× slower), the part writes x's planes once into a stack scratch (a
pass holds as many groups as fit, up to 8; each tile then runs against every group of the pass
in turn, so a weight byte comes from memory once per pass: once at M ≤ 32 and K = 512): for
each quad of the reduction (4 consecutive k) and lane vector v, P vectors of 64 bytes; lane t of
vector (kq, v, p) holds b_p of x[16v + t, 4kq .. 4kq + 3], and zero bytes for k ≥ K and rows ≥ M
(zero, not the digits of 0: a padded element contributes nothing whatever its weight). Then per
tile of C weight rows (columns) and quad, each column's four weight bytes q are broadcast to the
lanes and `vpdpbusd(acc_p, b_p (u8), q (s8))` adds four products per lane and plane (a tile
of C = 6 columns, 12 at two planes, holds C·P accumulators and P plane vectors; it prefetches
the next tile's weights, 4·C bytes a quad: a node's weights stream from memory once per row
group). Per block b and row, Σ_p 2^(8p)·acc_p = Σ_{k∈b} u_k·q_k = Σ_{k∈b} x_k·q_k + 2^(8P−1)·Q_b, with Q_b = Σ_{k∈b} q_k
the block's weight sum. Each block's fold adds scale_b·(Σ_p 2^(8p)·acc_p − zp_b·Σ_{k∈b} x_k)
(the zero point's term only with one, Σx from the scratch) to the row's i64 total, which starts
at the column's constant
  E_P[j] = (bias_j << (fa + fs − fc)) − 2^(8P−1)·Σ_b scale_b·Q_b   (wrap-around i64)
(the bias term only with a constant bias: otherwise the finish adds it): the offset's part of
every block taken out at once (in the op's ring, Σ_b s_b·(A_b − 2^(8P−1)·Q_b) = Σ_b s_b·A_b −
2^(8P−1)·Σ_b s_b·Q_b). E_2, E_3, E_4 depend on the weights only: the node's derived buffer
(`derive`, kernels/native/__init__.py "Constant operands": computed once per region table, at
load; i64 [3, N], row P − 2), so the call reads one i64 per column and plane count and never
sums a weight. Without a constant q and scale (no derived buffer) qmatmul.py gives the node to
the other kernels. An outlier (its planes those of u = 2^(8P−1), i.e. of v = 0, which is what
the correction assumes; Σx holds its v) then adds scale_b·v·q_k to its row's i64 total.

Bounds. A lane (one row) of an accumulator adds, over one block, at most bs products b_p·q with
b_p ∈ 0..255 and q ∈ −128..127: |acc_p| ≤ 255·128·bs = 32640·bs ≤ 32640·2^16 = 2139095040 < 2^31
for blocks of at most MAX_BLOCK = 2^16 elements (one per channel: a block of K): no i32 lane
overflows, so no flush inside a block (and no saturation: `vpdpbusds` is not used). At the
block's end the planes are widened: |Σ_p 2^(8p)·acc_p| < 2^31·2^25 = 2^56, exact in i64. The
fold's products (scale, zero point), E_P (computed by `derive` in numpy's wrap-around uint64),
the outliers' scale_b·v·q and every later sum are wrap-around i64, the op's own ring
(ir/ops/qmatmul.py).

Per-call work: the range check and the planes (M·K·P bytes, for the part) and the products;
nothing that depends on the weights alone (E_P above). Parts (threads): ranges of output
columns (weight rows); each part checks and splits the same x itself, so every part takes the
same plane count.
"""

from __future__ import annotations

from math import prod

import numpy as np
from llvmlite import ir

from opmlc.backend.kernels._ir import (
    I8,
    I32,
    I64,
    c32,
    c64,
    counter_slot,
    counting,
    entry_alloca,
    load,
    loop,
    sext64,
    shl,
)
from opmlc.backend.kernels._qweight import constant_qweight, load_q, operands
from opmlc.backend.kernels.native import qmatmul_vnni as vnni
from opmlc.backend.kernels.native._vec import V16, intrinsic, part_range
from opmlc.ir import fixedpoint as fp
from opmlc.ir.graph import Graph
from opmlc.ir.ops._qweight import n_blocks, split_inputs
from opmlc.ir.types import DType, TensorType

ROWS_MIN = 8  # rows of x from which lanes along the rows win (measured, 512 → 1536: as fast as
# lanes along the reduction at 8 rows with the weights in cache, faster when they are not; 1.4× at 12; half at 4)
LANE_ROWS = 16  # i32 lanes of one zmm: rows of x per lane vector
CHUNK = 64  # blocks of whole 64-element chunks only (smaller ones, whose folds would weigh more, go to qmatmul_vnni)
MAX_BLOCK = 1 << 16  # elements of one block summed in i32 lanes (module docstring: bounds)
SCRATCH = 160 << 10  # bytes of stack for a pass's row groups (a thread's stack is ≥ 2 MiB)
PLANES = (2, 3, 4)
VECS = 1  # lane vectors per row group (module docstring: two were slower)
MAX_OUTLIERS = 256  # the outlier list's capacity (16 bytes an entry)
PASS_GROUPS = 8  # row groups per pass at most (128 rows)
PREFETCH = 1  # tiles ahead whose weights a tile prefetches (LLaMA 27.5M whole task: 17.3 ms without,
# 15.0 with; 3 tiles ahead or a second, L2 prefetch further ahead measured no better)
GRAIN = 12  # part boundaries: a multiple of every tile's width
WIDTHS = (1, 2, 3, 4, 6, 12)  # tile widths (weight rows): the divisors of GRAIN

ENABLED: bool | None = None  # None: when qmatmul_vnni's kernels run; tests set False to test those at M ≥ 8

V8 = ir.VectorType(I32, 8)
V8I64 = ir.VectorType(I64, 8)
VB = ir.VectorType(I8, 64)


def _mask(n: int, live: int) -> ir.Constant:
    return ir.Constant(ir.VectorType(ir.IntType(1), n), [int(t < live) for t in range(n)])


def _quads(k: int) -> int:
    return -(-k // 4)


def _kblock(k: int, bs: int) -> int:
    """Elements of one block as the kernel sums it: one per channel is the whole row."""
    return k if bs >= k else bs


def _scratch(k: int, nb: int, planes: int, vecs: int, zp: bool) -> tuple[int, int]:
    """(bytes of the planes, bytes in all) of one row group: the planes, then with a zero point
    per block and lane vector sixteen i64 Σx."""
    plane_bytes = _quads(k) * vecs * planes * 64
    return plane_bytes, plane_bytes + (nb * vecs * 128 if zp else 0)


def _group_bytes(k: int, nb: int, planes: int, zp: bool, limit: int) -> tuple[int, int]:
    """(offset of the outlier list, bytes) of one 16-row group's block of the scratch: its
    planes, its Σx, its outlier list and the list's length (in a line of its own)."""
    list_at = -(-_scratch(k, nb, planes, VECS, zp)[1] // 64) * 64
    return list_at, list_at + -(-16 * limit // 64) * 64 + 64  # whole lines: the next group's planes are aligned


def _groups(m: int, k: int, nb: int, planes: int, zp: bool) -> int:
    """Row groups per pass: as many as the scratch holds (up to all of them), so that a tile's
    weights, loaded once, serve every group of the pass."""
    size = _group_bytes(k, nb, planes, zp, _outliers(m, k))[1]
    return max(1, min(-(-m // (LANE_ROWS * VECS)), SCRATCH // size, PASS_GROUPS))


def _outliers(m: int, k: int) -> int:
    """How many elements of x may lie outside P planes' range, P < 4, and still take P planes
    (each costs a few scalar operations per weight row; a plane less saves M·K/64 vpdpbusd per
    weight row)."""
    return min(MAX_OUTLIERS, m * k // 512)


def _cols(planes: int, vecs: int) -> int:
    """Weight rows per tile: C·V·P accumulators + V·P plane vectors + a weight in 32 zmm."""
    return max(c for c in WIDTHS if (c + 1) * vecs * planes + 1 <= 32)


def accepts(types: list[TensorType], attrs: dict, out_type: TensorType) -> bool:
    xt, qt = types[0], types[1]
    k, bs = xt.shape[-1], attrs["block_size"]
    on = (vnni.has_vnni() and vnni.ENABLED is not False) if ENABLED is None else ENABLED
    if not on or qt.dtype is not DType.I8 or k == 0 or prod(xt.shape[:-1]) < ROWS_MIN:
        return False
    if not (bs >= k or bs % CHUNK == 0) or _kblock(k, bs) > MAX_BLOCK:
        return False
    zp, _ = split_inputs(types, 1)
    m = prod(xt.shape[:-1])
    return _group_bytes(k, n_blocks(k, _kblock(k, bs)), 4, zp is not None, _outliers(m, k))[1] <= SCRATCH


def facts(graph: Graph, index: int) -> dict:
    """{"derived": True, "block": elements of a block as the kernel sums them, and "bias_shift"
    with a constant bias} when the kernel takes the node and its q and scale are initializers
    (the derived buffer's inputs: module docstring, E_P); {} otherwise."""
    if not constant_qweight(graph, index, accepts):
        return {}
    node = graph.nodes[index]
    types = graph.input_types(node)
    k = types[0].shape[-1]
    out = {"derived": True, "block": _kblock(k, node.attrs["block_size"])}
    _, bias_t = split_inputs(types, 1)
    if bias_t is not None and node.inputs[-1] in graph.initializers:
        out["bias_shift"] = types[0].frac + types[2].frac - bias_t.frac
    return out


def derive(facts: dict, operands: list[np.ndarray | None]) -> np.ndarray:
    """E_2, E_3, E_4 (module docstring) of each column, i64 [3, N], from the region table's q
    [N, K] (i8), scale [N, nb] and, with "bias_shift", the bias (the last operand); every
    product and sum in uint64, i.e. wrap-around i64."""
    q = np.asarray(operands[1]).view(np.int8)
    n, k = q.shape
    scale = np.asarray(operands[2]).reshape(n, -1)
    bs = facts["block"]
    whole = k // bs  # Q_b in i32 (|Q_b| ≤ 128·bs ≤ 2^23): whole blocks by one reshape, then the last part
    qsum = np.concatenate([q[:, :whole * bs].reshape(n, whole, bs).sum(axis=2, dtype=np.int32),
                           q[:, whole * bs:].sum(axis=1, dtype=np.int32)[:, None][:, :int(k % bs != 0)]], axis=1)
    if qsum.shape != scale.shape:
        raise ValueError(f"qmatmul: a scale of shape {scale.shape} for {qsum.shape[1]} blocks of the weight; "
                         "regenerate the native module")
    weighted = (scale.astype(np.int64).astype(np.uint64) * qsum.astype(np.uint64)).sum(axis=1, dtype=np.uint64)
    base = np.zeros(n, np.uint64)
    if "bias_shift" in facts:
        base = fp.shl64(np.asarray(operands[-1]).reshape(n), facts["bias_shift"]).view(np.uint64)
    out = np.stack([base - (weighted << np.uint64(8 * p - 1)) for p in PLANES])
    return np.ascontiguousarray(out.view(np.int64))


def _splat(b: ir.IRBuilder, x: ir.Value, ty: ir.VectorType) -> ir.Value:
    v = b.insert_element(ir.Constant(ty, ir.Undefined), x, c32(0))
    return b.shuffle_vector(v, ir.Constant(ty, ir.Undefined), ir.Constant(ir.VectorType(I32, ty.count), [0] * ty.count))


class _Kernel:
    """The emitted code of one node: the shared operands, then `body` per plane count."""

    def __init__(self, b: ir.IRBuilder, out: ir.Value, args: list[ir.Value], types: list[TensorType],
                 attrs: dict, out_type: TensorType, part: ir.Value, parts: ir.Value, facts: dict) -> None:
        xt, qt, st = types[:3]
        self.b, self.out = b, out
        self.x, self.q, self.scale, self.zp, self.bias, self.bias_t = operands(args[:len(types)], types)
        self.consts = args[len(types)]  # E_P [3, N] (derive)
        if "bias_shift" in facts:  # the bias is in E_P
            self.bias = None
        self.k = k = xt.shape[-1]
        self.m = prod(xt.shape[:-1])
        self.n = qt.shape[0]
        self.bsk = _kblock(k, attrs["block_size"])
        self.nb = n_blocks(k, self.bsk)
        self.prod_frac = xt.frac + st.frac
        self.shift = self.prod_frac - out_type.frac
        self.lo, self.hi = part_range(b, self.n, GRAIN, part, parts)
        self.limit = _outliers(self.m, k)
        zp = self.zp is not None
        size = max(_groups(self.m, k, self.nb, p, zp) * _group_bytes(k, self.nb, p, zp, self.limit)[1] for p in PLANES)
        self.scratch = entry_alloca(b, ir.ArrayType(I8, size), name="planes")
        self.gbase: ir.Value = c32(0)  # the current row group's block in the scratch (body sets it)
        self.list_at = 0
        self.scratch.align = 64
        self.dp = intrinsic(b, "llvm.x86.avx512.vpdpbusd.512", V16, [V16, V16, V16])
        self.dummy = entry_alloca(b, I32, name="past_m")  # where a partial group's rows past M store
        most = max(_cols(p, VECS) * VECS * p for p in PLANES)
        self.accs = [entry_alloca(b, V16, name=f"acc{t}") for t in range(most)]
        self.tot = [entry_alloca(b, V8I64, name=f"tot{t}") for t in range(max(WIDTHS) * VECS * 2)]

    def at(self, offset: ir.Value, ty: ir.Type) -> ir.Value:
        """The current row group's scratch at `offset` (bytes)."""
        b = self.b
        where = b.add(self.gbase, offset)
        return b.bitcast(b.gep(self.scratch, [c32(0), where], source_etype=self.scratch.allocated_type), ty.as_pointer())

    @property
    def n_out(self) -> ir.Value:
        """The length of the current row group's outlier list (i32)."""
        return self.at(c32(self.list_at + 16 * self.limit), I32)

    def planes(self) -> ir.Value:
        """P for this call (module docstring): the fewest planes whose range holds all of x but
        at most `limit` elements (the outliers)."""
        b, x, total = self.b, self.x, self.m * self.k
        counts = [entry_alloca(b, V16, name=f"past{p}") for p in (2, 3)]
        for slot in counts:
            b.store(ir.Constant(V16, None), slot)

        def tally(v: ir.Value, ty: ir.VectorType, slots: list[ir.Value] | None) -> list[ir.Value]:
            a = b.xor(v, b.ashr(v, ir.Constant(ty, [31] * ty.count)))
            past = [b.zext(b.icmp_unsigned(">=", a, ir.Constant(ty, [1 << (8 * p - 1)] * ty.count)), ty) for p in (2, 3)]
            if slots is not None:
                for slot, c in zip(slots, past, strict=True):
                    b.store(b.add(b.load(slot, typ=V16), c), slot)
            return past

        if total // 16:
            with loop(b, total // 16, "rc") as i:
                tally(b.load(b.gep(x, [b.mul(i, c32(16))], source_etype=I32), typ=V16, align=4), V16, counts)
        red = intrinsic(b, "llvm.vector.reduce.add.v16i32", I32, [V16])
        n2, n3 = (b.call(red, [b.load(slot, typ=V16)]) for slot in counts)
        for t in range(total - total % 16, total):
            v = b.insert_element(ir.Constant(ir.VectorType(I32, 1), None), load(b, x, c32(t)), c32(0))
            c2, c3 = (b.extract_element(c, c32(0)) for c in tally(v, ir.VectorType(I32, 1), None))
            n2, n3 = b.add(n2, c2), b.add(n3, c3)
        few = c32(self.limit)
        return b.select(b.icmp_unsigned("<=", n2, few), c32(2), b.select(b.icmp_unsigned("<=", n3, few), c32(3), c32(4)))

    # ---- x → planes (and Σx per block with a zero point) for rows r0 .. r0 + rows − 1
    def prep(self, pc: int, r0: ir.Value, rows: ir.Value) -> None:
        """Per 16 rows × 16 elements: the rows' vectors (outliers listed and zeroed), regrouped
        per quad (rows 4j .. 4j + 3 × the quad's 4 elements in each of four vectors), then each
        plane's bytes of the four as one 64-byte vector, lane r = row r: whole-line stores."""
        b, k, x = self.b, self.k, self.x
        plane_bytes, size = _scratch(k, self.nb, pc, VECS, self.zp is not None)
        group = LANE_ROWS * VECS
        b.store(c32(0), self.n_out)
        masked_load = intrinsic(b, "llvm.masked.load.v16i32.p0", V16,
                                 [ir.PointerType(), I32, ir.VectorType(ir.IntType(1), 16), V16])

        def row_vector(t: int, k0: ir.Value, live: int) -> ir.Value:
            ptr = b.gep(x, [b.add(b.mul(b.add(r0, c32(t)), c32(k)), k0)], source_etype=I32)
            if self.m % group == 0 and live == 16:
                v = b.load(ptr, typ=V16, align=4)
            else:  # rows past M (a partial group) and elements past K read as 0, never from memory
                mask = _mask(16, live)
                if self.m % group:
                    mask = b.and_(mask, _splat(b, b.icmp_unsigned("<", c32(t), rows), ir.VectorType(ir.IntType(1), 16)))
                v = b.call(masked_load, [ptr, c32(4), mask, ir.Constant(V16, None)])
            return v

        def outside(v: ir.Value) -> tuple[ir.Value, ir.Value]:
            """v with the elements outside the planes' range zeroed, and whether there were any."""
            a = b.xor(v, b.ashr(v, ir.Constant(V16, [31] * 16)))
            inside = b.icmp_unsigned("<", a, ir.Constant(V16, [1 << (8 * pc - 1)] * 16))
            return b.select(inside, v, ir.Constant(V16, None)), b.zext(b.not_(b.bitcast(inside, ir.IntType(16))), I32)

        def listing(vec: int, k0: ir.Value, live: int) -> None:
            """The outliers of 16 rows × `live` elements into the list (lane, k, v), in order."""
            first_row = vec * LANE_ROWS
            count = b.sub(rows, c32(first_row))
            count = b.select(b.icmp_signed(">", count, c32(LANE_ROWS)), c32(LANE_ROWS), count)
            with loop(b, count, "or") as r:
                row_x = b.add(b.mul(b.add(r0, b.add(r, c32(first_row))), c32(k)), k0)
                with loop(b, live, "ou") as u:
                    v = load(b, x, b.add(row_x, u))
                    far = b.icmp_unsigned(">=", b.xor(v, b.ashr(v, c32(31))), c32(1 << (8 * pc - 1)))
                    with b.if_then(far):
                        e = b.load(self.n_out, typ=I32)
                        entry = b.add(c32(self.list_at), b.mul(e, c32(16)))
                        for f, val in enumerate((b.add(r, c32(first_row)), b.add(k0, u), v)):
                            b.store(val, self.at(b.add(entry, c32(4 * f)), I32), align=4)
                        b.store(b.add(e, c32(1)), self.n_out)

        def block(vec: int, k0: ir.Value, live: int) -> None:
            xs = [row_vector(vec * LANE_ROWS + r, k0, live) for r in range(LANE_ROWS)]
            if pc < 4:  # elements outside the planes' range: 0 in the planes, themselves in the list
                flags = []
                for r in range(LANE_ROWS):
                    xs[r], flag = outside(xs[r])
                    flags.append(flag)
                any_out = flags[0]
                for flag in flags[1:]:
                    any_out = b.or_(any_out, flag)
                with b.if_then(b.icmp_unsigned("!=", any_out, c32(0)), likely=False):
                    listing(vec, k0, live)
            first_quad = b.lshr(k0, c32(2))
            # 128-bit blocks (one quad of one row) transposed 4 × 4 within each four rows:
            # quads[j][kq] = rows 4j .. 4j + 3, quad kq
            quads = []
            for j in range(4):
                x0, x1, x2, x3 = xs[4 * j: 4 * j + 4]
                even = [0, 1, 2, 3, 16, 17, 18, 19, 4, 5, 6, 7, 20, 21, 22, 23]
                odd = [t + 8 for t in even]
                u = [b.shuffle_vector(x0, x1, ir.Constant(V16, even)), b.shuffle_vector(x0, x1, ir.Constant(V16, odd)),
                     b.shuffle_vector(x2, x3, ir.Constant(V16, even)), b.shuffle_vector(x2, x3, ir.Constant(V16, odd))]
                first = list(range(8)) + list(range(16, 24))
                second = [t + 8 for t in first]
                quads.append([b.shuffle_vector(u[kq // 2], u[2 + kq // 2], ir.Constant(V16, first if kq % 2 == 0 else second))
                              for kq in range(4)])
            for kq in range(_quads(live)):
                src = [b.bitcast(quads[j][kq], VB) for j in range(4)]
                pad = [int(4 * kq + i < live) for _r in range(16) for i in range(4)]
                for p in range(pc):
                    pick = [4 * t + p for t in range(16)] + [64 + 4 * t + p for t in range(16)]
                    halves = [b.shuffle_vector(src[2 * h], src[2 * h + 1], ir.Constant(ir.VectorType(I32, 32), pick))
                              for h in range(2)]
                    o = b.shuffle_vector(halves[0], halves[1], ir.Constant(ir.VectorType(I32, 64), list(range(64))))
                    if p == pc - 1:  # the top byte of v + 2^(8P−1): v's top byte, its sign bit flipped
                        o = b.xor(o, ir.Constant(VB, [-128] * 64))
                    if not all(pad):  # padding past K: zero bytes
                        o = b.select(ir.Constant(ir.VectorType(ir.IntType(1), 64), pad), o, ir.Constant(VB, None))
                    off = b.mul(b.add(b.mul(b.add(first_quad, c32(kq)), c32(VECS)), c32(vec)), c32(pc * 64))
                    b.store(o, self.at(b.add(off, c32(p * 64)), VB), align=64)

        for vec in range(VECS):
            if k // 16:
                with loop(b, k // 16, "pc") as c:
                    block(vec, b.mul(c, c32(16)), 16)
            if k % 16:
                block(vec, c32(k - k % 16), k % 16)
        if self.zp is not None:
            if self.m % group:  # a partial group: the Σx of rows past M are zero
                with b.if_then(b.icmp_unsigned("<", rows, c32(group))):
                    with loop(b, (size - plane_bytes) // 64, "pz") as z:
                        b.store(ir.Constant(VB, None), self.at(b.add(c32(plane_bytes), b.mul(z, c32(64))), VB), align=64)
            with loop(b, rows, "pr") as t:
                row_x = b.mul(b.add(r0, t), c32(k))
                lane64 = b.add(b.mul(b.lshr(t, c32(4)), c32(128)), b.mul(b.and_(t, c32(15)), c32(8)))
                with loop(b, self.nb, "pb") as blk:
                    k0 = b.mul(blk, c32(self.bsk))
                    count = b.select(b.icmp_unsigned(">", b.add(k0, c32(self.bsk)), c32(k)), b.sub(c32(k), k0),
                                     c32(self.bsk))
                    sx = entry_alloca(b, I64, name="sx")
                    b.store(c64(0), sx)
                    with loop(b, count, "pk") as i:
                        b.store(b.add(b.load(sx, typ=I64), sext64(b, load(b, x, b.add(row_x, b.add(k0, i))))), sx)
                    cell = b.add(c32(plane_bytes), b.add(b.mul(blk, c32(VECS * 128)), lane64))
                    b.store(b.load(sx, typ=I64), self.at(cell, I64), align=8)

    # ---- a tile: weight rows js against the row group's planes
    def quad(self, pc: int, js: list[ir.Value], kq: ir.Value, masked: bool) -> None:
        b, k = self.b, self.k
        base = b.mul(kq, c32(VECS * pc * 64))
        pl = [[b.load(self.at(b.add(base, c32((v * pc + p) * 64)), V16), typ=V16, align=64) for p in range(pc)]
              for v in range(VECS)]
        if not masked:  # the next tile's weights (the next C·K bytes), 4·C of them a quad: a hint, never a fault
            pf = intrinsic(b, "llvm.prefetch.p0", ir.VoidType(), [ir.PointerType(), I32, I32, I32])
            nxt = b.add(b.mul(b.add(js[0], c32(PREFETCH * len(js))), c32(k)), b.mul(kq, c32(4 * len(js))))
            b.call(pf, [b.gep(self.q, [nxt], source_etype=I8), c32(0), c32(3), c32(1)])
        for c, j in enumerate(js):
            ptr = b.gep(self.q, [b.add(b.mul(j, c32(k)), b.mul(kq, c32(4)))], source_etype=I8)
            if masked:  # the row's last quad: no byte past the row is read (it may lie past the buffer)
                vb = ir.VectorType(I8, 4)
                fn = intrinsic(b, "llvm.masked.load.v4i8.p0", vb,
                                [ir.PointerType(), I32, ir.VectorType(ir.IntType(1), 4), vb])
                word = b.bitcast(b.call(fn, [ptr, c32(1), _mask(4, k % 4), ir.Constant(vb, None)]), I32)
            else:
                word = b.load(ptr, typ=I32, align=1)
            w = _splat(b, word, V16)
            for v in range(VECS):
                for p in range(pc):
                    slot = self.accs[(c * VECS + v) * pc + p]
                    b.store(b.call(self.dp, [b.load(slot, typ=V16), pl[v][p], w]), slot)

    def fold(self, pc: int, js: list[ir.Value], blk: ir.Value) -> None:
        """tot += scale_b · (Σ_p 2^(8p)·acc_p − zp_b·Σx_b), lane by lane, in i64."""
        b, nb = self.b, self.nb
        plane_bytes = _scratch(self.k, nb, pc, VECS, self.zp is not None)[0]
        for c, j in enumerate(js):
            cell = b.add(b.mul(j, c32(nb)), blk)
            sv = _splat(b, sext64(b, load(b, self.scale, cell)), V8I64)
            zv = _splat(b, sext64(b, load_q(b, self.zp, cell, DType.I8)), V8I64) if self.zp is not None else None
            for v in range(VECS):
                wide = []
                for p in range(pc):
                    a = b.load(self.accs[(c * VECS + v) * pc + p], typ=V16)
                    wide.append([b.sext(b.shuffle_vector(a, a, ir.Constant(V8, list(range(8 * h, 8 * h + 8)))), V8I64)
                                 for h in range(2)])
                for h in range(2):
                    inner = wide[0][h]
                    for p in range(1, pc):
                        inner = b.add(inner, b.shl(wide[p][h], ir.Constant(V8I64, [8 * p] * 8)))
                    if zv is not None:
                        off = b.add(c32(plane_bytes), b.add(b.mul(blk, c32(VECS * 128)), c32(v * 128 + h * 64)))
                        inner = b.sub(inner, b.mul(zv, b.load(self.at(off, V8I64), typ=V8I64, align=64)))
                    slot = self.tot[(c * VECS + v) * 2 + h]
                    b.store(b.add(b.load(slot, typ=V8I64), b.mul(inner, sv)), slot)

    def tile(self, pc: int, width: int, r0: ir.Value, rows: ir.Value, j0: ir.Value) -> None:
        b, k, nb = self.b, self.k, self.nb
        js = [b.add(j0, c32(c)) for c in range(width)]
        bq = self.bsk // 4  # quads per block (all but a per-channel one are whole quads)
        for c, j in enumerate(js):  # the totals start at E_P (module docstring)
            e = _splat(b, load(b, self.consts, b.add(c32((pc - 2) * self.n), j), I64), V8I64)
            for t in range(VECS * 2):
                b.store(e, self.tot[c * VECS * 2 + t])

        def block(blk: ir.Value, elems: int) -> None:
            for t in range(width * VECS * pc):
                b.store(ir.Constant(V16, None), self.accs[t])
            first = b.mul(blk, c32(bq))
            plain = elems // 4
            with loop(b, plain, "kq") as kq:
                self.quad(pc, js, b.add(first, kq), False)
            if elems % 4:  # K is not a multiple of 4: the last quad's weights by a masked load
                self.quad(pc, js, b.add(first, c32(plain)), True)
            self.fold(pc, js, blk)

        if nb > 1:  # every block but the last is whole (bs is a multiple of 64)
            with loop(b, nb - 1, "kb") as blk:
                block(blk, self.bsk)
        block(c32(nb - 1), k - (nb - 1) * self.bsk)
        if pc < 4:
            self.outliers(width, js)
        self.finish(width, js, r0, rows)

    def outliers(self, width: int, js: list[ir.Value]) -> None:
        """tot += scale_b·x·q for each listed element (lane t, k, x): what its 0 in the planes left
        out (its u = 2^(8P−1) is what the offset correction assumes; Σx holds it)."""
        b, group = self.b, LANE_ROWS * VECS
        count = b.load(self.n_out, typ=I32)
        with b.if_then(b.icmp_unsigned("!=", count, c32(0)), likely=False):
            lanes = entry_alloca(b, ir.ArrayType(I64, max(WIDTHS) * group), name="lanes")
            base = b.bitcast(lanes, V8I64.as_pointer())
            for t in range(width * VECS * 2):  # tot[c][v][h] is lanes[c·G + 16v + 8h ..]
                b.store(b.load(self.tot[t], typ=V8I64), b.gep(base, [c32(t)], source_etype=V8I64), align=8)
            with loop(b, count, "ol") as e:
                entry = b.add(c32(self.list_at), b.mul(e, c32(16)))
                t, kk, xv = (b.load(self.at(b.add(entry, c32(4 * f)), I32), typ=I32, align=4) for f in range(3))
                blk = b.udiv(kk, c32(self.bsk))
                for c, j in enumerate(js):
                    w = sext64(b, load(b, self.q, b.add(b.mul(j, c32(self.k)), kk), I8))
                    s = sext64(b, load(b, self.scale, b.add(b.mul(j, c32(self.nb)), blk)))
                    cell = b.gep(b.bitcast(lanes, I64.as_pointer()), [b.add(c32(c * group), t)], source_etype=I64)
                    b.store(b.add(b.load(cell, typ=I64), b.mul(s, b.mul(sext64(b, xv), w))), cell)
            for t in range(width * VECS * 2):
                b.store(b.load(b.gep(base, [c32(t)], source_etype=V8I64), typ=V8I64, align=8), self.tot[t])

    def finish(self, width: int, js: list[ir.Value], r0: ir.Value, rows: ir.Value) -> None:
        """Bias, rounding shift, saturation (counted), and the stores: lane t of half h of
        vector v is row r0 + 16v + 8h + t."""
        b = self.b
        lo_c, hi_c = ir.Constant(V8I64, [fp.INT32_MIN] * 8), ir.Constant(V8I64, [fp.INT32_MAX] * 8)
        for c, j in enumerate(js):
            bias_v = None
            if self.bias is not None:
                bias_v = _splat(b, shl(b, sext64(b, load(b, self.bias, j)), self.prod_frac - self.bias_t.frac), V8I64)
            for v in range(VECS):
                for h in range(2):
                    acc = b.load(self.tot[(c * VECS + v) * 2 + h], typ=V8I64)
                    if bias_v is not None:
                        acc = b.add(acc, bias_v)
                    if self.shift:
                        acc = b.ashr(b.add(acc, ir.Constant(V8I64, [1 << (self.shift - 1)] * 8)),
                                     ir.Constant(V8I64, [self.shift] * 8))
                    clamped = b.select(b.icmp_signed("<", acc, lo_c), lo_c, acc)
                    clamped = b.select(b.icmp_signed(">", clamped, hi_c), hi_c, clamped)
                    first = v * LANE_ROWS + h * 8
                    live = None
                    if self.m % (LANE_ROWS * VECS):  # a partial group: lanes at rows ≥ M are not outputs
                        idx = ir.Constant(V8, list(range(first, first + 8)))
                        live = b.icmp_unsigned("<", idx, _splat(b, rows, V8))
                    if counting(b):
                        sat = b.icmp_signed("!=", clamped, acc)
                        if live is not None:
                            sat = b.and_(sat, live)
                        pop = b.call(intrinsic(b, "llvm.ctpop.i8", I8, [I8]), [b.bitcast(sat, I8)])
                        slot = counter_slot(b)
                        b.store(b.add(b.load(slot, typ=I32), b.zext(pop, I32)), slot)
                    y = b.trunc(clamped, V8)
                    for u in range(8):
                        row = b.add(r0, c32(first + u))
                        ptr = b.gep(self.out, [b.add(b.mul(row, c32(self.n)), j)], source_etype=I32)
                        if live is not None:
                            ptr = b.select(b.extract_element(live, c32(u)), ptr, self.dummy)
                        b.store(b.extract_element(y, c32(u)), ptr, align=4)

    def body(self, pc: int) -> None:
        """Passes of row groups: each group's planes, then every tile of the part's columns
        against each group of the pass in turn (the tile's weights stay in L1 between them)."""
        b, m = self.b, self.m
        zp = self.zp is not None
        group = LANE_ROWS * VECS
        cols = _cols(pc, VECS)
        self.list_at, size = _group_bytes(self.k, self.nb, pc, zp, self.limit)
        per_pass = _groups(m, self.k, self.nb, pc, zp)
        total = -(-m // group)

        def each_group(first: ir.Value, count: ir.Value, name: str, emit) -> None:
            with loop(b, count, name) as gi:
                self.gbase = b.mul(gi, c32(size))
                r0 = b.mul(b.add(first, gi), c32(group))
                left_rows = b.sub(c32(m), r0)
                rows = b.select(b.icmp_unsigned("<", left_rows, c32(group)), left_rows, c32(group))
                emit(r0, rows)
            self.gbase = c32(0)

        with loop(b, -(-total // per_pass), "qp") as ps:
            first = b.mul(ps, c32(per_pass))
            left_groups = b.sub(c32(total), first)
            count = b.select(b.icmp_unsigned("<", left_groups, c32(per_pass)), left_groups, c32(per_pass))
            each_group(first, count, "qg", lambda r0, rows: self.prep(pc, r0, rows))
            left = b.sub(self.hi, self.lo)
            tiles = b.udiv(left, c32(cols)) if cols > 1 else left
            with loop(b, tiles, f"qt{pc}") as u:
                j0 = b.add(self.lo, b.mul(u, c32(cols)))
                each_group(first, count, "qtg", lambda r0, rows, j0=j0: self.tile(pc, cols, r0, rows, j0))
            if cols > 1:  # the last part's columns past a multiple of the tile
                j1 = b.add(self.lo, b.mul(tiles, c32(cols)))
                with loop(b, b.sub(self.hi, j1), f"q1{pc}") as u:
                    each_group(first, count, "q1g", lambda r0, rows, u=u: self.tile(pc, 1, r0, rows, b.add(j1, u)))


def emit(b: ir.IRBuilder, out: ir.Value, args: list[ir.Value], types: list[TensorType], attrs: dict,
         out_type: TensorType, part: ir.Value, parts: ir.Value, facts: dict) -> None:
    """The node's part; `args` ends with the derived buffer (E_P), `facts` are `facts`'s."""
    kern = _Kernel(b, out, args, types, attrs, out_type, part, parts, facts)
    planes = kern.planes()
    done = b.append_basic_block("qr.done")
    sw = b.switch(planes, done)
    for pc in PLANES:
        blk = b.append_basic_block(f"qr.p{pc}")
        sw.add_case(c32(pc), blk)
        b.position_at_end(blk)
        kern.body(pc)
        b.branch(done)
    b.position_at_end(done)
