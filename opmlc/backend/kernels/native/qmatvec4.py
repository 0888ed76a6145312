"""Host kernel of opmlc/ir/ops/qmatmul.py for an LLM's decoding step with 4-bit weights: a few rows
of x (M ≤ MAX_ROWS) against a constant i4 weight in blocks, on AVX-512 VNNI (`vpdpbusd`), one
block to an i32 lane, so each block's scale multiplies one lane once.

Why another layout. qmatmul_vnni.py reads the weight as the build stores it (row after row, two
elements a byte): a 64-byte load holds 128 consecutive elements of one row, i.e. 4 blocks of
32, so after every load's 8 `vpdpbusd` it scales its 16 lanes (the planes recombined, the
scales gathered and widened, 4 `vpmuldq`), and after the products it takes each block's offset
correction in a scalar loop: several times the µops of the products, and a decoding step read
its weights at about half the memory's bandwidth. Here the weight and its scales are laid out
again once per region table (`derive`): lane L of a 64-byte vector holds elements of block
16g + L, so 16 blocks go through the products side by side and each lane holds its whole
block's sum when they end; the 16 scales are one vector load, and the offset correction is
folded into the accumulators' start values.

Derived layout (`derive`, from the region table's packed i4 q [N, K] and i32 scale [N, nb]).
With nb = ceil(K/bs) blocks a row, G = ceil(nb/16) groups of 16 blocks and T = bs/8 steps a
block, a row's group is T + 1 lines of 64 bytes: line t (< T) holds in byte 4L + i the nibbles
w = q + 8 ∈ [0, 15] of elements (16g + L)·bs + 8t + i (low nibble, half 0) and that + 4 (high
nibble, half 1), 0 past K; line T holds the 16 blocks' scales (0 past nb). Rows go by tiles of
COLS (rows 4u .. 4u + 3; a part starts on a multiple of GRAIN = COLS): a tile's groups follow
each other, and within a group its rows' lines alternate (line t of row 0, of row 1, …; then
the scale lines), so a tile reads one sequential stream, which the kernel prefetches PREFETCH
bytes ahead. Rows past the last whole tile follow one by one. A row takes G·(T + 1)·64 bytes
wherever it lies (the packed weight's size and its scales', padded), so rows j .. j + c − 1
start at byte j·G·(T + 1)·64.

x (at run time, per part): each row is copied into a zero-padded buffer of 16·G·bs elements,
then split into the byte planes of qmatmul_vnni.py (x = b0 + 2^8·b1 + 2^16·b2 + 2^24·s3: three
low bytes unsigned, the top one signed; exact for every int32) in the weight's order: for group
g, step t, half h and plane p, 64 bytes whose lane L holds plane p of the four elements that
meet lane L's weight bytes. The planes of each lane are also summed (`vpdpbusd` against ones),
giving each accumulator's start A_p = −8·Σ_{k∈block} b_p(x_k).

Products, per row of x and weight row, per group: acc_p = A_p, then for each step and half
`vpdpbusd(b_p, w)` for p = 0..2 and `vpdpbusd(w, s3)` (w is a valid u8 and s8). Lane L then
holds, recombined, Σ_p 2^(8p)·acc_p = Σ_{k∈block} x_k·(q_k + 8) − 8·Σ_{k∈block} x_k =
Σ_{k∈block} x_k·q_k, the block's exact dot product.

Bound (i32 lanes). One `vpdpbusd` adds four products to a lane, |b_p·w| ≤ 255·15 and
|w·s3| ≤ 15·128; a lane takes 2T = bs/4 of them a plane, so with its start
|acc_p| ≤ bs·255·15 + 8·bs·255 = 5865·bs ≤ 1501440 < 2^21 for bs ≤ MAX_BLOCK = 256. Then
lo = acc_0 + 2^8·acc_1 and hi = acc_2 + 2^8·acc_3 lie below 2^21 + 2^29 < 2^30: exact in i32,
and the block's sum is lo + 2^16·hi. Each lane adds lo·s + 2^16·(hi·s) to its i64 total, s
its block's scale (products of two exact i32s: `vpmuldq` on the even and the odd lanes); the
totals, the lanes' sum and the bias are wrap-around i64, the op's ring (ops/qmatmul.py:
Σ_b scale_b·Σ_{k∈b} x_k·q_k is its own rearrangement). Blocks past nb have zero weights and a
zero scale.

Taken (`facts`: learnt when the module is generated, so the derived buffer exists) for q and
scale initializers, i4, no zero point, block sizes 8..256 that qmatmul_vnni.py also takes
(its kernel serves the same node when q is no initializer), M ≤ MAX_ROWS and a scratch within
SCRATCH. Parts (threads): ranges of weight rows on tile boundaries, each part making x's
planes itself (M·K against its N_part·M·K). TinyLlama-1.1B's decoding step went from 65–71 to
50–53 ms on one thread (docs/DESIGN.md, "4-bit decoding matvec").
"""

