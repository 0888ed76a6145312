"""The s16-plane path of the attention's activation × activation products (kernels/native/
matmul_act.py's nodes: [.., M, K] × [.., K, N], both operands activations) on AVX-512 VNNI
(`vpdpwssd`: two s16 × s16 products added to each i32 lane, 32 multiply-adds an instruction
against 8 for matmul_act's `vpmuldq` + `vpaddq`). matmul_act.py calls `emit_part` for each part
(a range of batch matrices) when `takes` and `available`; the part's i64 tiles are the fallback
when no scheme below is exact for the run's operands.

Planes (matmul_vnni16.py's split, here for both operands at one split point s, 8 ≤ s ≤ 15):
v = h·2^s + l with h = (v + 2^(s−1)) >> s (arithmetic) and l ∈ [−2^(s−1), 2^(s−1)), σ = l + h.
With M_a = max |a| over the part's matrices (|INT32_MIN| = 2^31 counted; matmul_vnni16's
`_max_abs`), a's planes are bounded by X_l = 2^(s−1) and X_h = (M_a + 2^(s−1)) >> s
(matmul_vnni16's docstring: h lies in [−X_h, X_h]); the same for b (Y_l, Y_h), and
|σ| ≤ X_l + X_h (σ ∈ [−X_l − X_h, X_l − 1 + X_h]).

Schemes, with P_pq = Σ_k a_p[i, k]·b_q[k, j] over the whole reduction:
- B (Karatsuba, 3 products): Σ a·b = P_ll + 2^s·(P_σσ − P_ll − P_hh) + 2^(2s)·P_hh.
- C (4 products): Σ a·b = P_ll + 2^s·(P_lh + P_hl) + 2^(2s)·P_hh.
The recombination is in wrap-around i64, the op's ring (its sums wrap as the interpreter's
uint64 matmul): exact whenever each term is the true integer it names.

Bound (i32 lanes, the ring argument). `vpdpwssd` (not the saturating `vpdpwssds`) adds to an
i32 lane modulo 2^32: each product of two s16 is exact (≤ 2^30 in magnitude) and the lane is a
sum in Z/2^32, so after the whole reduction it holds P_pq mod 2^32 whatever its intermediate
values were. When the true |P_pq| ≤ 2^31 − 1, sext(lane) is P_pq exactly: no chunks, no
carries, the outputs are finished from the accumulators. With |a_p| ≤ X_p and |b_q| ≤ Y_q,
|P_pq| ≤ K·X_p·Y_q, so a scheme is exact when, with LIM = 2^31 − 1:
- C: X_h, Y_h ≤ 2^15 − 1 (l fits s16 for s ≤ 16) and K·X_p·Y_q ≤ LIM for its four products;
- B: X_l + X_h ≤ 2^15 and Y_l + Y_h ≤ 2^15 (σ fits s16), K·X_l·Y_l ≤ LIM, K·X_h·Y_h ≤ LIM, and
  for the cross term K·(X_h·Y_l + X_l·Y_h) ≤ LIM: then P_σσ − P_ll − P_hh, formed in i32
  modulo 2^32 from the three lanes, is the true cross sum Σ (a_h·b_l + a_l·b_h) (its magnitude
  within LIM), while P_σσ itself may wrap.
The run tries s = S_MIN..S_MAX (8..15, unrolled, scalar i64) and takes B at the smallest s where
it is exact, else C likewise, else the i64 tiles (exact for every int32 operand). The checks'
products do not wrap: s ≥ 8 gives X_h, Y_h ≤ 2^23 + 1, and K ≤ 2^16 (`takes`), so each is
below 2^63.

Measured operands (the interpreter, four inputs; fx 24): tiny_gpt2's Q, K within ±1.1·10^8
(27 bits), P in [0, 2^24], V within ±8·10^7; B is exact at s = 14 for Q·Kᵀ (K = 16) and at
s = 13 for P·V (K = 32). tiny_llama's second Q·Kᵀ (±1.8·10^8, 28 bits) fails B's cross bound
and takes C; its other three take B.

Layout per batch matrix (stack scratch, a part's matrices one after another): a's planes
[plane][row][k] as i16, so a k pair of a row is one dword (K even, `takes`): the split is a
flat pass over a's elements, 16 at a time. b's planes [plane][k pair][column] as dwords
(b_p[2kp, j] in the low half, b_p[2kp + 1, j] in the high half: little-endian, `vpdpwssd`'s
order), N a multiple of 16. A tile of R rows × V vectors of 16 columns keeps R·V·products ≤ 24
i32 accumulators in registers; per k pair it loads V·planes vectors of b and broadcasts each
row's plane dwords. Finish (`_total`), 16 outputs at once: an i32 vector seen as <8 x i64>
holds the even outputs' sums in its lanes' low halves and the odd ones' in the high halves;
sext(term)·2^(0, s or 2s) is one `vpmuldq` (2^(2s) ≤ 2^30 is an i32 multiplier: s ≤ 15) after
an arithmetic shift by 32 for the odd lanes, so each half's total is formed without extracts
or widenings; then the rounding shift and saturate32 per half, and one shuffle puts the 16
outputs back in order (with a sign-extending widening and a narrowing `vpmovsqd`
per 8 lanes instead, port-5 µops, tiny_gpt2's Q·Kᵀ took 3.5 µs in context against 2.9).
saturate32's count: the clamped lanes are added up in an <8 x i64> counter (one add a vector)
and summed into the node's counter once a part (a mask-to-GPR move and a popcount per vector
instead cost the four products 11.6 against 10.5 µs in context).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from llvmlite import ir

from opmlc.backend.kernels._ir import (
    I32,
    I64,
    c32,
    c64,
    counter_slot,
    counting,
    entry_alloca,
    load,
    loop,
)
from opmlc.backend.kernels.native._vec import V16, VI32, VI64, tile_grid
from opmlc.backend.kernels.native.matmul_vnni16 import _fn, _max_abs, _splat
from opmlc.backend.kernels.native.qmatmul_vnni import has_vnni
from opmlc.ir import fixedpoint as fp

I16 = ir.IntType(16)
LANES16 = 16  # i32 lanes of one `vpdpwssd`: output columns of a vector
ACCS = 24  # i32 accumulators a tile keeps in registers (of 32 zmm: the rest hold b and a broadcast)
SCRATCH = 96 << 10  # bytes of stack for one matrix's planes of both operands
S_MAX = 15  # 2^(2s) fits the i32 multiplier of `vpmuldq` (s = 16 leaves B and C no room: K·2^30 > LIM)
S_MIN = 8  # the smallest split tried (with s = 8, X_h ≤ 2^15 − 1 holds up to M ≈ 2^23)
LIM = (1 << 31) - 1

ENABLED: bool | None = None  # None: when the host has VNNI; tests set False for the i64 tiles alone
ONLY = False  # tests: no i64 tiles behind the schemes (a part they refuse is left unwritten)
FORCE: str | None = None  # tests: only the scheme of this name ("none": the i64 tiles)


@dataclass(frozen=True)
class Scheme:
    name: str
    planes: int  # of each operand: l, h (and σ)
    products: tuple[tuple[int, int], ...]  # (a plane, b plane)


B = Scheme("B", 3, ((0, 0), (1, 1), (2, 2)))
C = Scheme("C", 2, ((0, 0), (0, 1), (1, 0), (1, 1)))


def available() -> bool:
    return has_vnni() if ENABLED is None else ENABLED


def takes(m: int, k: int, n: int) -> bool:
    """Whether the planes' layout fits the shape: K even (k pairs within a row), N a multiple of
    16, K ≤ 2^16 (the bounds' products) and one matrix's planes within SCRATCH."""
    return k % 2 == 0 and 0 < k <= 1 << 16 and n % LANES16 == 0 and 3 * (m * k + k * n) * 2 + 64 <= SCRATCH


def _schemes() -> list[Scheme]:
    return [sc for sc in (B, C) if FORCE is None or sc.name == FORCE]


def _le(b: ir.IRBuilder, v: ir.Value, limit: int) -> ir.Value:
    return b.icmp_unsigned("<=", v, c64(limit))


def _exact(b: ir.IRBuilder, sc: Scheme, k: int, s: int, ma: ir.Value, mb: ir.Value) -> ir.Value:
    """Whether scheme sc at split s is exact for |a| ≤ ma and |b| ≤ mb (module docstring)."""
    xl = 1 << (s - 1)
    xh = b.lshr(b.add(ma, c64(xl)), c64(s))
    yh = b.lshr(b.add(mb, c64(xl)), c64(s))
    kk = c64(k)
    if sc is C:
        ok = b.and_(_le(b, xh, (1 << 15) - 1), _le(b, yh, (1 << 15) - 1))
        terms = [b.mul(kk, b.mul(c64(xl), c64(xl))), b.mul(kk, b.mul(c64(xl), yh)),
                 b.mul(kk, b.mul(xh, c64(xl))), b.mul(kk, b.mul(xh, yh))]
    else:
        ok = b.and_(_le(b, xh, (1 << 15) - xl), _le(b, yh, (1 << 15) - xl))
        terms = [b.mul(kk, c64(xl * xl)), b.mul(kk, b.mul(xh, yh)),
                 b.mul(kk, b.mul(c64(xl), b.add(xh, yh)))]
    for t in terms:
        ok = b.and_(ok, _le(b, t, LIM))
    return ok


def emit_part(b: ir.IRBuilder, out: ir.Value, a_arg: ir.Value, b_arg: ir.Value, m: int, k: int, n: int,
              shift: int, lo: ir.Value, hi: ir.Value, fallback: Callable[[], None]) -> None:
    """Batch matrices [lo, hi) of out = a @ b (rounded by `shift`, saturated and counted): by the
    first exact scheme for the part's operands, else by `fallback()` (matmul_act's i64 tiles)."""
    count = b.sub(hi, lo)
    ma = _max_abs(b, b.gep(a_arg, [b.mul(lo, c32(m * k))], source_etype=I32), b.mul(count, c32(m * k)))
    mb = _max_abs(b, b.gep(b_arg, [b.mul(lo, c32(k * n))], source_etype=I32), b.mul(count, c32(k * n)))
    chosen = []  # (scheme, exact i1, s i32): the smallest exact split of each
    for sc in _schemes():
        split = c32(0)
        for s in range(S_MAX, S_MIN - 1, -1):
            split = b.select(_exact(b, sc, k, s, ma, mb), c32(s), split)
        chosen.append((sc, b.icmp_unsigned("!=", split, c32(0)), split))
    scratch = entry_alloca(b, ir.ArrayType(I32, SCRATCH // 4), name="act16.planes")
    scratch.align = 64
    done = b.append_basic_block("act16.done")
    for sc, ok, s in chosen:
        body, nxt = b.append_basic_block(f"act16.{sc.name}"), b.append_basic_block("act16.next")
        b.cbranch(ok, body, nxt)
        b.position_at_end(body)
        _body(b, sc, out, a_arg, b_arg, m, k, n, shift, lo, hi, s, scratch)
        b.branch(done)
        b.position_at_end(nxt)
    if not ONLY:
        fallback()
    b.branch(done)
    b.position_at_end(done)


def _planes(b: ir.IRBuilder, v: ir.Value, sv: ir.Value, half: ir.Value, count: int) -> list[ir.Value]:
    """l, h, σ of v (an i32 vector) at the split sv (splat), half = 2^(s−1) (splat)."""
    h = b.ashr(b.add(v, half), sv)
    lo = b.sub(v, b.shl(h, sv))
    return [lo, h, b.add(lo, h)][:count]


def _total(b: ir.IRBuilder, terms: list[ir.Value], scales: list[ir.Value], odd: bool) -> ir.Value:
    """Σ sext(term)·scale (<8 x i64>) over the even (or odd) i32 lanes of the products' sums (each
    term an i32 vector seen as <8 x i64>; scale 2^0, 2^s or 2^(2s) < 2^31): the sign extension
    and the product are one `vpmuldq` for the even lanes (the low half of each i64 lane), an
    arithmetic shift and one more for the odd ones; no extracts, widenings or narrowing shuffles
    (port 5). Exact in wrap-around i64, the op's ring."""
    total = None
    thirty_two = ir.Constant(VI64, [32] * (LANES16 // 2))
    for x, scale in zip(terms, scales, strict=True):
        x = b.ashr(x, thirty_two) if odd else b.ashr(b.shl(x, thirty_two), thirty_two)
        x = b.mul(x, scale)
        total = x if total is None else b.add(total, x)
    return total


def _body(b: ir.IRBuilder, sc: Scheme, out, a_arg, b_arg, m: int, k: int, n: int, shift: int, lo, hi,
          s: ir.Value, scratch) -> None:
    k2 = k // 2
    np_ = len(sc.products)
    v16i16 = ir.VectorType(I16, LANES16)
    sv, half = _splat(b, s, V16), _splat(b, b.shl(c32(1), b.sub(s, c32(1))), V16)
    p1 = b.shl(c32(1), s)  # the terms' scales, sign-extended i32s (what `vpmuldq` multiplies by)
    scales = [b.sext(_splat(b, v, VI32), VI64) for v in ((c32(1), p1, b.mul(p1, p1)) if sc is B
                                                          else (c32(1), p1, p1, b.mul(p1, p1)))]
    dp = _fn(b, "llvm.x86.avx512.vpdpwssd.512", V16, [V16, V16, V16])
    base = b.bitcast(scratch, I32.as_pointer())
    a_pl = [b.gep(base, [c32(p * (m * k2))], source_etype=I32) for p in range(sc.planes)]  # [row][pair]
    a_pl16 = [b.bitcast(p, I16.as_pointer()) for p in a_pl]  # the same, [row][k] as i16
    b_at = -(-sc.planes * m * k2 // LANES16) * LANES16  # b's planes on a 64-byte boundary
    b_pl = [b.gep(base, [c32(b_at + p * (k2 * n))], source_etype=I32) for p in range(sc.planes)]  # [pair][col]
    vecs_n = n // LANES16
    vmax = min(2, vecs_n)
    rmax = max(1, min(ACCS // (vmax * np_), m))
    accs = [entry_alloca(b, V16, name=f"act16.{sc.name}{t}") for t in range(rmax * vmax * np_)]
    slot = counter_slot(b) if counting(b) else None
    counted = None  # saturate32's count per lane (one add a vector), into the node's counter once a part
    if slot is not None:
        counted = entry_alloca(b, VI64, name="act16.count")
        b.store(ir.Constant(VI64, None), counted)
    mask16 = ir.Constant(V16, [0xFFFF] * LANES16)

    def c64v(v: int) -> ir.Constant:
        return ir.Constant(VI64, [v] * (LANES16 // 2))

    def vec(p: ir.Value, index: ir.Value) -> ir.Value:
        """The <16 x i32> at p[index] (i32 elements)."""
        return b.bitcast(b.gep(p, [index], source_etype=I32), V16.as_pointer())

    def tile(rows: int, vecs: int, o_base: ir.Value, i0: ir.Value, jv0: ir.Value) -> None:
        for t in range(rows * vecs * np_):
            b.store(ir.Constant(V16, None), accs[t])
        j0 = b.mul(jv0, c32(LANES16))
        with loop(b, k2, "ak") as kp:
            wrow = b.add(b.mul(kp, c32(n)), j0)
            wv = {(q, v): b.load(vec(b_pl[q], b.add(wrow, c32(LANES16 * v))), typ=V16, align=64)
                  for q in range(sc.planes) for v in range(vecs)}
            for r in range(rows):
                at = b.add(b.mul(b.add(i0, c32(r)), c32(k2)), kp)
                xv = [_splat(b, load(b, a_pl[p], at), V16) for p in range(sc.planes)]
                for t, (p, q) in enumerate(sc.products):
                    for v in range(vecs):
                        acc = accs[(r * vecs + v) * np_ + t]
                        b.store(b.call(dp, [b.load(acc, typ=V16), xv[p], wv[q, v]]), acc)
        for r in range(rows):
            for v in range(vecs):
                sums = [b.load(accs[(r * vecs + v) * np_ + t], typ=V16) for t in range(np_)]
                if sc is B:  # the cross sum in i32 modulo 2^32: exact by the bound (docstring)
                    ll, hh, ss = sums
                    terms = [ll, b.sub(ss, b.add(ll, hh)), hh]
                else:
                    ll, lh, hl, hh = sums
                    terms = [ll, lh, hl, hh]
                halves = [_total(b, [b.bitcast(x, VI64) for x in terms], scales, odd) for odd in (False, True)]
                finished = []
                for total in halves:
                    wide = b.ashr(b.add(total, c64v(1 << (shift - 1))), c64v(shift)) if shift else total
                    o = b.select(b.icmp_signed(">", wide, c64v(fp.INT32_MAX)), c64v(fp.INT32_MAX), wide)
                    o = b.select(b.icmp_signed("<", o, c64v(fp.INT32_MIN)), c64v(fp.INT32_MIN), o)
                    finished.append(o)
                    if counted is not None:  # the lanes the clamp changed
                        changed = b.zext(b.icmp_signed("!=", o, wide), VI64)
                        b.store(b.add(b.load(counted, typ=VI64), changed), counted)
                # even outputs in the low halves, odd ones in the high halves: the 16 outputs in order
                merged = b.or_(b.and_(finished[0], c64v(0xFFFFFFFF)), b.shl(finished[1], c64v(32)))
                at = b.add(o_base, b.add(b.mul(b.add(i0, c32(r)), c32(n)), b.add(j0, c32(LANES16 * v))))
                b.store(b.bitcast(merged, V16), vec(out, at), align=4)

    with loop(b, b.sub(hi, lo), "am") as t:
        bi = b.add(lo, t)
        a_base, b_base, o_base = (b.mul(bi, c32(size)) for size in (m * k, k * n, m * n))
        full = (m * k) // LANES16  # a's planes: a flat pass (a row's k pairs are consecutive elements)
        with loop(b, full, "asa") as e:
            at = b.mul(e, c32(LANES16))
            v = b.load(vec(a_arg, b.add(a_base, at)), typ=V16, align=4)
            for p, pv in enumerate(_planes(b, v, sv, half, sc.planes)):
                dst = b.bitcast(b.gep(a_pl16[p], [at], source_etype=I16), v16i16.as_pointer())
                b.store(b.trunc(pv, v16i16), dst, align=2)
        with loop(b, (m * k) % LANES16, "ast") as e:  # the tail, one element at a time
            at = b.add(c32(full * LANES16), e)
            one = b.insert_element(ir.Constant(V16, None), load(b, a_arg, b.add(a_base, at)), c32(0))
            for p, pv in enumerate(_planes(b, one, sv, half, sc.planes)):
                b.store(b.trunc(b.extract_element(pv, c32(0)), I16), b.gep(a_pl16[p], [at], source_etype=I16))
        with loop(b, k2, "asb") as kp:  # b's planes: rows 2kp and 2kp + 1 into one dword a column
            row0 = b.add(b_base, b.mul(kp, c32(2 * n)))
            for jv in range(vecs_n):
                pl0, pl1 = (_planes(b, b.load(vec(b_arg, b.add(row0, c32(e * n + LANES16 * jv))), typ=V16, align=4),
                                    sv, half, sc.planes) for e in (0, 1))
                for p in range(sc.planes):
                    word = b.or_(b.and_(pl0[p], mask16), b.shl(pl1[p], ir.Constant(V16, [16] * LANES16)))
                    b.store(word, vec(b_pl[p], b.add(b.mul(kp, c32(n)), c32(LANES16 * jv))), align=64)
        tile_grid(b, m, vecs_n, rmax, vmax, lambda rows, vecs, i0, jv0: tile(rows, vecs, o_base, i0, jv0))
    if counted is not None:
        total = b.call(_fn(b, "llvm.vector.reduce.add.v8i64", I64, [VI64]), [b.load(counted, typ=VI64)])
        b.store(b.add(b.load(slot, typ=I32), b.trunc(total, I32)), slot)


__all__ = ["ACCS", "B", "C", "available", "emit_part", "takes"]
