"""Rules for the ops built on the natural logarithm, lowered onto the IR's `unary` log and exp
with `binary`, `reduce` and `pool`: Log, LogSoftmax, ReduceLogSum, ReduceLogSumExp, Softplus,
Mish, LRN, and Pow with a run-time or non-half-integer exponent (x^y = exp(y·ln x)).

Internal values get the bits their range allows rather than the default: exp of a value ≤ 0 lies
in [0, 1] (30 bits), a sum of n such values in [0, n], a logarithm of anything an int32 holds in
[−21.5, 21.5] (26 bits). The error of each composition is the sum of its steps' stated bounds
(opmlc/ir/ops/unary.py); docs/CONFORMANCE.md states them per op.
"""

from __future__ import annotations

import math
from math import prod

import onnx

from opmlc.frontend.context import LoweringContext
from opmlc.frontend.rules import rule
from opmlc.frontend.rules.arith import binary, const, frac, operands, tmp
from opmlc.frontend.rules.reduce import reduce_axes
from opmlc.frontend.rules.shape import reshape_to
from opmlc.ir.types import DType

LOG_FRAC = 26  # |ln x| ≤ 21.5 for any int32 x with ≤ 31 fractional bits
UNIT_FRAC = 30  # values in [0, 1]


def _fo(ctx: LoweringContext, out: str, fo: int | None) -> int:
    return frac(ctx, out) if fo is None else fo


def un(ctx: LoweringContext, kind: str, x: str, out: str, fo: int | None = None) -> str:
    """out = kind(x) as fx32 (fo: the output's bits; None: the policy's for `out`)."""
    fo = _fo(ctx, out, fo)
    if kind == "log":
        fo = min(fo, 30)
    ctx.bind(out, ctx.emit("unary", [ctx.fx(x)], {"kind": kind, "frac": fo}, out))
    return out


def bin_(ctx: LoweringContext, kind: str, a: str, b: str, out: str, fo: int | None = None) -> str:
    """out = a kind b as fx32, with broadcasting."""
    ra, rb, _ = operands(ctx, a, b)
    if ctx.builder.type_of(ra).dtype is not DType.FX32:
        ra, rb = ctx.fx(a), ctx.fx(b)
    fo = _fo(ctx, out, fo)
    if kind == "div":
        fo = min(fo, ctx.frac_of(ra) - ctx.frac_of(rb) + 31)
    ctx.bind(out, ctx.emit("binary", [ra, rb], {"kind": kind, "frac": fo}, out))
    return out


def red(ctx: LoweringContext, kind: str, x: str, axes: list[int], out: str, fo: int) -> str:
    ctx.bind(out, ctx.emit("reduce", [ctx.fx(x)], {"kind": kind, "axes": axes, "keepdims": 1, "frac": fo}, out))
    return out


def sum_frac(n: int, f: int) -> int:
    """Bits for a sum of n values each below 2^(31 − f) in magnitude: it cannot saturate."""
    return max(0, min(30, f - (n - 1).bit_length()))


def log_sum_exp(ctx: LoweringContext, node: onnx.NodeProto, x: str, axes: list[int]) -> tuple[str, str]:
    """(d, l) with d = x − max(x) over `axes` and l = ln Σ exp(d) (keepdims): the stable
    decomposition shared by LogSoftmax (d − l) and ReduceLogSumExp (max + l)."""
    f = ctx.frac_of(ctx.fx(x))
    n = prod(ctx.shape_of(x)[a] for a in axes)
    m = red(ctx, "max", x, axes, tmp(node, "max"), f)
    d = bin_(ctx, "sub", x, m, tmp(node, "d"), f)
    e = un(ctx, "exp", d, tmp(node, "exp"), UNIT_FRAC)
    s = red(ctx, "sum", e, axes, tmp(node, "sum"), sum_frac(n, UNIT_FRAC + 1))
    return d, un(ctx, "log", s, tmp(node, "log"), LOG_FRAC)


@rule("Log")
def log(ctx: LoweringContext, node: onnx.NodeProto) -> None:
    un(ctx, "log", node.input[0], node.output[0])


@rule("LogSoftmax")
def log_softmax(ctx: LoweringContext, node: onnx.NodeProto) -> None:
    x, out = node.input[0], node.output[0]
    shape = ctx.shape_of(x)
    rank = len(shape)
    axis = ctx.attrs().get("axis", -1 if ctx.opset >= 13 else 1)
    axis = axis + rank if axis < 0 else axis
    if ctx.opset < 13 and axis != rank - 1:  # before opset 13: over all axes from `axis` on
        flat = tmp(node, "flat")
        reshape_to(ctx, x, (prod(shape[:axis]), prod(shape[axis:])), flat)
        d, lg = log_sum_exp(ctx, node, flat, [1])
        bin_(ctx, "sub", d, lg, tmp(node, "flat_out"), frac(ctx, out))
        reshape_to(ctx, tmp(node, "flat_out"), tuple(shape), out)
        return
    d, lg = log_sum_exp(ctx, node, x, [axis])
    bin_(ctx, "sub", d, lg, out)


