"""Rules for ops that only move or re-view data: Identity, Dropout, Reshape, Flatten, Shape."""

from __future__ import annotations

from math import prod

import numpy as np
import onnx

from opmlc.frontend.context import Const, LoweringContext
from opmlc.frontend.rules import rule


@rule("Identity")
def identity(ctx: LoweringContext, node: onnx.NodeProto) -> None:
    ctx.bind(node.output[0], ctx.sym(node.input[0]))


@rule("Dropout")
def dropout(ctx: LoweringContext, node: onnx.NodeProto) -> None:
    # Inference (or training with ratio 0): the identity, and the optional mask output is all true.
    if len(node.input) > 2 and node.input[2]:
        training = ctx.const(node.input[2])
        ratio = ctx.const(node.input[1]) if len(node.input) > 1 and node.input[1] else None
        zero_ratio = ratio is not None and float(np.asarray(ratio).item()) == 0.0
        if (training is None or bool(np.asarray(training).item())) and not zero_ratio:
            raise ctx.unsupported("Dropout in training mode cannot be compiled (not deterministic)")
    ctx.bind(node.output[0], ctx.sym(node.input[0]))
    if len(node.output) > 1 and node.output[1]:
        ctx.bind(node.output[1], Const(np.ones(ctx.shape_of(node.input[0]), dtype=bool)))


def reshape_to(ctx: LoweringContext, name: str, shape: tuple[int, ...], out_name: str) -> None:
    if ctx.shape_of(name) == shape:
        ctx.bind(out_name, ctx.sym(name))
    else:
        ctx.bind(out_name, ctx.emit("reshape", [ctx.ref(name)], {"shape": list(shape)}, out_name))


@rule("Reshape")
def reshape(ctx: LoweringContext, node: onnx.NodeProto) -> None:
    src = ctx.shape_of(node.input[0])
    target = [int(d) for d in ctx.require_const(node.input[1], "Reshape's shape")]
    allowzero = ctx.attrs().get("allowzero", 0)
    out = [src[i] if d == 0 and not allowzero else d for i, d in enumerate(target)]
    if out.count(-1) > 1:
        raise ctx.unsupported("Reshape's shape has more than one -1")
    if -1 in out:
        known = prod(d for d in out if d != -1)
        out[out.index(-1)] = prod(src) // known if known else 0
    if prod(out) != prod(src):
        raise ctx.unsupported(f"cannot reshape {list(src)} to {target}")
    reshape_to(ctx, node.input[0], tuple(out), node.output[0])


@rule("Flatten")
def flatten(ctx: LoweringContext, node: onnx.NodeProto) -> None:
    src = ctx.shape_of(node.input[0])
    axis = ctx.attrs().get("axis", 1)
    if axis < 0:
        axis += len(src)
    reshape_to(ctx, node.input[0], (prod(src[:axis]), prod(src[axis:])), node.output[0])


@rule("Shape")
def shape(ctx: LoweringContext, node: onnx.NodeProto) -> None:
    # Shapes are static after lowering: the Shape of a runtime tensor is a constant.
    dims = np.array(ctx.shape_of(node.input[0]), dtype=np.int64)
    a = ctx.attrs()
    start, end = a.get("start", 0), a.get("end", len(dims))
    ctx.bind(node.output[0], Const(dims[start:end]))


@rule("Size")
def size(ctx: LoweringContext, node: onnx.NodeProto) -> None:
    ctx.bind(node.output[0], Const(np.array(prod(ctx.shape_of(node.input[0])), dtype=np.int64)))
