"""Rules for elementwise ops on activations: Add, Relu."""

from __future__ import annotations

import onnx

from opmlc.frontend.context import LoweringContext
from opmlc.frontend.rules import rule


@rule("Add")
def add(ctx: LoweringContext, node: onnx.NodeProto) -> None:
    a, b = (ctx.ref(x) for x in node.input)
    out = node.output[0]
    ctx.bind(out, ctx.emit("add", [a, b], {"frac": ctx.policy.activation(out)}, out))


@rule("Relu")
def relu(ctx: LoweringContext, node: onnx.NodeProto) -> None:
    out = node.output[0]
    ctx.bind(out, ctx.emit("relu", [ctx.ref(node.input[0])], {}, out))
