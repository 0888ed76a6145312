"""LLVM twins of the fixed-point helpers behind the CNN / conformance ops (fixedpoint.to_fx,
round_div, isqrt64, exp_fx, …) and typed loads/stores that widen every element to i64.
`div_round_q32` is round_div without i64 division, for divisors below 2^32 (docs/DESIGN.md
"MIPS cost"): the per-element divisions of the nonlinear kernels use it.

Same determinism rules as _ir.py: no nsw/nuw/exact, shift amounts provably in range, every
division guarded (divisor > 0 or checked for 0 and INT_MIN / −1 by the caller).
"""

from __future__ import annotations

from llvmlite import ir

from opmlc.backend.kernels._host import floor_divmod_host, floor_divmod_recip, host, is_host_module
from opmlc.backend.kernels._ir import (
    ELEM,
    I1,
    I8,
    I32,
    I64,
    c32,
    c64,
    count,
    counting,
    entry_alloca,
    exp2_frac_q30,
    internal_function,
    load,
    loop,
    out_of_int32,
    saturate32,
    shr_round,
    shr_round_var,
    store,
    uncounted,
)
from opmlc.ir import fixedpoint as fp
from opmlc.ir.types import DType


def ld(b: ir.IRBuilder, ptr: ir.Value, idx: ir.Value, dt: DType) -> ir.Value:
    """Element idx of a tensor of dtype dt, widened to i64 (bool zero-extended)."""
    v = load(b, ptr, idx, ELEM[dt])
    if dt is DType.I64:
        return v
    return b.zext(v, I64) if dt is DType.BOOL else b.sext(v, I64)


def st(b: ir.IRBuilder, v: ir.Value, ptr: ir.Value, idx: ir.Value, dt: DType) -> None:
    """Store an i64 (or i1 for bool) as an element of dtype dt (truncating: ints wrap)."""
    ty = ELEM[dt]
    if v.type == I1:
        v = b.zext(v, ty)
    elif v.type != ty:
        v = b.trunc(v, ty)
    store(b, v, ptr, idx)


def smax(b: ir.IRBuilder, x: ir.Value, y: ir.Value) -> ir.Value:
    return b.select(b.icmp_signed(">", x, y), x, y)


def smin(b: ir.IRBuilder, x: ir.Value, y: ir.Value) -> ir.Value:
    return b.select(b.icmp_signed("<", x, y), x, y)


def to_fx(b: ir.IRBuilder, x: ir.Value, from_frac: int, to_frac: int) -> ir.Value:
    """fixedpoint.to_fx: i64 → i32, rescaled (round half up or exact shift), saturated (counted)."""
    return saturate32(b, _to_fx_wide(b, x, from_frac, to_frac))


def _to_fx_wide(b: ir.IRBuilder, x: ir.Value, from_frac: int, to_frac: int) -> ir.Value:
    if to_frac >= from_frac:
        s = to_frac - from_frac
        x = smin(b, smax(b, x, c64(-(1 << 32))), c64(1 << 32))
        return b.shl(x, c64(s)) if s else x
    return shr_round(b, x, from_frac - to_frac)


def to_fx_flagged(b: ir.IRBuilder, x: ir.Value, from_frac: int, to_frac: int) -> tuple[ir.Value, ir.Value | None]:
    """fixedpoint.to_fx_flagged: to_fx uncounted, and (when counting) the i1 "it saturated"."""
    wide = _to_fx_wide(b, x, from_frac, to_frac)
    with uncounted(b):
        v = saturate32(b, wide)
    return v, (out_of_int32(b, wide) if counting(b) else None)


