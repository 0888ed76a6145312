"""Rules for small ONNX ops that are compositions of existing IR ops: Hardmax (argmax and a
one-hot compare), LpNormalization (p = 2: the IR's `norm`, whose rsqrt is exact; p = 1: a sum
of magnitudes and one division), Shrink, Swish and SwiGLU (`where`, `binary`, `unary` sigmoid).
"""

from __future__ import annotations

from math import ceil, log2, prod, sqrt

import numpy as np
import onnx

from opmlc.frontend.context import Const, LoweringContext
from opmlc.frontend.rules import rule
from opmlc.frontend.rules.arith import binary, const, frac, tmp
from opmlc.frontend.rules.logs import bin_
from opmlc.frontend.rules.movement import strides_of, view
from opmlc.frontend.rules.shape import reshape_to
from opmlc.ir.ops.norm import eps_units
from opmlc.ir.types import DType


def _axis(ctx: LoweringContext, node: onnx.NodeProto, default: int) -> int:
    rank = len(ctx.shape_of(node.input[0]))
    axis = ctx.attrs().get("axis", default)
    return axis + rank if axis < 0 else axis


@rule("Hardmax")
def hardmax(ctx: LoweringContext, node: onnx.NodeProto) -> None:
    """1 at the first maximum along the axis, 0 elsewhere (before opset 13: over the axes from
    `axis` on, flattened)."""
    x, out = node.input[0], node.output[0]
    shape = ctx.shape_of(x)
    axis = _axis(ctx, node, -1 if ctx.opset >= 13 else 1)
    src, work = x, tuple(shape)
    if ctx.opset < 13:
        work = (prod(shape[:axis]), prod(shape[axis:]))
        src = tmp(node, "flat")
        reshape_to(ctx, x, work, src)
        axis = 1
    am = tmp(node, "argmax")
    ctx.bind(am, ctx.emit("reduce", [ctx.value(src)], {"kind": "argmax", "axes": [axis], "keepdims": 1,
                                                       "select_last": 0}, am))
    idx = [1] * len(work)
    idx[axis] = work[axis]
    ctx.bind(tmp(node, "iota"), Const(np.arange(work[axis], dtype=np.int64).reshape(idx)))
    binary(ctx, "eq", am, tmp(node, "iota"), tmp(node, "hot"))
    dst = out if src == x else tmp(node, "onehot")
    ctx.bind(dst, ctx.emit("cast", [ctx.value(tmp(node, "hot"))], {"to": "fx32", "frac": frac(ctx, out)}, dst))
    if dst != out:
        reshape_to(ctx, dst, tuple(shape), out)


@rule("LpNormalization")
def lp_normalization(ctx: LoweringContext, node: onnx.NodeProto) -> None:
    x, out = node.input[0], node.output[0]
    shape = ctx.shape_of(x)
    axis = _axis(ctx, node, -1)
    p = int(ctx.attrs().get("p", 2))
    if p == 1:
        ctx.bind(tmp(node, "abs"), ctx.emit("unary", [ctx.fx(x)], {"kind": "abs", "frac": ctx.frac_of(ctx.fx(x))},
                                            tmp(node, "abs")))
        n = shape[axis]
        f = max(0, ctx.frac_of(ctx.fx(x)) - (n - 1).bit_length())  # a sum of n cannot saturate
        ctx.bind(tmp(node, "l1"), ctx.emit("reduce", [ctx.value(tmp(node, "abs"))],
                                           {"kind": "sum", "axes": [axis], "keepdims": 1, "frac": f}, tmp(node, "l1")))
        binary(ctx, "div", x, tmp(node, "l1"), out)
        return
    if p != 2:
        raise ctx.unsupported(f"LpNormalization with p = {p} (ONNX defines 1 and 2)")
    # x / ‖x‖₂ = rms_norm(x) / √n over the last axis (another axis is moved there and back)
    rank = len(shape)
    src = x
    if axis != rank - 1:
        perm = [k for k in range(rank) if k != axis] + [axis]
        st = strides_of(shape)
        src = tmp(node, "moved")
        view(ctx, x, [shape[k] for k in perm], 0, [st[k] for k in perm], src)
    n = shape[axis]
    ctx.bind(tmp(node, "gamma"), Const(np.full((n,), 1 / sqrt(n), dtype=np.float64)))
    ref = ctx.fx(src)
    attrs = {"kind": "rms", "eps": eps_units(0.0, ctx.frac_of(ref), n), "frac": frac(ctx, out)}
    dst = out if src == x else tmp(node, "normed")
    ctx.bind(dst, ctx.emit("norm", [ref, ctx.fx(tmp(node, "gamma"))], attrs, dst))
    if dst != out:
        moved = [shape[k] for k in range(rank) if k != axis] + [n]
        st2 = strides_of(moved)
        back = [k if k < axis else k - 1 for k in range(rank)]
        back[axis] = rank - 1
        view(ctx, dst, shape, 0, [st2[b] for b in back], out)


