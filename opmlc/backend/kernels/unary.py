"""Kernel of opmlc/ir/ops/unary.py: one flat loop, the scalar formula of the node's kind."""

from __future__ import annotations

from llvmlite import ir

from opmlc.backend.kernels import kernel
from opmlc.backend.kernels._fx import I32, div_round_q32, exp_fx, isqrt64, ld, smax, smin, st, to_fx
from opmlc.backend.kernels._ir import (
    I1,
    I64,
    c64,
    call_helper,
    exp_nonpositive_q30,
    internal_function,
    mul32,
    out_loop,
    saturate32,
    shr_round,
    shr_round_var,
)
from opmlc.ir import fixedpoint as fp
from opmlc.ir.ops import unary as unary_op
from opmlc.ir.types import DType, TensorType


def floor_q(b: ir.IRBuilder, x: ir.Value, f: int) -> ir.Value:
    return b.ashr(x, c64(f)) if f else x


def fx_scalar(b: ir.IRBuilder, kind: str, x: ir.Value, f: int, fo: int) -> ir.Value:
    neg = b.icmp_signed("<", x, c64(0))
    ax = b.select(neg, b.sub(c64(0), x), x)
    if kind == "neg":
        return to_fx(b, b.sub(c64(0), x), f, fo)
    if kind == "abs":
        return to_fx(b, ax, f, fo)
    if kind == "sign":
        s = b.sub(b.zext(b.icmp_signed(">", x, c64(0)), I64), b.zext(neg, I64))
        return to_fx(b, s, 0, fo)
    if kind == "floor":
        return to_fx(b, floor_q(b, x, f), 0, fo)
    if kind == "ceil":
        return to_fx(b, b.sub(c64(0), floor_q(b, b.sub(c64(0), x), f)), 0, fo)
    if kind == "round":
        q = floor_q(b, x, f)
        if f:
            rem = b.sub(x, b.shl(q, c64(f)))
            half = c64(1 << (f - 1))
            odd = b.icmp_signed("!=", b.and_(q, c64(1)), c64(0))
            up = b.or_(b.icmp_signed(">", rem, half), b.and_(b.icmp_signed("==", rem, half), odd))
            q = b.add(q, b.zext(up, I64))
        return to_fx(b, q, 0, fo)
    one = c64(fp.ONE_Q30)
    # sigmoid and tanh divide n ≤ 2^(30 + fo) by 2^30 + e ≥ 2^30 (0 ≤ e ≤ 2^30): within
    # div_round_q32's wide_divisor bound (n < 2^62, d ≥ 2^12) since fo ≤ MAX_FRAC = 30
    wide = fo <= 31
    if kind == "sigmoid":
        e = b.call(exp_nonpositive_q30(b.module), [b.sub(c64(0), ax), c64(f)])
        num = b.select(neg, b.shl(e, c64(fo)), c64(1 << (30 + fo)))  # only the one selected
        return saturate32(b, b.call(div_round_q32(b.module, wide), [num, b.add(one, e), c64(0)]))
    if kind == "tanh":
        e = b.call(exp_nonpositive_q30(b.module), [b.sub(c64(0), b.shl(ax, c64(1))), c64(f)])
        mag = b.call(div_round_q32(b.module, wide), [b.shl(b.sub(one, e), c64(fo)), b.add(one, e), c64(0)])
        return saturate32(b, b.select(neg, b.sub(c64(0), mag), mag))
    if kind == "exp":
        return call_helper(b, exp_fx(b.module), [x, c64(f), c64(fo)])
    if kind == "erf":
        return call_helper(b, erf_fx(b.module), [x, c64(f), c64(fo)])
    if kind == "log":
        return call_helper(b, log_fx(b.module), [x, c64(f), c64(fo)])
    if kind == "sqrt":
        n = smax(b, x, c64(0))
        m = 2 * fo - f
        n = b.shl(n, c64(m)) if m else n
        r = b.call(isqrt64(b.module), [n])
        up = b.icmp_signed(">", b.sub(n, b.mul(r, r)), r)
        return saturate32(b, b.add(r, b.zext(up, I64)))
    raise AssertionError(kind)


