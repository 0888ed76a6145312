"""Rule for Softmax: the IR op works on the last axis; another axis is moved there and back
(opset ≥ 13: two views), or, before opset 13, the trailing axes are reshaped onto one."""

from __future__ import annotations

from math import prod

import onnx

from opmlc.frontend.context import LoweringContext
from opmlc.frontend.rules import rule
from opmlc.frontend.rules.shape import reshape_to


@rule("Softmax")
def softmax(ctx: LoweringContext, node: onnx.NodeProto) -> None:
    src = ctx.shape_of(node.input[0])
    rank = len(src)
    axis = ctx.attrs().get("axis", -1 if ctx.opset >= 13 else 1)
    if axis < 0:
        axis += rank
    out = node.output[0]
    frac = ctx.policy.activation(out)
    if axis == rank - 1:
        ctx.bind(out, ctx.emit("softmax", [ctx.ref(node.input[0])], {"frac": frac}, out))
        return
    if ctx.opset >= 13:  # over one axis: move it last (a view), normalise, move it back
        from opmlc.frontend.rules.movement import strides_of, view

        perm = [k for k in range(rank) if k != axis] + [axis]
        st = strides_of(src)
        moved = f"{out}/moved"
        view(ctx, node.input[0], [src[p] for p in perm], 0, [st[p] for p in perm], moved)
        soft = f"{out}/softmax"
        ctx.bind(soft, ctx.emit("softmax", [ctx.ref(moved)], {"frac": frac}, soft))
        back = [perm.index(k) for k in range(rank)]
        shape = [src[p] for p in perm]
        st2 = strides_of(shape)
        view(ctx, soft, [shape[p] for p in back], 0, [st2[p] for p in back], out)
        return
    # Before opset 13, Softmax normalises over all dimensions from `axis` on: a 2-D view.
    flat = f"{out}/flat"
    reshape_to(ctx, node.input[0], (prod(src[:axis]), prod(src[axis:])), flat)
    soft = f"{out}/softmax"
    ctx.bind(soft, ctx.emit("softmax", [ctx.ref(flat)], {"frac": frac}, soft))
    reshape_to(ctx, soft, src, out)
