"""LLVM twins of the fixed-point helpers behind the CNN / conformance ops (fixedpoint.to_fx,
round_div, isqrt64, exp_fx, …) and typed loads/stores that widen every element to i64.

Same determinism rules as _ir.py: no nsw/nuw/exact, shift amounts provably in range, every
division guarded (divisor > 0 or checked for 0 and INT_MIN / −1 by the caller).
"""

from __future__ import annotations

from llvmlite import ir

from opmlc.backend.kernels._host import floor_divmod_host, host
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


def round_div(b: ir.IRBuilder, n: ir.Value, d: ir.Value) -> ir.Value:
    """fixedpoint.round_div for i64 n and d > 0 (the caller guarantees it)."""
    if host(b):  # the native build divides through the FPU, exactly (kernels/_host.py)
        q, r = floor_divmod_host(b, n, d)
        return b.add(q, b.zext(b.icmp_signed(">=", r, b.sub(d, r)), I64))
    q = b.sdiv(n, d)
    r = b.srem(n, d)
    neg = b.icmp_signed("<", r, c64(0))
    q = b.sub(q, b.zext(neg, I64))
    r = b.add(r, b.select(neg, d, c64(0)))
    return b.add(q, b.zext(b.icmp_signed(">=", r, b.sub(d, r)), I64))


def positive(b: ir.IRBuilder, d: ir.Value) -> ir.Value:
    """d if d > 0, else 1: a divisor that can never trap."""
    return b.select(b.icmp_signed(">", d, c64(0)), d, c64(1))


def isqrt64(module: ir.Module) -> ir.Function:
    """fixedpoint.isqrt64 as an internal function `i64 (i64 n)`, n ≥ 0: 32 fixed steps."""
    fn, b = internal_function(module, "opmlc.isqrt64", I64, [I64])
    if b is None:
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


__all__ = ["I8", "I32", "c32", "count", "counting", "exp_fx", "isqrt64", "ld", "positive", "round_div",
           "smax", "smin", "st", "to_fx"]