@rule("Shrink")
def shrink(ctx: LoweringContext, node: onnx.NodeProto) -> None:
    """x < −λ ? x + bias : (x > λ ? x − bias : 0)."""
    a = ctx.attrs()
    lambd, bias = float(a.get("lambd", 0.5)), float(a.get("bias", 0.0))
    x, out = node.input[0], node.output[0]
    if ctx.dtype(x) is not DType.FX32:
        if not (lambd.is_integer() and bias.is_integer()):
            raise ctx.unsupported("Shrink of an integer tensor by a fractional lambd or bias")
        lambd, bias = int(lambd), int(bias)
    binary(ctx, "lt", x, const(ctx, tmp(node, "nl"), -lambd, x), tmp(node, "below"))
    binary(ctx, "gt", x, const(ctx, tmp(node, "l"), lambd, x), tmp(node, "above"))
    fx = ctx.dtype(x) is DType.FX32
    for kind, what in (("add", "plus"), ("sub", "minus")):
        if fx:  # at the output's bits: the intermediates are the output's values
            bin_(ctx, kind, x, const(ctx, tmp(node, f"b_{what}"), bias), tmp(node, what), frac(ctx, out))
        else:
            binary(ctx, kind, x, const(ctx, tmp(node, f"b_{what}"), bias, x), tmp(node, what))
    zero = const(ctx, tmp(node, "zero"), 0, x)
    attrs = {"frac": frac(ctx, out)} if fx else {}
    hi = tmp(node, "hi")
    ctx.bind(hi, ctx.emit("where", [ctx.value(tmp(node, "above")), ctx.value(tmp(node, "minus")), ctx.value(zero)],
                          attrs, hi))
    ctx.bind(out, ctx.emit("where", [ctx.value(tmp(node, "below")), ctx.value(tmp(node, "plus")), ctx.value(hi)],
                           attrs, out))


@rule("Swish", "SwiGLU")
def swish(ctx: LoweringContext, node: onnx.NodeProto) -> None:
    """Swish: x · sigmoid(alpha · x); SwiGLU(A, B): Swish(A) · B."""
    alpha = float(ctx.attrs().get("alpha", 1.0))
    x = node.input[0]
    gated = node.op_type == "SwiGLU"
    src = x
    if alpha != 1.0:  # α·x keeps x's bits, fewer by log2(α) when α > 1 so that it cannot saturate
        src = tmp(node, "ax")
        f = ctx.frac_of(ctx.fx(x)) - (max(0, ceil(log2(abs(alpha)))) if alpha else 0)
        bin_(ctx, "mul", x, const(ctx, tmp(node, "alpha"), alpha), src, max(0, f))
    ctx.bind(tmp(node, "sig"), ctx.emit("unary", [ctx.fx(src)], {"kind": "sigmoid", "frac": 30}, tmp(node, "sig")))
    if not gated:
        binary(ctx, "mul", x, tmp(node, "sig"), node.output[0])
        return
    f = frac(ctx, node.output[0])
    bin_(ctx, "mul", x, tmp(node, "sig"), tmp(node, "swish"), max(f, ctx.frac_of(ctx.fx(x))))
    binary(ctx, "mul", tmp(node, "swish"), node.input[1], node.output[0])
