"""Rules for convolutional networks: Conv (1-D/2-D/N-D, groups, strides, pads, dilations,
auto_pad) onto the IR's `conv` (`qconv` with a constant weight under `--weights`); MaxPool, AveragePool, GlobalAveragePool, GlobalMaxPool onto
`pool`; BatchNormalization (when frontend/fuse.py could not fold it into the Conv/Gemm before
it) onto mul/add with constant per-channel scale and shift, or, with run-time statistics, onto
sqrt/div/sub/mul/add."""

from __future__ import annotations

import numpy as np
import onnx

from opmlc.frontend.context import Const, LoweringContext
from opmlc.frontend.rules import rule
from opmlc.frontend.rules.arith import binary
from opmlc.frontend.rules.shape import reshape_to
from opmlc.ir.types import DType


def _str(v) -> str:
    return v.decode() if isinstance(v, bytes) else (v or "NOTSET")


def resolve_pads(ctx: LoweringContext, spatial, kernel, strides, dilations) -> list[int]:
    a = ctx.attrs()
    r = len(spatial)
    auto = _str(a.get("auto_pad", "NOTSET"))
    if auto in ("NOTSET",):
        return list(a.get("pads") or [0] * 2 * r)
    if auto == "VALID":
        return [0] * 2 * r
    begin, end = [], []
    for i in range(r):
        out = -(-spatial[i] // strides[i])
        total = max(0, (out - 1) * strides[i] + (kernel[i] - 1) * dilations[i] + 1 - spatial[i])
        small = total // 2
        begin.append(small if auto == "SAME_UPPER" else total - small)
        end.append(total - begin[-1])
    return begin + end


@rule("Conv")
def conv(ctx: LoweringContext, node: onnx.NodeProto) -> None:
    from opmlc.frontend.rules.quantized_weights import qdq_conv_weight

    a = ctx.attrs()
    x = ctx.fx(node.input[0])
    w_const = ctx.const(node.input[1])
    op, extra = "conv", {}
    qw = qdq_conv_weight(ctx, node.input[1])  # the model's own (QDQ) quantized weight, kept
    if qw is None and w_const is not None and w_const.ndim >= 3 and ctx.quantizes_weights():
        # --weights: one scale per output channel over its C/group · kernel reduction
        qw = ctx.qweight_ref(node.input[1], w_const.reshape(w_const.shape[0], -1), per_channel=True,
                             shape=w_const.shape)
    if qw is not None:
        op, extra, w_ops, w_frac = "qconv", {"block_size": qw.block_size}, qw.operands(), ctx.frac_of(qw.scale)
        wshape = ctx.builder.type_of(qw.q).shape
    else:
        w = ctx.fx(node.input[1])
        w_ops, w_frac, wshape = [w], ctx.frac_of(w), ctx.builder.type_of(w).shape
    xt = ctx.builder.type_of(x)
    r = len(xt.shape) - 2
    kernel = list(a.get("kernel_shape") or wshape[2:])
    strides = list(a.get("strides") or [1] * r)
    dilations = list(a.get("dilations") or [1] * r)
    pads = resolve_pads(ctx, xt.shape[2:], kernel, strides, dilations)
    inputs = [x, *w_ops]
    prod_frac = xt.frac + w_frac
    if len(node.input) > 2 and node.input[2]:
        b = ctx.fx(node.input[2])
        if ctx.frac_of(b) > prod_frac:
            b = ctx.emit("cast", [b], {"to": "fx32", "frac": prod_frac}, f"{node.input[2]}/bits")
        inputs.append(b)
    out = node.output[0]
    fo = min(ctx.policy.activation(out), prod_frac)
    attrs = {"strides": strides, "dilations": dilations, "pads": pads, "group": a.get("group", 1), "frac": fo, **extra}
    ctx.bind(out, ctx.emit(op, inputs, attrs, out))


@rule("MaxPool", "AveragePool")
def pool(ctx: LoweringContext, node: onnx.NodeProto) -> None:
    if len(node.output) > 1 and node.output[1]:
        raise ctx.unsupported("MaxPool's Indices output")
    a = ctx.attrs()
    integer = ctx.dtype(node.input[0])
    if integer is DType.FX32:
        integer = None
    elif node.op_type == "MaxPool" and integer is DType.I32:  # a quantized tensor: exact at 0 bits
        x = ctx.emit("cast", [ctx.value(node.input[0])], {"to": "fx32", "frac": 0}, f"{node.output[0]}/int")
    else:
        raise ctx.unsupported(f"{node.op_type} of an integer tensor")
    if integer is None:
        x = ctx.fx(node.input[0])
    spatial = ctx.builder.type_of(x).shape[2:]
    r = len(spatial)
    kernel = list(a["kernel_shape"])
    strides = list(a.get("strides") or [1] * r)
    dilations = list(a.get("dilations") or [1] * r)
    pads = resolve_pads(ctx, spatial, kernel, strides, dilations)
    attrs = {"kind": "max" if node.op_type == "MaxPool" else "avg", "kernel": kernel, "strides": strides,
             "dilations": dilations, "pads": pads, "ceil_mode": int(a.get("ceil_mode", 0)),
             "count_include_pad": int(a.get("count_include_pad", 0))}
    out = node.output[0]
    if integer is not None:
        pooled = ctx.emit("pool", [x], attrs, f"{out}/pooled")
        ctx.bind(out, ctx.emit("cast", [pooled], {"to": "i32"}, out))
        return
    ctx.bind(out, ctx.emit("pool", [x], attrs, out))


@rule("GlobalAveragePool", "GlobalMaxPool")
def global_pool(ctx: LoweringContext, node: onnx.NodeProto) -> None:
    x = ctx.fx(node.input[0])
    spatial = ctx.builder.type_of(x).shape[2:]
    r = len(spatial)
    attrs = {"kind": "avg" if node.op_type == "GlobalAveragePool" else "max", "kernel": list(spatial),
             "strides": [1] * r, "dilations": [1] * r, "pads": [0] * 2 * r, "ceil_mode": 0, "count_include_pad": 0}
    out = node.output[0]
    ctx.bind(out, ctx.emit("pool", [x], attrs, out))


@rule("BatchNormalization")
def batchnorm(ctx: LoweringContext, node: onnx.NodeProto) -> None:
    training = bool(ctx.attrs().get("training_mode", 0))
    if len([o for o in node.output if o]) > 1 and not training:
        raise ctx.unsupported("BatchNormalization's running statistics outside training mode")
    eps = ctx.attrs().get("epsilon", 1e-5)
    x, g, b, mean, var = node.input[:5]
    rank = len(ctx.shape_of(x))
    out = node.output[0]
    if training:
        mean, var = _batch_statistics(ctx, node, mean, var)
    c = ctx.shape_of(x)[1]
    per_channel = (c,) + (1,) * (rank - 2)
    params = [ctx.const(n) for n in (g, b, mean, var)]
    if all(p is not None for p in params):
        gamma, beta, mu, sigma2 = (np.asarray(p, np.float64) for p in params)
        scale = gamma / np.sqrt(sigma2 + eps)
        shift = beta - mu * scale
        ctx.bind(f"{out}/scale", Const(scale.reshape(per_channel).astype(np.float32)))
        ctx.bind(f"{out}/shift", Const(shift.reshape(per_channel).astype(np.float32)))
        binary(ctx, "mul", x, f"{out}/scale", f"{out}/scaled")
        ctx.bind(out, ctx.emit("binary", [ctx.fx(f"{out}/scaled"), ctx.fx(f"{out}/shift")],
                               {"kind": "add", "frac": ctx.policy.activation(out)}, out))
        return
    # Run-time statistics: each intermediate keeps the bits of what it is computed from (not
    # the default), so that sqrt and the division round at the inputs' precision.
    from opmlc.frontend.rules.logs import bin_, un

    ctx.bind(f"{out}/eps", Const(np.asarray(eps, np.float32)))
    fv = ctx.frac_of(ctx.fx(var))
    bin_(ctx, "add", var, f"{out}/eps", f"{out}/var_eps", fv)
    un(ctx, "sqrt", f"{out}/var_eps", f"{out}/std", max(-(-fv // 2), min(30, (fv + 31) // 2)))
    bin_(ctx, "div", g, f"{out}/std", f"{out}/scale1", 24)
    for name in ("scale1", "mean", "beta"):
        src = {"scale1": f"{out}/scale1", "mean": mean, "beta": b}[name]
        reshape_to(ctx, src, per_channel, f"{out}/{name}_c")
    bin_(ctx, "sub", x, f"{out}/mean_c", f"{out}/centered", min(ctx.frac_of(ctx.fx(x)), ctx.frac_of(ctx.fx(mean))))
    bin_(ctx, "mul", f"{out}/centered", f"{out}/scale1_c", f"{out}/scaled", ctx.policy.activation(out))
    ctx.bind(out, Ref_add(ctx, f"{out}/scaled", f"{out}/beta_c", out))


def _batch_statistics(ctx: LoweringContext, node: onnx.NodeProto, mean: str, var: str) -> tuple[str, str]:
    """Training mode: the batch's mean and (population) variance per channel, kept [C]; and
    the running statistics mean·momentum + batch·(1 − momentum) for the optional outputs."""
    from opmlc.frontend.rules.logs import bin_

    x, out = node.input[0], node.output[0]
    shape = ctx.shape_of(x)
    axes = [0, *range(2, len(shape))]
    f = ctx.frac_of(ctx.fx(x))
    bm, bv = f"{out}/batch_mean", f"{out}/batch_var"
    ctx.bind(f"{bm}_k", ctx.emit("reduce", [ctx.fx(x)], {"kind": "mean", "axes": axes, "keepdims": 1, "frac": f},
                                 f"{bm}_k"))
    bin_(ctx, "sub", x, f"{bm}_k", f"{out}/dev", f)
    g = max(0, min(30, 2 * f - 31))  # |dev| < 2^(31 − f): dev² fits with 2f − 31 bits
    bin_(ctx, "mul", f"{out}/dev", f"{out}/dev", f"{out}/dev2", g)
    ctx.bind(f"{bv}_k", ctx.emit("reduce", [ctx.fx(f"{out}/dev2")], {"kind": "mean", "axes": axes, "keepdims": 1,
                                                                    "frac": g}, f"{bv}_k"))
    c = shape[1]
    reshape_to(ctx, f"{bm}_k", (c,), bm)
    reshape_to(ctx, f"{bv}_k", (c,), bv)
    momentum = float(ctx.attrs().get("momentum", 0.9))
    for k, (running, batch) in enumerate(((mean, bm), (var, bv)), start=1):
        if len(node.output) <= k or not node.output[k]:
            continue
        dst = node.output[k]
        ctx.bind(f"{dst}/m", Const(np.asarray(momentum)))
        ctx.bind(f"{dst}/1-m", Const(np.asarray(1.0 - momentum)))
        fo = ctx.policy.activation(dst)
        bin_(ctx, "mul", running, f"{dst}/m", f"{dst}/old", fo)
        bin_(ctx, "mul", batch, f"{dst}/1-m", f"{dst}/new", fo)
        bin_(ctx, "add", f"{dst}/old", f"{dst}/new", dst, fo)
    return bm, bv


def Ref_add(ctx: LoweringContext, a: str, b: str, out: str):  # noqa: N802
    from opmlc.frontend.context import Ref

    return Ref(ctx.emit("binary", [ctx.fx(a), ctx.fx(b)], {"kind": "add", "frac": ctx.policy.activation(out)}, out))


@rule("LpPool")
def lp_pool(ctx: LoweringContext, node: onnx.NodeProto) -> None:
    """(Σ_window |x|^p)^(1/p), the padding counting as zeros: |x|^p (p = 1: abs, p = 2: x² at
    2f − 31 bits, which cannot saturate; else exp(p·ln|x|)), the window sums by a depthwise conv
    with a kernel of ones (exact int64 sums), then the root (sqrt, or exp(ln(s)/p))."""
    from opmlc.frontend.rules.logs import LOG_FRAC, bin_, un

    a = ctx.attrs()
    if a.get("ceil_mode", 0):
        raise ctx.unsupported("LpPool with ceil_mode")
    x, out = node.input[0], node.output[0]
    if ctx.dtype(x) is not DType.FX32:
        raise ctx.unsupported("LpPool of an integer tensor")
    shape = ctx.shape_of(x)
    spatial, c, r = shape[2:], shape[1], len(shape) - 2
    kernel = list(a["kernel_shape"])
    strides = list(a.get("strides") or [1] * r)
    dilations = list(a.get("dilations") or [1] * r)
    pads = resolve_pads(ctx, spatial, kernel, strides, dilations)
    p = float(a.get("p", 2))
    f = ctx.frac_of(ctx.fx(x))
    powered = f"{out}/pow"
    if p == 1:
        un(ctx, "abs", x, powered, f)
    elif p == 2:
        bin_(ctx, "mul", x, x, powered, max(0, min(30, 2 * f - 31)))
    else:
        un(ctx, "abs", x, f"{out}/abs", f)
        un(ctx, "log", f"{out}/abs", f"{out}/ln", LOG_FRAC)
        ctx.bind(f"{out}/p", Const(np.asarray(p)))
        bin_(ctx, "mul", f"{out}/ln", f"{out}/p", f"{out}/pln", LOG_FRAC)
        un(ctx, "exp", f"{out}/pln", powered, f)
    ctx.bind(f"{out}/ones", Const(np.ones((c, 1, *kernel), dtype=np.float32)))
    xp, w = ctx.fx(powered), ctx.fx(f"{out}/ones")
    n = int(np.prod(kernel))
    fs = max(0, min(ctx.frac_of(xp) + ctx.frac_of(w), ctx.frac_of(xp) - (n - 1).bit_length()))
    sums = f"{out}/sums"
    ctx.bind(sums, ctx.emit("conv", [xp, w], {"strides": strides, "dilations": dilations, "pads": pads,
                                              "group": c, "frac": fs}, sums))
    if p == 1:
        ctx.bind(out, ctx.sym(sums))
    elif p == 2:
        un(ctx, "sqrt", sums, out, max(-(-fs // 2), min(ctx.policy.activation(out), (fs + 31) // 2)))
    else:
        un(ctx, "log", sums, f"{out}/lns", LOG_FRAC)
        ctx.bind(f"{out}/inv_p", Const(np.asarray(1.0 / p)))
        bin_(ctx, "mul", f"{out}/lns", f"{out}/inv_p", f"{out}/root_ln", LOG_FRAC)
        un(ctx, "exp", f"{out}/root_ln", out)
