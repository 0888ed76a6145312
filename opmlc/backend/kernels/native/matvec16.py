"""Host kernel of opmlc/ir/ops/matmul.py for a one-row product with a constant weight, on AVX-512
VNNI (`vpdpwssd`) over narrow weight planes: a matrix-vector product reads every weight once, so
it is bound by the weight's bytes, and these planes take 2 or 3 bytes a weight where the int32
weight takes 4 (and the products run 32 to an instruction, not 8).

Taken by matmul.py's kernel for a node whose b is an initializer without batch dimensions and
whose a folds into one row (x [1, K] against w [N, K]), on a host with avx512vnni, when the
weight has planes (below; `weight_facts`, learnt when the module is generated). A run-time
check of x may send a run to matmul.py's other kernels instead.

Weight planes (`weight_planes`, numpy, once per region table: `derive`). With |w| < 2^15
(w ∈ [−2^15, 2^15)) one s16 plane, w itself (2 bytes a weight). Else w = h·2^s + l with
h = (w + 2^(s−1)) >> s (arithmetic) and l = w − h·2^s ∈ [−2^(s−1), 2^(s−1)) (s16 for s ≤ 16),
s the least split ≥ 1 for which every h fits s8 (3 bytes a weight: the MLP's 22-bit weights),
else the least for which h fits s16 (4 bytes; s ≤ 16); a weight with neither has no planes.
The facts name the high plane's width (0, 1 or 2 bytes); the derived buffer's header holds s
and W_l ≥ max |l|, W_h ≥ max |h| (exact maxima), and `derive` refuses a weight whose width
differs from the facts' (the kernel reads the width it was generated for).

x (at run time, per part): e_x from one pass (matmul_fma.magnitude_bits: x ∈ [−2^e_x, 2^e_x)).
One x plane when e_x ≤ 15 (x itself fits s16; X = 2^e_x bounds |x|); else, for e_x ≤ 30, two:
t = ceil((e_x + 1)/2), x = x_h·2^t + x_l as for the weight, x_l ∈ [−2^(t−1), 2^(t−1)) and
|x_h| ≤ 2^(e_x − t) (x + 2^(t−1) lies in [−2^e_x + 2^(t−1), 2^e_x + 2^(t−1)) and t ≤ e_x), both
s16 (t ≤ 16, e_x − t ≤ 14). A product of an x plane p and a weight plane q sums in its own i32
lanes and is recombined in wrap-around i64 (the op's ring, exact for any true sum):
Σ x·w = Σ_{p,q} 2^(t·[p = h] + s·[q = h]) · Σ x_p·w_q.

Bound (i32 lanes). One `vpdpwssd` adds two products to a lane: for weight plane q,
|Δ| ≤ Δ_q = 2·X·W_q with X the largest x plane bound (2^e_x, or max(2^(t−1), 2^(e_x − t))). A
lane of plane q starts at 0 and takes at most F_q = floor((2^31 − 1)/Δ_q) instructions before
it is sign-extended into two i64 lanes and restarts at 0: it stays in [−2^31 + 1, 2^31 − 1],
exact in i32 (no `vpdpwssd` wraps; the saturating form is not used). The reduction runs in
chunks of min_q F_q pairs; a plane with F_q ≥ ceil(K/2) (the s8 high plane, typically) is
widened once, at the end of the tile, the others after every chunk. When one x plane gives
min_q F_q < MIN_FLUSH the two-plane split is tried (smaller X), and when that too does (or
e_x > 30: int32 extremes) the run takes matmul.py's other kernels. `vpdpwssd` is emitted as
inline assembly: LLVM's machine combiner rewrites most intrinsic calls in such a loop into
`vpmaddwd` + `vpaddd` (two uops on the same ports), halving the loop's throughput.

Layout (`derive`): a 64-byte header (s, the high plane's width in bytes, W_l, W_h), then per
tile of TILE_COLS = C·16 output columns (N padded with zero columns to a multiple of it, K with
a zero to a multiple of 2) and per k pair, C low vectors (64 bytes: a k pair of 16 columns as
[16][2] s16) followed by C high vectors ([16][2] as s8: 32 bytes, sign-extended with
`vpmovsxbw`; or s16: 64 bytes): one tile is one sequential stream, which the hardware
prefetcher follows. x's planes are written per part into a stack scratch (one dword per k pair
and plane), broadcast per pair against the tile's C weight vectors.

Parts (threads): ranges of output columns on multiples of TILE_COLS (GRAIN); each part splits x
itself (K work against its K·N_part/32 instructions).
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir

from opmlc.backend.kernels._ir import I32, I64, c32, c64, entry_alloca, load, loop
from opmlc.backend.kernels.native._vec import V16
from opmlc.backend.kernels.native.matmul_fma import magnitude_bits
from opmlc.backend.kernels.native.qmatmul_vnni import has_vnni

I8 = ir.IntType(8)
I16 = ir.IntType(16)
V16I64 = ir.VectorType(I64, 16)
LANES16 = 16  # output columns of one weight vector
C = 4  # weight vectors (blocks of 16 columns) per tile: C·(x planes)·(weight planes) ≤ 16 accumulators
TILE_COLS = C * LANES16
GRAIN = TILE_COLS  # part boundaries: whole tiles
HEADER = 64  # bytes before the tiles
MIN_COLS = LANES16  # fewer output columns: the i64 kernel (a tile's padding would be most of the work)
MIN_FLUSH = 4  # fewer pairs between widenings: the other kernels
MAX_K = 1 << 18  # longer rows: x's planes would take more than 1 MiB of stack

ENABLED: bool | None = None  # None: when the host has VNNI; tests set False for the other kernels
ONLY = False  # tests: no other kernel behind this one (a run it refuses leaves the output unwritten)


def available() -> bool:
    return has_vnni() if ENABLED is None else ENABLED


# ---------------------------------------------------------------- weights (numpy, not per run)

def _split(w: np.ndarray, s: int) -> tuple[np.ndarray, np.ndarray]:
    h = (w + (1 << (s - 1))) >> s
    return w - (h << s), h


def weight_planes(w2: np.ndarray) -> tuple[int, int] | None:
    """(split s, 0 for one plane; the high plane's bytes 0, 1 or 2) of a weight w2 [N, K], or
    None when it has no planes (module docstring)."""
    if w2.size == 0 or w2.shape[0] < MIN_COLS or w2.shape[1] > MAX_K:
        return None
    w = w2.astype(np.int64)
    lo, hi = int(w.min()), int(w.max())
    if lo >= -(1 << 15) and hi < 1 << 15:
        return 0, 0
    for width, limit in ((1, 1 << 7), (2, 1 << 15)):
        for s in range(1, 17):
            # h is monotonic in w: its extremes are those of w's extremes
            h_lo, h_hi = (lo + (1 << (s - 1))) >> s, (hi + (1 << (s - 1))) >> s
            if h_lo >= -limit and h_hi < limit:
                return s, width
    return None


def weight_facts(w2: np.ndarray) -> dict:
    """{"derived": True, "matvec": high plane bytes} when the weight has planes, else {}."""
    planes = weight_planes(w2)
    return {} if planes is None else {"derived": True, "matvec": planes[1]}


def derive(facts: dict, w2: np.ndarray) -> np.ndarray:
    """The header and the tiles of w2 [N, K] (module docstring) as uint8, 64-byte aligned; a
    weight whose high plane's width differs from the facts' is refused."""
    n, k = w2.shape
    got = weight_planes(w2)
    if got is None or got[1] != facts["matvec"]:
        raise ValueError("matmul: the weight differs from the one the native module was generated for "
                         "(its matrix-vector planes do not match the compiled kernel); regenerate the module")
    s, width = got
    w = w2.astype(np.int64)
    lo, hi = _split(w, s) if s else (w, np.zeros_like(w))
    nt, k2 = -(-n // TILE_COLS), -(-k // 2)

    def tiles(p: np.ndarray, dtype) -> np.ndarray:
        padded = np.zeros((nt * TILE_COLS, 2 * k2), dtype)
        padded[:n, :k] = p
        # [tile, block, column, pair, k] → [tile, pair, block, column, k]
        t = padded.reshape(nt, C, LANES16, k2, 2).transpose(0, 3, 1, 2, 4)
        return np.ascontiguousarray(t).view(np.uint8).reshape(nt, k2, -1)

    parts = [tiles(lo, np.int16)] + ([tiles(hi, {1: np.int8, 2: np.int16}[width])] if width else [])
    body = np.concatenate(parts, axis=2).ravel()
    raw = np.zeros(HEADER + body.size + 64, np.uint8)
    off = -raw.ctypes.data % 64
    buf = raw[off:off + HEADER + body.size]
    buf[:16].view(np.int32)[:] = [s, width, int(np.abs(lo).max(initial=0)), int(np.abs(hi).max(initial=0))]
    buf[HEADER:] = body
    return buf


# ---------------------------------------------------------------- kernel

def _splat(b: ir.IRBuilder, x: ir.Value, ty: ir.VectorType) -> ir.Value:
    v = b.insert_element(ir.Constant(ty, ir.Undefined), x, c32(0))
    return b.shuffle_vector(v, ir.Constant(ty, ir.Undefined), ir.Constant(ir.VectorType(I32, ty.count), [0] * ty.count))


def _umax(b: ir.IRBuilder, x: ir.Value, y: ir.Value) -> ir.Value:
    return b.select(b.icmp_unsigned(">", x, y), x, y)


def emit(b: ir.IRBuilder, a_arg: ir.Value, d_arg: ir.Value, k: int, n: int, facts: dict,
         lo: ir.Value, hi: ir.Value, finish, vfinish) -> ir.Block:
    """Outputs [lo, hi) of x [1, k] @ w[n, k]ᵀ from the derived buffer at d_arg; `finish(total_i64,
    0, 0, j)` stores one output, `vfinish(totals <16 x i64>, 0, j)` the outputs j..j+15. Leaves
    the builder in the block where a run goes when x is out of range (the caller emits its other
    kernels there and branches to the returned block, where this kernel ends too)."""
    width = facts["matvec"]
    wplanes = 2 if width else 1
    done = b.append_basic_block("mv.done")
    fallback = b.append_basic_block("mv.other")
    one_body = b.append_basic_block("mv.x1")
    two_check = b.append_basic_block("mv.x2check")
    two_body = b.append_basic_block("mv.x2")
    hdr = b.bitcast(d_arg, I32.as_pointer())
    sw = load(b, hdr, c32(0))
    wmax = [b.zext(load(b, hdr, c32(2 + q)), I64) for q in range(wplanes)]  # W_l, W_h
    ex = magnitude_bits(b, a_arg, c32(0), c32(k))
    big = c64((1 << 31) - 1)

    def flush(xmax: ir.Value) -> tuple[list[ir.Value], ir.Value]:
        """F_q (i64) of each weight plane for the largest x plane bound, and their least."""
        fs = [b.udiv(big, b.mul(b.shl(xmax, c64(1)), b.select(b.icmp_unsigned("<", w, c64(1)), c64(1), w)))
              for w in wmax]
        least = fs[0] if len(fs) == 1 else b.select(b.icmp_unsigned("<", fs[0], fs[1]), fs[0], fs[1])
        return fs, least

    f1, least1 = flush(b.shl(c64(1), b.zext(ex, I64)))
    ok1 = b.and_(b.icmp_unsigned("<=", ex, c32(15)), b.icmp_unsigned(">=", least1, c64(MIN_FLUSH)))
    b.cbranch(ok1, one_body, two_check)
    b.position_at_end(two_check)
    t = b.udiv(b.add(ex, c32(2)), c32(2))  # ceil((e_x + 1) / 2)
    t = b.select(b.icmp_unsigned("<", t, c32(1)), c32(1), t)
    xl = b.shl(c64(1), b.zext(b.sub(t, c32(1)), I64))
    eh = b.select(b.icmp_unsigned(">", ex, t), b.sub(ex, t), c32(0))
    f2, least2 = flush(_umax(b, xl, b.shl(c64(1), b.zext(eh, I64))))
    ok2 = b.and_(b.icmp_unsigned("<=", ex, c32(30)), b.icmp_unsigned(">=", least2, c64(MIN_FLUSH)))
    b.cbranch(ok2, two_body, fallback)

    k2 = -(-k // 2)
    xs = entry_alloca(b, ir.ArrayType(I32, 2 * k2), name="mv.xs")
    xs.align = 64
    sums = entry_alloca(b, V16I64, name="mv.sums")
    sums.align = 64
    for block, xplanes, fs, least, split in ((one_body, 1, f1, least1, c32(0)), (two_body, 2, f2, least2, t)):
        b.position_at_end(block)
        _body(b, a_arg, d_arg, k, k2, n, width, wplanes, xplanes, fs, least, split, sw, lo, hi, xs, sums, finish, vfinish)
        b.branch(done)
    b.position_at_end(fallback)
    return done


def _body(b: ir.IRBuilder, a_arg, d_arg, k: int, k2: int, n: int, width: int, wplanes: int, xplanes: int,
          fs: list[ir.Value], least: ir.Value, t: ir.Value, sw: ir.Value, lo, hi, xs, sums, finish, vfinish) -> None:
    products = [(p, q) for p in range(xplanes) for q in range(wplanes)]
    dp_type = ir.FunctionType(V16, [V16, V16, V16])

    def dp(acc: ir.Value, w: ir.Value, x: ir.Value) -> ir.Value:
        # inline, not the intrinsic: LLVM's machine combiner would split most of these into
        # vpmaddwd + vpaddd (two uops on the same two ports: half the throughput)
        return b.asm(dp_type, "vpdpwssd $3, $2, $0", "=v,0,v,v", [acc, w, x], False)
    accs = [entry_alloca(b, V16, name=f"mv.acc{i}") for i in range(C * len(products))]
    wides = [entry_alloca(b, V16I64, name=f"mv.wide{i}") for i in range(C * len(products))]
    xs0 = b.bitcast(xs, I32.as_pointer())

    # x → planes of k pairs (dword: low half the even element, high half the odd one)
    half = b.select(b.icmp_unsigned("==", t, c32(0)), c32(0), b.shl(c32(1), b.sub(t, c32(1))))
    with loop(b, c32(k2), "mvx") as kk:
        e0 = b.mul(kk, c32(2))
        v0 = load(b, a_arg, e0)
        if k % 2:
            inside = b.icmp_unsigned("<", b.add(e0, c32(1)), c32(k))
            v1 = b.select(inside, load(b, a_arg, b.select(inside, b.add(e0, c32(1)), e0)), c32(0))
        else:
            v1 = load(b, a_arg, b.add(e0, c32(1)))
        for p, (x0, x1) in enumerate(zip(*(_planes(b, v, t, half, xplanes) for v in (v0, v1)), strict=True)):
            word = b.or_(b.and_(x0, c32(0xFFFF)), b.shl(x1, c32(16)))
            b.store(word, b.gep(xs0, [b.add(b.mul(c32(p), c32(k2)), kk)], source_etype=I32))

    stride = C * 64 + (C * 32 * width)  # bytes per (tile, pair)
    chunk = b.trunc(b.select(b.icmp_unsigned(">", least, c64(k2)), c64(k2), least), I32)
    # a plane whose F_q covers the whole reduction is widened once, at the tile's end
    widen = [b.icmp_unsigned("<", f, c64(k2)) for f in fs]

    def to_wide(q: int | None) -> None:
        """The lanes of the products with weight plane q (all for None) into i64; they restart at 0."""
        for i, (_p, pq) in enumerate(products):
            if q is None or pq == q:
                for c in range(C):
                    a, w = accs[c * len(products) + i], wides[c * len(products) + i]
                    b.store(b.add(b.load(w, typ=V16I64), b.sext(b.load(a, typ=V16), V16I64)), w)
                    b.store(ir.Constant(V16, None), a)

    n_chunks = b.udiv(b.add(c32(k2), b.sub(chunk, c32(1))), chunk)
    tiles_at = b.gep(d_arg, [c32(64)], source_etype=I8)
    t64, s64 = b.zext(t, I64), b.zext(sw, I64)
    tlo = b.udiv(lo, c32(TILE_COLS))
    thi = b.udiv(b.add(hi, c32(TILE_COLS - 1)), c32(TILE_COLS))
    with loop(b, b.sub(thi, tlo), "mvt") as u:
        tile = b.add(tlo, u)
        for w in wides:
            b.store(ir.Constant(V16I64, None), w)
        for a in accs:
            b.store(ir.Constant(V16, None), a)
        tile_at = b.gep(tiles_at, [b.mul(b.zext(tile, I64), c64(k2 * stride))], source_etype=I8)
        with loop(b, n_chunks, "mvc") as ci:
            k0 = b.mul(ci, chunk)
            steps = b.select(b.icmp_unsigned(">", b.add(k0, chunk), c32(k2)), b.sub(c32(k2), k0), chunk)
            w0 = b.gep(tile_at, [b.mul(b.zext(k0, I64), c64(stride))], source_etype=I8)
            x0 = b.gep(xs0, [k0], source_etype=I32)
            with loop(b, steps, "mvk") as kk:
                kk64 = b.zext(kk, I64)
                at = b.gep(w0, [b.mul(kk64, c64(stride))], source_etype=I8)
                wv = {}
                for c in range(C):
                    wv[c, 0] = b.load(b.bitcast(b.gep(at, [c64(64 * c)], source_etype=I8), V16.as_pointer()),
                                      typ=V16, align=64)
                    if width == 1:
                        v8 = ir.VectorType(I8, 32)
                        raw = b.load(b.bitcast(b.gep(at, [c64(64 * C + 32 * c)], source_etype=I8), v8.as_pointer()),
                                     typ=v8, align=32)
                        wv[c, 1] = b.bitcast(b.sext(raw, ir.VectorType(I16, 32)), V16)
                    elif width == 2:
                        wv[c, 1] = b.load(b.bitcast(b.gep(at, [c64(64 * C + 64 * c)], source_etype=I8),
                                                    V16.as_pointer()), typ=V16, align=64)
                xv = [_splat(b, b.load(b.gep(x0, [b.add(kk, c32(p * k2))], source_etype=I32), typ=I32), V16)
                      for p in range(xplanes)]
                for i, (p, q) in enumerate(products):
                    for c in range(C):
                        acc = accs[c * len(products) + i]
                        b.store(dp(b.load(acc, typ=V16), wv[c, q], xv[p]), acc)
            for q, flag in enumerate(widen):  # the chunk's lanes into i64 (module docstring)
                yes, after = b.append_basic_block("mv.widen"), b.append_basic_block("mv.widened")
                b.cbranch(flag, yes, after)
                b.position_at_end(yes)
                to_wide(q)
                b.branch(after)
                b.position_at_end(after)
        to_wide(None)
        for c in range(C):
            total = None
            for i, (p, q) in enumerate(products):
                v = b.load(wides[c * len(products) + i], typ=V16I64)
                shift = None
                if p:
                    shift = t64
                if q:
                    shift = s64 if shift is None else b.add(shift, s64)
                if shift is not None:
                    v = b.shl(v, _splat(b, shift, V16I64))
                total = v if total is None else b.add(total, v)
            jc = b.add(b.mul(tile, c32(TILE_COLS)), c32(c * LANES16))
            whole, part_, after = (b.append_basic_block(f"mv.{x}") for x in ("whole", "part", "after"))
            b.cbranch(b.icmp_unsigned("<=", b.add(jc, c32(LANES16)), hi), whole, part_)
            b.position_at_end(whole)
            vfinish(total, c32(0), jc)
            b.branch(after)
            b.position_at_end(part_)  # the node's last columns: one by one
            b.store(total, sums, align=64)
            rest = b.sub(hi, jc)
            rest = b.select(b.icmp_signed("<", rest, c32(0)), c32(0), rest)
            s_ptr = b.bitcast(sums, I64.as_pointer())
            with loop(b, rest, "mvf") as j:
                finish(b.load(b.gep(s_ptr, [j], source_etype=I64), typ=I64), c32(0), c32(0), b.add(jc, j))
            b.branch(after)
            b.position_at_end(after)


def _planes(b: ir.IRBuilder, v: ir.Value, t: ir.Value, half: ir.Value, count: int) -> list[ir.Value]:
    """x itself, or its planes (l, h) at split t (module docstring)."""
    if count == 1:
        return [v]
    h = b.ashr(b.add(v, half), t)
    return [b.sub(v, b.shl(h, t)), h]


__all__ = ["GRAIN", "available", "derive", "emit", "weight_facts"]