from __future__ import annotations

from math import prod

import numpy as np
from llvmlite import ir

from opmlc.backend.kernels._ir import (
    I8,
    I32,
    c32,
    entry_alloca,
    load,
    loop,
    store,
)
from opmlc.backend.kernels._qweight import constant_qweight, finish_output, operands
from opmlc.backend.kernels.native import qmatmul_vnni
from opmlc.backend.kernels.native._vec import V16, VI64, hsum, intrinsic, part_range
from opmlc.ir.graph import Graph
from opmlc.ir.ops._qweight import n_blocks, split_inputs
from opmlc.ir.types import DType, TensorType

LANES = 16  # i32 lanes of a zmm register: one block each
MAX_BLOCK = 256  # the i32 bound (module docstring)
MAX_ROWS = 4  # rows of x: a decoding step has one (more re-read the tile's weights from L1)
COLS = 4  # weight rows a tile: 16 accumulators, 4 plane vectors, 2 weight vectors in 32 zmm
GRAIN = COLS  # part boundaries
PREFETCH = 4096  # bytes ahead in the tile's weight stream that each line's load asks L1 for
SCRATCH = 160 << 10  # bytes of stack a part's planes may take (a thread's stack is ≥ 2 MiB)
VB = ir.VectorType(I8, 64)