def round_div(b: ir.IRBuilder, n: ir.Value, d: ir.Value, in_fast_range: bool = False,
              recip: ir.Value | None = None) -> ir.Value:
    """fixedpoint.round_div for i64 n and d > 0 (the caller guarantees it). `in_fast_range`:
    the caller proved the host FPU path's bound (kernels/_host.py); `recip` (with it): d's
    double reciprocal, computed once by the caller (`_host.reciprocal`). Both ignored on MIPS."""
    if host(b) and recip is not None:  # a multiply instead of a division (kernels/_host.py)
        assert in_fast_range
        q, r = floor_divmod_recip(b, n, d, recip)
        return b.add(q, b.zext(b.icmp_signed(">=", r, b.sub(d, r)), I64))
    if host(b):  # the native build divides through the FPU, exactly (kernels/_host.py)
        q, r = floor_divmod_host(b, n, d, in_fast_range=in_fast_range)
        return b.add(q, b.zext(b.icmp_signed(">=", r, b.sub(d, r)), I64))
    q = b.sdiv(n, d)
    r = b.srem(n, d)
    neg = b.icmp_signed("<", r, c64(0))
    q = b.sub(q, b.zext(neg, I64))
    r = b.add(r, b.select(neg, d, c64(0)))
    return b.add(q, b.zext(b.icmp_signed(">=", r, b.sub(d, r)), I64))


def _udiv_digit(b: ir.IRBuilder, top: ir.Value, low: ir.Value, v: ir.Value, vn1: ir.Value,
                vn0: ir.Value) -> tuple[ir.Value, ir.Value]:
    """One base-2^16 digit of a long division by the normalised divisor v = vn1·2^16 + vn0
    (v ≥ 2^31): the digit of (top·2^16 + low) / v for top < v, low < 2^16, and the new partial
    remainder. The estimate top / vn1 (one i32 division) is at most 2 too large (Knuth's
    theorem B); each correction step tests the next digit exactly while rhat < 2^16."""
    base = c32(1 << 16)
    q = b.udiv(top, vn1)  # vn1 ≥ 2^15: never zero
    rhat = b.sub(top, b.mul(q, vn1))

    def too_big(q: ir.Value, rhat: ir.Value) -> ir.Value:
        # q ≥ 2^16 first: when it holds, q·vn0 may wrap, but the or makes that irrelevant
        return b.or_(b.icmp_unsigned(">=", q, base),
                     b.icmp_unsigned(">", b.mul(q, vn0), b.add(b.shl(rhat, c32(16)), low)))

    fix = too_big(q, rhat)
    q = b.sub(q, b.zext(fix, I32))
    rhat = b.add(rhat, b.select(fix, vn1, c32(0)))
    fix = b.and_(b.icmp_unsigned("<", rhat, base), too_big(q, rhat))
    q = b.sub(q, b.zext(fix, I32))
    rem = b.sub(b.add(b.shl(top, c32(16)), low), b.mul(q, v))  # exact mod 2^32, and < v
    return q, rem