def erf_fx(module: ir.Module) -> ir.Function:
    """unary erf (ops/unary.py erf_fx) as an internal function `i32 (i64 x, i64 f, i64 fo)`."""
    fn, b = internal_function(module, "opmlc.erf_fx", I32, [I64, I64, I64], counts=True)
    if b is None:
        return fn
    x, f, fo = fn.args[:3]
    neg = b.icmp_signed("<", x, c64(0))
    ax = b.select(neg, b.sub(c64(0), x), x)
    down = shr_round_var(b, ax, b.sub(f, c64(unary_op.ERF_FRAC)), 62)
    up = b.shl(ax, smax(b, b.sub(c64(unary_op.ERF_FRAC), f), c64(0)))
    a = b.select(b.icmp_signed(">=", f, c64(unary_op.ERF_FRAC)), down, up)
    a = smin(b, a, c64(unary_op.ERF_CLAMP))
    px = shr_round(b, b.mul(a, c64(unary_op.ERF_P_Q30)), unary_op.ERF_FRAC)
    # 2^60 / (2^30 + px), px ≥ 0 (a ≥ 0, ERF_P_Q30 > 0): div_round_q32's wide_divisor bound
    t = b.call(div_round_q32(b.module, True), [c64(1 << 60), b.add(c64(fp.ONE_Q30), px), c64(0)])
    # t ≤ 2^30, |p| < 1.5·2^30 at every Horner step (tests/kernels/test_mips_cost.py
    # sweeps it), a ≤ 6·2^26, e ≤ 2^30: every product here is a 32 × 32-bit one (mul32)
    p = c64(unary_op.ERF_A_Q30[-1])
    for c in unary_op.ERF_A_Q30[-2::-1]:
        p = b.add(shr_round(b, mul32(b, p, t), fp.Q30), c64(c))
    p = shr_round(b, mul32(b, p, t), fp.Q30)
    d = b.sub(c64(0), shr_round(b, mul32(b, a, a), unary_op.ERF_FRAC))
    e = b.call(exp_nonpositive_q30(b.module), [d, c64(unary_op.ERF_FRAC)])
    m = b.sub(c64(fp.ONE_Q30), shr_round(b, mul32(b, p, e), fp.Q30))
    y = shr_round_var(b, m, b.sub(c64(fp.Q30), fo), 62)
    b.ret(saturate32(b, b.select(neg, b.sub(c64(0), y), y)))
    return fn


def log_fx(module: ir.Module) -> ir.Function:
    """unary log (ops/unary.py log_fx) as an internal function `i32 (i64 x, i64 f, i64 fo)`."""
    fn, b = internal_function(module, "opmlc.log_fx", I32, [I64, I64, I64], counts=True)
    if b is None:
        return fn
    x, f, fo = fn.args[:3]
    pos = b.icmp_signed(">", x, c64(0))
    q = b.select(pos, x, c64(1))
    k = b.sub(c64(63), b.ctlz(q, ir.Constant(I1, 0)))  # bitlen − 1, in 0..30 for q < 2^31
    m = b.shl(q, b.sub(c64(30), k))
    big = b.icmp_signed(">=", m, c64(unary_op.SQRT2_Q30))
    k = b.add(k, b.zext(big, I64))
    # s = round_div((v2 − 2^31)·2^30, v2 + 2^31) with v2 = m (big) or 2m, by div_round_q32:
    # big: v2 < 2^31, so s ≤ 0 and d = m + 2^31 < 2^32: minus the magnitude's quotient,
    # rounded half down; otherwise numerator and divisor are even: halved, d = m + 2^30 < 2^32
    mag = b.select(big, b.sub(c64(1 << 31), m), b.sub(m, c64(1 << 30)))
    den = b.add(m, b.select(big, c64(1 << 31), c64(1 << 30)))
    # n = mag·2^30 < 2^61, den ≥ 2^31: div_round_q32's wide_divisor bound
    q = b.call(div_round_q32(b.module, True), [b.shl(mag, c64(30)), den, b.zext(big, I64)])
    s = b.select(big, b.sub(c64(0), q), q)
    z = shr_round(b, b.mul(s, s), fp.Q30)
    p = c64(unary_op.LOG_SERIES_Q30[-1])
    for c in unary_op.LOG_SERIES_Q30[-2::-1]:
        p = b.add(shr_round(b, b.mul(p, z), fp.Q30), c64(c))
    y = b.add(b.mul(b.sub(k, f), c64(unary_op.LN2_Q30)), shr_round(b, b.mul(p, s), fp.Q30))
    r = saturate32(b, b.select(pos, shr_round_var(b, y, b.sub(c64(fp.Q30), fo), 62), c64(0)))
    b.ret(b.select(pos, r, ir.Constant(I32, fp.INT32_MIN)))
    return fn


@kernel("unary")
def emit(b: ir.IRBuilder, out: ir.Value, args: list[ir.Value], types: list[TensorType], attrs: dict,
         out_type: TensorType) -> None:
    kind = attrs["kind"]
    dt = types[0].dtype
    with out_loop(b, out_type.numel) as i:
        x = ld(b, args[0], i, dt)
        if dt is DType.BOOL:
            r = b.icmp_signed("==", x, c64(0))
        elif dt is DType.FX32:
            r = fx_scalar(b, kind, x, types[0].frac, out_type.frac)
        else:
            neg = b.sub(c64(0), x)
            r = {"neg": lambda: neg,
                 "abs": lambda: b.select(b.icmp_signed("<", x, c64(0)), neg, x),
                 "sign": lambda: b.sub(b.zext(b.icmp_signed(">", x, c64(0)), I64),
                                       b.zext(b.icmp_signed("<", x, c64(0)), I64)),
                 "bitnot": lambda: b.xor(x, c64(-1))}[kind]()
        st(b, r, out, i, out_type.dtype)