def _reduce_out(ctx: LoweringContext, node: onnx.NodeProto, keep: str, keepdims: bool, axes: list[int]) -> None:
    out = node.output[0]
    if keepdims:
        ctx.bind(out, ctx.sym(keep))
        return
    shape = ctx.shape_of(keep)
    reshape_to(ctx, keep, tuple(d for k, d in enumerate(shape) if k not in axes), out)


@rule("ReduceLogSumExp")
def reduce_log_sum_exp(ctx: LoweringContext, node: onnx.NodeProto) -> None:
    x, out = node.input[0], node.output[0]
    axes, keepdims = reduce_axes(ctx, node)
    if axes is None:  # no reduction: log(exp(x)) = x
        reshape_to(ctx, x, tuple(ctx.shape_of(x)), out)
        return
    _, lg = log_sum_exp(ctx, node, x, axes)
    keep = out if keepdims else tmp(node, "keep")
    bin_(ctx, "add", tmp(node, "max"), lg, keep, frac(ctx, out))
    _reduce_out(ctx, node, keep, keepdims, axes)


@rule("ReduceLogSum")
def reduce_log_sum(ctx: LoweringContext, node: onnx.NodeProto) -> None:
    x, out = node.input[0], node.output[0]
    axes, keepdims = reduce_axes(ctx, node)
    if axes is None:
        un(ctx, "log", x, out)
        return
    n = prod(ctx.shape_of(x)[a] for a in axes)
    s = red(ctx, "sum", x, axes, tmp(node, "sum"), sum_frac(n, ctx.frac_of(ctx.fx(x))))
    keep = out if keepdims else tmp(node, "keep")
    un(ctx, "log", s, keep, frac(ctx, out))
    _reduce_out(ctx, node, keep, keepdims, axes)


def softplus(ctx: LoweringContext, node: onnx.NodeProto, x: str, out: str, fo: int | None = None) -> str:
    """ln(1 + e^x) = max(x, 0) + ln(1 + e^−|x|): the exp never overflows."""
    f = ctx.frac_of(ctx.fx(x))
    un(ctx, "abs", x, tmp(node, "abs"), f)
    un(ctx, "neg", tmp(node, "abs"), tmp(node, "nabs"), f)
    un(ctx, "exp", tmp(node, "nabs"), tmp(node, "exp"), UNIT_FRAC)
    bin_(ctx, "add", tmp(node, "exp"), const(ctx, tmp(node, "one"), 1.0), tmp(node, "onep"), UNIT_FRAC - 1)
    un(ctx, "log", tmp(node, "onep"), tmp(node, "log"), UNIT_FRAC)
    ctx.bind(tmp(node, "relu"), ctx.emit("relu", [ctx.fx(x)], {}, tmp(node, "relu")))
    return bin_(ctx, "add", tmp(node, "relu"), tmp(node, "log"), out, fo)


@rule("Softplus")
def softplus_rule(ctx: LoweringContext, node: onnx.NodeProto) -> None:
    softplus(ctx, node, node.input[0], node.output[0])


@rule("Mish")
def mish(ctx: LoweringContext, node: onnx.NodeProto) -> None:
    x = node.input[0]
    sp = softplus(ctx, node, x, tmp(node, "softplus"), ctx.frac_of(ctx.fx(x)))
    un(ctx, "tanh", sp, tmp(node, "tanh"), UNIT_FRAC)
    bin_(ctx, "mul", x, tmp(node, "tanh"), node.output[0])