def _shape(k: int, bs: int) -> tuple[int, int, int]:
    """(blocks a row, groups of 16 blocks, steps a block)."""
    nb = n_blocks(k, bs)
    return nb, -(-nb // LANES), bs // 8


def _scratch_bytes(m: int, k: int, bs: int) -> int:
    """x's planes and accumulator starts for m rows, and one zero-padded row."""
    _, g, t = _shape(k, bs)
    return m * g * (t * 2 * 4 * 64 + 4 * 64) + g * LANES * bs * 4


def accepts(types: list[TensorType], attrs: dict, out_type: TensorType) -> bool:
    xt, qt = types[0], types[1]
    k, bs = xt.shape[-1], attrs["block_size"]
    zp, _ = split_inputs(types, 1)
    m = prod(xt.shape[:-1])
    return (qt.dtype is DType.I4 and zp is None and k > 0 and bs % 8 == 0 and 8 <= bs <= MAX_BLOCK
            and 1 <= m <= MAX_ROWS and _scratch_bytes(m, k, bs) <= SCRATCH
            and qmatmul_vnni.accepts(types, attrs, out_type))  # VNNI, an even K, and a kernel for a q that is no initializer


def facts(graph: Graph, index: int) -> dict:
    """{"derived": True, "layout": "blocks", "n", "k", "block"} when the kernel takes the node and
    its q and scale are initializers (the derived buffer is both laid out again); {} otherwise."""
    if not constant_qweight(graph, index, accepts):
        return {}
    node = graph.nodes[index]
    n, k = graph.values[node.inputs[1]].type.shape
    return {"derived": True, "layout": "blocks", "n": n, "k": k, "block": node.attrs["block_size"]}


def derive(facts: dict, operands: list[np.ndarray | None]) -> np.ndarray:
    """q [N, K] as the region table holds it (packed nibbles, row-major) and scale [N, nb] (i32) in the derived layout (module docstring), uint8
    [N·G·(T + 1)·64]. Four elements of a lane are four bytes in both layouts, so the
    rearrangement moves 32-bit words; a few MB of temporaries at a time (≈ 2 ns a weight)."""
    n, k, bs = facts["n"], facts["k"], facts["block"]
    nb, g, t = _shape(k, bs)
    padded = g * LANES * bs
    packed = np.asarray(operands[1]).view(np.uint8).reshape(-1)
    scale = np.asarray(operands[2]).view(np.uint32).reshape(n, nb)
    out = np.empty((n, g * (t + 1) * LANES), np.uint32)
    step = COLS * max(1, (1 << 21) // (COLS * padded))  # whole tiles
    elems = np.zeros((step, padded), np.uint8)  # w = q + 8 = the nibble ^ 8, zero past K
    scales = np.zeros((step, g * LANES), np.uint32)  # zero past nb
    for r0 in range(0, n, step):
        r1 = min(n, r0 + step)
        rows = r1 - r0
        # K is even (`accepts`): packed byte i of a row is its elements 2i (high nibble) and
        # 2i + 1, i.e. one little-endian u16 of w
        pk = packed[r0 * k // 2:r1 * k // 2].reshape(rows, k // 2).astype(np.uint16)
        np.bitwise_xor((pk >> 4) | ((pk & 15) << 8), 0x0808, out=elems[:rows].view(np.uint16)[:, :k // 2])
        words = elems[:rows].view(np.uint32).reshape(rows, g, LANES, t, 2)  # [row, g, L, t, half]
        cell = np.empty((rows, g, t + 1, LANES), np.uint32)  # a row's group: T weight lines, its scales
        cell[:, :, :t] = (words[..., 0] | (words[..., 1] << 4)).transpose(0, 1, 3, 2)  # nibbles < 16: no carries
        scales[:rows, :nb] = scale[r0:r1]
        cell[:, :, t] = scales[:rows].reshape(rows, g, LANES)
        tiles = rows // COLS  # r0 is a multiple of COLS: the rows past the last whole tile are single
        whole = tiles * COLS
        tiled = cell[:whole].reshape(tiles, COLS, g, t + 1, LANES).transpose(0, 2, 3, 1, 4)  # lines alternate
        out[r0:r0 + whole] = tiled.reshape(whole, out.shape[1])
        out[r0 + whole:r1] = cell[whole:].reshape(rows - whole, out.shape[1])
    return out.view(np.uint8).reshape(-1)


def _concat(b: ir.IRBuilder, parts: list[ir.Value]) -> ir.Value:
    """Vectors of one type, end to end (pairwise shuffles)."""
    while len(parts) > 1:
        width = parts[0].type.count
        mask = ir.Constant(ir.VectorType(I32, 2 * width), list(range(2 * width)))
        parts = [b.shuffle_vector(parts[i], parts[i + 1], mask) for i in range(0, len(parts), 2)]
    return parts[0]


def emit(b: ir.IRBuilder, out: ir.Value, args: list[ir.Value], types: list[TensorType], attrs: dict,
         out_type: TensorType, part: ir.Value, parts: ir.Value, facts: dict) -> None:
    """The node's part; `args` ends with the derived buffer."""
    xt, _, st = types[:3]
    x, _, _, _, bias, bias_t = operands(args[:-1], types)
    wbuf = b.bitcast(args[-1], I8.as_pointer())
    k, bs = xt.shape[-1], attrs["block_size"]
    m = prod(xt.shape[:-1])
    n = facts["n"]
    _, ng, steps = _shape(k, bs)
    padded = ng * LANES * bs
    row_w = ng * (steps + 1) * 64  # bytes of one weight row with its scales
    plane_bytes = ng * steps * 2 * 4 * 64  # one x row's planes, then its starts (ng × 4 × 64)
    row_x = plane_bytes + ng * 4 * 64
    prod_frac = xt.frac + st.frac
    shift = prod_frac - out_type.frac
    dp = intrinsic(b, "llvm.x86.avx512.vpdpbusd.512", V16, [V16, V16, V16])
    prefetch = intrinsic(b, "llvm.prefetch.p0", ir.VoidType(), [ir.PointerType(), I32, I32, I32])
    scratch = entry_alloca(b, ir.ArrayType(I8, m * row_x), name="planes")
    scratch.align = 64
    xpad = entry_alloca(b, ir.ArrayType(I32, padded), name="xpad")
    xpad.align = 64
    ones = ir.Constant(V16, [0x01010101] * LANES)  # a byte 1 in every u8 / s8 operand position
    sums = [entry_alloca(b, V16, name=f"sum{p}") for p in range(4)]
    zero16 = ir.Constant(V16, None)
    lo, hi = part_range(b, n, GRAIN, part, parts)

    def at(offset: ir.Value | int) -> ir.Value:
        offset = c32(offset) if isinstance(offset, int) else offset
        return b.gep(scratch, [c32(0), offset], source_etype=scratch.allocated_type)

    def vload(ptr: ir.Value, ty: ir.Type, align: int) -> ir.Value:
        return b.load(b.bitcast(ptr, ty.as_pointer()), typ=ty, align=align)

    def vstore(v: ir.Value, ptr: ir.Value, align: int) -> None:
        b.store(v, b.bitcast(ptr, v.type.as_pointer()), align=align)

    # ---- x → planes and accumulator starts, row by row
    with loop(b, m, "xr") as r:
        src = b.mul(r, c32(k))
        xp = b.bitcast(xpad, I32.as_pointer())
        with loop(b, k // LANES, "xc") as c:
            v = vload(b.gep(x, [b.add(src, b.mul(c, c32(LANES)))], source_etype=I32), V16, 4)
            vstore(v, b.gep(xp, [b.mul(c, c32(LANES))], source_etype=I32), 4)
        with loop(b, k % LANES, "xt") as e:
            at_k = c32(k - k % LANES)
            store(b, load(b, x, b.add(src, b.add(at_k, e))), xp, b.add(at_k, e))
        with loop(b, padded - k, "xz") as e:
            store(b, c32(0), xp, b.add(c32(k), e))
        base = b.mul(r, c32(row_x))
        with loop(b, ng, "xg") as g:
            for p in range(4):
                b.store(zero16, sums[p])
            with loop(b, steps, "xs") as t:
                for h in range(2):
                    first = b.add(b.mul(g, c32(LANES * bs)), b.add(b.mul(t, c32(8)), c32(4 * h)))
                    quads = [vload(b.gep(xp, [b.add(first, c32(lane * bs))], source_etype=I32), ir.VectorType(I32, 4), 4)
                             for lane in range(LANES)]
                    v = _concat(b, quads)  # <64 x i32>: lane L's four elements, lane after lane
                    line = b.add(base, b.add(b.mul(g, c32(steps * 512)), b.add(b.mul(t, c32(512)), c32(h * 256))))
                    for p in range(4):
                        byte = b.trunc(b.lshr(v, ir.Constant(v.type, [8 * p] * 64)) if p else v, VB)
                        vstore(byte, at(b.add(line, c32(p * 64))), 64)
                        bv = b.bitcast(byte, V16)
                        acc = b.load(sums[p], typ=V16)
                        b.store(b.call(dp, [acc, bv, ones] if p < 3 else [acc, ones, bv]), sums[p])
            for p in range(4):  # A_p = −8·Σ b_p: the offset of w = q + 8
                start = b.sub(zero16, b.shl(b.load(sums[p], typ=V16), ir.Constant(V16, [3] * LANES)))
                vstore(start, at(b.add(base, b.add(c32(plane_bytes), b.add(b.mul(g, c32(256)), c32(p * 64))))), 64)

    # ---- the products: tiles of COLS weight rows, then single rows
    accs = [entry_alloca(b, V16, name=f"acc{i}") for i in range(4 * COLS)]
    totals = [entry_alloca(b, VI64, name=f"total{i}") for i in range(2 * COLS)]
    s32 = ir.Constant(VI64, [32] * 8)
    sixteen = ir.Constant(VI64, [16] * 8)
    eight = ir.Constant(V16, [8] * LANES)
    low_nibble = ir.Constant(VB, [0x0F] * 64)
    four = ir.Constant(VB, [4] * 64)

    def even_odd(v: ir.Value) -> tuple[ir.Value, ir.Value]:
        """A <16 x i32>'s even and odd lanes, each sign-extended in an i64 lane (what `vpmuldq` reads)."""
        w = b.bitcast(v, VI64)
        return b.ashr(b.shl(w, s32), s32), b.ashr(w, s32)

    def group(cols: int, j0: ir.Value, xbase: ir.Value, g: ir.Value) -> None:
        """Group g of the weight rows j0 .. j0 + cols − 1 against one row of x: the 16 blocks'
        products, then each lane's lo·s + 2^16·hi·s added to the totals."""
        starts = [vload(at(b.add(xbase, b.add(c32(plane_bytes), b.add(b.mul(g, c32(256)), c32(p * 64))))), V16, 64)
                  for p in range(4)]
        for c in range(cols):
            for p in range(4):
                b.store(starts[p], accs[4 * c + p])
        cell = b.add(b.mul(j0, c32(row_w)), b.mul(g, c32(cols * (steps + 1) * 64)))  # the group's lines
        with loop(b, steps, "ts") as t:
            line = b.add(cell, b.mul(t, c32(cols * 64)))
            raw = [vload(b.gep(wbuf, [b.add(line, c32(c * 64))], source_etype=I8), VB, 1) for c in range(cols)]
            if PREFETCH:  # a hint, which never faults, even past the buffer's end
                for c in range(cols):
                    b.call(prefetch, [b.gep(wbuf, [b.add(line, c32(c * 64 + PREFETCH))], source_etype=I8),
                                      c32(0), c32(3), c32(1)])
            halves = [[b.bitcast(b.and_(v, low_nibble), V16), b.bitcast(b.and_(b.lshr(v, four), low_nibble), V16)]
                      for v in raw]
            for h in range(2):
                off = b.add(xbase, b.add(b.mul(g, c32(steps * 512)), b.add(b.mul(t, c32(512)), c32(h * 256))))
                planes = [vload(at(b.add(off, c32(p * 64))), V16, 64) for p in range(4)]
                for c in range(cols):
                    w = halves[c][h]
                    for p in range(4):
                        slot = accs[4 * c + p]
                        ops = [planes[p], w] if p < 3 else [w, planes[3]]
                        b.store(b.call(dp, [b.load(slot, typ=V16), *ops]), slot)
        for c in range(cols):
            s = vload(b.gep(wbuf, [b.add(cell, c32((cols * steps + c) * 64))], source_etype=I8), V16, 4)
            a = [b.load(accs[4 * c + p], typ=V16) for p in range(4)]
            lo_eo = even_odd(b.add(a[0], b.shl(a[1], eight)))
            hi_eo = even_odd(b.add(a[2], b.shl(a[3], eight)))
            s_eo = even_odd(s)
            for e in range(2):
                v = b.add(b.mul(lo_eo[e], s_eo[e]), b.shl(b.mul(hi_eo[e], s_eo[e]), sixteen))
                b.store(b.add(b.load(totals[2 * c + e], typ=VI64), v), totals[2 * c + e])

    def tile(cols: int, j0: ir.Value) -> None:
        js = [b.add(j0, c32(c)) for c in range(cols)]
        with loop(b, m, "tr") as r:
            xbase = b.mul(r, c32(row_x))
            for i in range(2 * cols):
                b.store(ir.Constant(VI64, None), totals[i])
            with loop(b, ng, "tg") as g:
                group(cols, j0, xbase, g)
            for c in range(cols):
                acc = hsum(b, b.add(b.load(totals[2 * c], typ=VI64), b.load(totals[2 * c + 1], typ=VI64)))
                finish_output(b, acc, bias, bias_t, js[c], prod_frac, shift, out, b.add(b.mul(r, c32(n)), js[c]))

    count = b.udiv(b.sub(hi, lo), c32(COLS))
    with loop(b, count, "tc") as u:
        tile(COLS, b.add(lo, b.mul(u, c32(COLS))))
    with loop(b, b.sub(b.sub(hi, lo), b.mul(count, c32(COLS))), "t1") as u:
        tile(1, b.add(b.add(lo, b.mul(count, c32(COLS))), u))
