"""Rules for elementwise ops on activations: Add, Relu."""

from __future__ import annotations

import onnx

from opmlc.frontend.context import LoweringContext
from opmlc.frontend.rules import rule
from opmlc.ir.types import DType


@rule("Add")
def add(ctx: LoweringContext, node: onnx.NodeProto) -> None:
    out = node.output[0]
    if DType.FX32 not in (ctx.dtype(node.input[0]), ctx.dtype(node.input[1])):
        from opmlc.frontend.rules.arith import binary

        binary(ctx, "add", node.input[0], node.input[1], out)  # integer Add wraps around
        return
    a, b = (ctx.fx(x) for x in node.input)
    ctx.bind(out, ctx.emit("binary", [a, b], {"kind": "add", "frac": ctx.policy.activation(out)}, out))


@rule("Relu")
def relu(ctx: LoweringContext, node: onnx.NodeProto) -> None:
    out = node.output[0]
    ctx.bind(out, ctx.emit("relu", [ctx.ref(node.input[0])], {}, out))