def pow_exp_log(ctx: LoweringContext, node: onnx.NodeProto) -> None:
    """x^y = exp(y · ln|x|), negated where x < 0 and y is odd (y is then taken as an integer:
    ONNX gives NaN for a negative base and a non-integer exponent, which fixed point cannot
    represent). 0^y gives 0 for y > 0 (ln 0 saturates to the most negative value)."""
    x, y, out = node.input[0], node.input[1], node.output[0]
    if ctx.dtype(x) is not DType.FX32:
        raise ctx.unsupported("Pow of an integer tensor by a run-time exponent")
    f = ctx.frac_of(ctx.fx(x))
    un(ctx, "abs", x, tmp(node, "abs"), f)
    un(ctx, "log", tmp(node, "abs"), tmp(node, "ln"), LOG_FRAC)
    bin_(ctx, "mul", y, tmp(node, "ln"), tmp(node, "yln"), LOG_FRAC)
    mag = tmp(node, "mag")
    un(ctx, "exp", tmp(node, "yln"), mag, frac(ctx, out))
    # the sign: negative where x < 0 and y is an odd integer
    yi = ctx.value(y)
    if ctx.builder.type_of(yi).dtype is not DType.I64:
        yi = ctx.emit("cast", [yi], {"to": "i64", "frac": 0}, tmp(node, "yint"))
    ctx.bind(tmp(node, "yint"), yi)
    binary(ctx, "mod", tmp(node, "yint"), const(ctx, tmp(node, "two"), 2, tmp(node, "yint")), tmp(node, "odd"))
    binary(ctx, "eq", tmp(node, "odd"), const(ctx, tmp(node, "onei"), 1, tmp(node, "yint")), tmp(node, "isodd"))
    binary(ctx, "lt", x, const(ctx, tmp(node, "zero"), 0.0), tmp(node, "xneg"))
    binary(ctx, "and", tmp(node, "xneg"), tmp(node, "isodd"), tmp(node, "flip"))
    fo = frac(ctx, out)
    un(ctx, "neg", mag, tmp(node, "negmag"), fo)
    ctx.bind(out, ctx.emit("where", [ctx.value(tmp(node, "flip")), ctx.fx(tmp(node, "negmag")), ctx.fx(mag)],
                           {"frac": fo}, out))


@rule("LRN")
def lrn(ctx: LoweringContext, node: onnx.NodeProto) -> None:
    """y = x · (bias + α/size · Σ x²)^−β, the sum over `size` neighbouring channels (zero
    beyond the edges): the squares are average-pooled over the channel axis (a window of
    `size` counting the padding, so the mean is Σ/size), then the power is exp(−β·ln s)."""
    a = ctx.attrs()
    alpha, beta, bias, size = a.get("alpha", 1e-4), a.get("beta", 0.75), a.get("bias", 1.0), a["size"]
    x, out = node.input[0], node.output[0]
    shape = ctx.shape_of(x)
    if len(shape) < 3:
        raise ctx.unsupported(f"LRN of a rank-{len(shape)} tensor (expected [N, C, D1, …])")
    n, c = shape[0], shape[1]
    f = ctx.frac_of(ctx.fx(x))
    g = max(0, min(30, 2 * f - 31))  # |x| < 2^(31 − f): x² < 2^(62 − 2f) fits with 2f − 31 bits
    bin_(ctx, "mul", x, x, tmp(node, "sq"), g)
    rest = prod(shape[2:])
    reshape_to(ctx, tmp(node, "sq"), (n, 1, c, rest), tmp(node, "sq4"))
    lo = (size - 1) // 2
    hi = size - 1 - lo
    attrs = {"kind": "avg", "kernel": [size, 1], "strides": [1, 1], "dilations": [1, 1], "pads": [lo, 0, hi, 0],
             "ceil_mode": 0, "count_include_pad": 1}
    ctx.bind(tmp(node, "mean"), ctx.emit("pool", [ctx.fx(tmp(node, "sq4"))], attrs, tmp(node, "mean")))
    reshape_to(ctx, tmp(node, "mean"), tuple(shape), tmp(node, "mean_x"))
    # α·mean < α·2^(31 − g) and s = bias + α·mean: as many bits as their largest values allow
    am_max = alpha * 2.0 ** (31 - g)
    bits = [max(0, min(30, math.floor(30 - math.log2(v)))) for v in (am_max, abs(bias) + am_max)]
    bin_(ctx, "mul", tmp(node, "mean_x"), const(ctx, tmp(node, "alpha"), alpha), tmp(node, "am"), bits[0])
    bin_(ctx, "add", tmp(node, "am"), const(ctx, tmp(node, "bias"), bias), tmp(node, "s"), bits[1])
    un(ctx, "log", tmp(node, "s"), tmp(node, "ln"), LOG_FRAC)
    bin_(ctx, "mul", tmp(node, "ln"), const(ctx, tmp(node, "nbeta"), -beta), tmp(node, "bln"), LOG_FRAC)
    top = abs(bias) ** -beta if bias > 0 and beta > 0 else 2.0 ** 10  # the largest s^−β
    un(ctx, "exp", tmp(node, "bln"), tmp(node, "scale"), max(0, min(30, math.floor(30 - math.log2(top)))))
    bin_(ctx, "mul", x, tmp(node, "scale"), out)