def div_round_q32(module: ir.Module, wide_divisor: bool = False) -> ir.Function:
    """fixedpoint.round_div(n, d) for i64 0 ≤ n < 2^63 and 1 ≤ d < 2^32, without i64
    division: `i64 (i64 n, i64 d, i64 down)`. Exact when floor(n / d) < 2^32; otherwise it
    returns 2^32 (any value above INT32_MAX: the callers saturate it, counting it, as they
    would the exact quotient).

    `wide_divisor`: the caller guarantees n < 2^62 and d ≥ 2^12 (the nonlinear kernels: d ≥
    2^30), so that in the host module the FPU's quotient needs no fallback (kernels/_host.py,
    `in_fast_range`: n < 2^62 ≤ 2^50 · d): a function of its own there; the MIPS module's is the
    same function either way.

    A two-digit long division in base 2^16 (Knuth's algorithm D) of n·2^s by d·2^s, where
    s = clz(d) normalises the divisor to [2^31, 2^32): two i32 divisions (MIPS `divu`, one
    instruction where __divdi3 is a software loop) and i32 multiplies. The remainder rounds
    half up as round_div does: +1 when 2r ≥ d; with down = 1, half down: +1 only when 2r > d,
    which is −round_div(−n, d) (a negative quotient rounded on its magnitude).
    """
    wide_host = wide_divisor and is_host_module(module)
    fn, b = internal_function(module, "opmlc.div_round_q32" + ".wide" * wide_host, I64, [I64, I64, I64])
    if b is None:
        return fn
    n, d, down = fn.args
    if host(b):  # the native build: the FPU's exact floor division (kernels/_host.py), vectorisable
        q, r = floor_divmod_host(b, n, d, in_fast_range=wide_host)
        half = b.sub(d, r)
        up = b.select(b.icmp_unsigned("==", down, c64(0)), b.icmp_signed(">=", r, half), b.icmp_signed(">", r, half))
        b.ret(b.select(b.icmp_signed(">=", q, c64(1 << 32)), c64(1 << 32), b.add(q, b.zext(up, I64))))
        return fn
    u1 = b.trunc(b.lshr(n, c64(32)), I32)
    u0 = b.trunc(n, I32)
    d32 = b.trunc(d, I32)
    big = b.icmp_unsigned(">=", u1, d32)  # the quotient has more than 32 bits
    u1 = b.select(big, c32(0), u1)
    s = b.ctlz(d32, ir.Constant(I1, 1))  # d ≥ 1: s in 0..31
    v = b.shl(d32, s)
    # u0 >> (32 − s) written as two shifts so that s = 0 never shifts by 32
    un32 = b.or_(b.shl(u1, s), b.lshr(b.lshr(u0, c32(1)), b.sub(c32(31), s)))
    un10 = b.shl(u0, s)
    vn1 = b.lshr(v, c32(16))
    vn0 = b.and_(v, c32(0xFFFF))
    q1, rem = _udiv_digit(b, un32, b.lshr(un10, c32(16)), v, vn1, vn0)
    q0, rem = _udiv_digit(b, rem, b.and_(un10, c32(0xFFFF)), v, vn1, vn0)
    q = b.or_(b.shl(b.zext(q1, I64), c64(16)), b.zext(q0, I64))
    # 2r ≥ d (or > d), both scaled by 2^s: rem > v − rem − 1 + down, where v − rem ≥ 1
    up = b.icmp_unsigned(">", rem, b.add(b.sub(b.sub(v, rem), c32(1)), b.trunc(down, I32)))
    b.ret(b.select(big, c64(1 << 32), b.add(q, b.zext(up, I64))))
    return fn


def positive(b: ir.IRBuilder, d: ir.Value) -> ir.Value:
    """d if d > 0, else 1: a divisor that can never trap."""
    return b.select(b.icmp_signed(">", d, c64(0)), d, c64(1))


def isqrt64(module: ir.Module) -> ir.Function:
    """fixedpoint.isqrt64 as an internal function `i64 (i64 n)`, n ≥ 0: natively 32 fixed steps
    (the bit-by-bit method of the definition), on MIPS `_isqrt64_karatsuba` (n < 2^63)."""
    fn, b = internal_function(module, "opmlc.isqrt64", I64, [I64])
    if b is None:
        return fn
    if not host(b):  # MIPS: ≈ 100 steps instead of ≈ 1,000 (the loop's i64 steps)
        b.ret(_isqrt64_karatsuba(b, fn.args[0]))
        return fn
    n_slot, res_slot, bit_slot = (entry_alloca(b, I64, name=x) for x in ("n", "res", "bit"))
    b.store(fn.args[0], n_slot)
    b.store(c64(0), res_slot)
    b.store(c64(1 << 62), bit_slot)
    with loop(b, 32, "sq"):
        n, res, bit = (b.load(s, typ=I64) for s in (n_slot, res_slot, bit_slot))
        cand = b.add(res, bit)
        take = b.icmp_unsigned(">=", n, cand)
        b.store(b.select(take, b.sub(n, cand), n), n_slot)
        half = b.lshr(res, c64(1))
        b.store(b.select(take, b.add(half, bit), half), res_slot)
        b.store(b.lshr(bit, c64(2)), bit_slot)
    b.ret(b.load(res_slot, typ=I64))
    return fn


