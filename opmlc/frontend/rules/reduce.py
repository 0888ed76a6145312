"""Rules for reductions onto the IR's `reduce`: ReduceSum, ReduceMean, ReduceMax, ReduceMin,
ReduceProd, ReduceL1 (sum of abs), ReduceL2 (sqrt of the sum of squares), ReduceSumSquare,
ArgMax, ArgMin. Axes come from the attribute (older opsets) or a constant input."""

from __future__ import annotations

import numpy as np
import onnx

from opmlc.frontend.context import LoweringContext
from opmlc.frontend.rules import rule
from opmlc.frontend.rules.arith import binary, unary
from opmlc.frontend.rules.shape import reshape_to
from opmlc.ir.types import DType

KIND = {"ReduceSum": "sum", "ReduceMean": "mean", "ReduceMax": "max", "ReduceMin": "min",
        "ReduceProd": "prod", "ReduceL1": "sum", "ReduceL2": "sum", "ReduceSumSquare": "sum"}


def reduce_axes(ctx: LoweringContext, node: onnx.NodeProto) -> tuple[list[int] | None, bool]:
    """A reduction node's sorted non-negative axes (None: no-op, empty axes with
    noop_with_empty_axes) and keepdims."""
    a = ctx.attrs()
    rank = len(ctx.shape_of(node.input[0]))
    if len(node.input) > 1 and node.input[1]:
        axes = [int(v) for v in np.asarray(ctx.require_const(node.input[1], "the reduction axes")).ravel()]
    else:
        axes = list(a.get("axes") or [])
    keepdims = bool(a.get("keepdims", 1))
    if not axes:
        if a.get("noop_with_empty_axes", 0):
            return None, keepdims
        axes = list(range(rank))
    return sorted({v + rank if v < 0 else v for v in axes}), keepdims


@rule(*KIND)
def reduce(ctx: LoweringContext, node: onnx.NodeProto) -> None:
    x, out = node.input[0], node.output[0]
    axes, keepdims = reduce_axes(ctx, node)
    if axes is None:
        reshape_to(ctx, x, tuple(ctx.shape_of(x)), out)
        return
    src = x
    if node.op_type == "ReduceL1":
        src = f"{out}/abs"
        unary(ctx, "abs", x, src)
    elif node.op_type in ("ReduceL2", "ReduceSumSquare"):
        src = f"{out}/sq"
        binary(ctx, "mul", x, x, src)
    target = f"{out}/sum" if node.op_type == "ReduceL2" else out
    ref = ctx.value(src)
    attrs = {"kind": KIND[node.op_type], "axes": axes, "keepdims": int(keepdims)}
    if ctx.builder.type_of(ref).dtype is DType.FX32:
        attrs["frac"] = ctx.policy.activation(target)
    ctx.bind(target, ctx.emit("reduce", [ref], attrs, target))
    if node.op_type == "ReduceL2":
        unary(ctx, "sqrt", target, out)


@rule("ArgMax", "ArgMin")
def arg(ctx: LoweringContext, node: onnx.NodeProto) -> None:
    a = ctx.attrs()
    x, out = node.input[0], node.output[0]
    rank = len(ctx.shape_of(x))
    axis = a.get("axis", 0)
    attrs = {"kind": node.op_type.lower(), "axes": [axis + rank if axis < 0 else axis],
             "keepdims": int(a.get("keepdims", 1)), "select_last": int(a.get("select_last_index", 0))}
    ctx.bind(out, ctx.emit("reduce", [ctx.value(x)], attrs, out))