def _isqrt64_karatsuba(b: ir.IRBuilder, n: ir.Value) -> ir.Value:
    """floor(sqrt(n)) for 0 ≤ n < 2^63 with 32-bit divisions only (MIPS `divu`), exactly.

    n is normalised to N = n · 4^e ∈ [2^62, 2^64) (e = clz(n) // 2), so that floor(sqrt(N)) >> e
    is floor(sqrt(n)). N's top 32 bits nh ∈ [2^30, 2^32) get their root s1 by four integer
    Newton steps from 2^16 (relative error 1 → 1/4 → 1/40 → 3·10^-4 → 5·10^-8: every integer
    iterate stays ≥ floor(sqrt(nh)) and ends at most one above it) and one correction. Then one
    step of Zimmermann's Karatsuba square root in base 2^16 (N = nh·2^32 + a1·2^16 + a0):
    q, u = divmod(rem·2^16 + a1, 2·s1) with rem = nh − s1², s = s1·2^16 + q,
    r = u·2^16 + a0 − q², and s − 1 if r < 0 (one correction suffices because nh ≥ 2^30).
    The division is done as divmod(num >> 1, s1), which keeps num < 2^33 in 32 bits."""
    zero = b.icmp_unsigned("==", n, c64(0))
    nn = b.select(zero, c64(1), n)
    e = b.lshr(b.ctlz(nn, ir.Constant(I1, 1)), c64(1))  # 0..31: n < 2^63
    big = b.shl(nn, b.shl(e, c64(1)))
    nh = b.trunc(b.lshr(big, c64(32)), I32)
    a1 = b.trunc(b.and_(b.lshr(big, c64(16)), c64(0xFFFF)), I32)
    a0 = b.zext(b.trunc(b.and_(big, c64(0xFFFF)), I32), I64)
    x = c32(1 << 16)
    for _ in range(4):  # x ≥ 2^15 after each step: never a zero divisor
        x = b.lshr(b.add(x, b.udiv(nh, x)), c32(1))
    # x is floor(sqrt(nh)) or one more; x² ≤ 2^32, so x² − 1 fits 32 bits unsigned
    s1 = b.sub(x, b.zext(b.icmp_unsigned(">=", b.sub(b.mul(x, x), c32(1)), nh), I32))
    rem = b.sub(nh, b.mul(s1, s1))  # 0 ≤ rem ≤ 2·s1 < 2^17
    half = b.add(b.shl(rem, c32(15)), b.lshr(a1, c32(1)))
    q = b.udiv(half, s1)  # s1 ≥ 2^15
    u = b.add(b.shl(b.sub(half, b.mul(q, s1)), c32(1)), b.and_(a1, c32(1)))
    q64 = b.zext(q, I64)
    s = b.add(b.shl(b.zext(s1, I64), c64(16)), q64)
    r = b.sub(b.add(b.shl(b.zext(u, I64), c64(16)), a0), b.mul(q64, q64))
    s = b.sub(s, b.zext(b.icmp_signed("<", r, c64(0)), I64))
    return b.select(zero, c64(0), b.lshr(s, e))


def exp_fx(module: ir.Module) -> ir.Function:
    """unary exp (ops/unary.py exp_fx) as an internal function `i32 (i64 x, i64 f, i64 fo)`."""
    fn, b = internal_function(module, "opmlc.exp_fx", I32, [I64, I64, I64], counts=True)
    if b is None:
        return fn
    x, f, fo = fn.args[:3]
    t = shr_round_var(b, b.mul(x, c64(fp.LOG2E_Q30)), f, fp.Q30)
    k = b.ashr(t, c64(fp.Q30))
    p = exp2_frac_q30(b, b.sub(t, b.shl(k, c64(fp.Q30))))
    sh = b.sub(b.add(k, fo), c64(fp.Q30))
    down = shr_round_var(b, p, b.sub(c64(0), sh), 32)
    big = b.icmp_signed(">", sh, c64(0))
    count(b, big)  # e^x ≥ 2^31 / 2^fo: INT32_MAX stands for a larger value
    b.ret(saturate32(b, b.select(big, c64(fp.INT32_MAX), down)))
    return fn


__all__ = ["I8", "I32", "c32", "count", "counting", "div_round_q32", "exp_fx", "isqrt64", "ld", "positive",
           "round_div", "smax", "smin", "st", "to_fx"]
