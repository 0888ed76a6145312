"""Rule for Resize (and Upsample) with constant roi/scales/sizes, lowered onto `matmul`.

Every Resize mode (nearest, linear, cubic; any coordinate transformation, antialias,
exclude_outside) is separable and linear along each axis: resizing axis a is out = W_a · in
along that axis (+ a constant where tf_crop_and_resize extrapolates), with W_a an [m, n]
matrix of interpolation weights. The weights are taken from onnx's reference implementation
itself: its per-axis routine is observed once on a zero input to learn each axis's parameters
(scale, output size, coefficient function, roi) and then applied to the identity, so the
matrices follow the reference exactly. Each axis is one matmul (the axis moved last and back by
views) with the weights at up to 29 bits: nearest is exact, linear and cubic round once per axis.
"""

from __future__ import annotations

import numpy as np
import onnx

from opmlc.frontend import fold
from opmlc.frontend.context import Const, LoweringContext
from opmlc.frontend.rules import rule
from opmlc.frontend.rules.arith import frac, tmp
from opmlc.frontend.rules.movement import strides_of, view
from opmlc.ir.types import DType

WEIGHT_FRAC = 29


def axis_maps(ctx: LoweringContext, node: onnx.NodeProto) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """(axis, W [m, n], bias [m]) per resized axis, in the reference's order."""
    try:
        from onnx.reference.ops import op_resize
        orig = op_resize._interpolate_1d_along_axis
    except (ImportError, AttributeError):
        raise ctx.unsupported("Resize needs onnx's reference per-axis interpolation (onnx ≥ 1.20)") from None
    calls = []

    def spy(data, axis, scale, out_len, get_coeffs, **kw):
        calls.append((axis, data.shape[axis], scale, out_len, get_coeffs, kw))
        return orig(data, axis, scale, out_len, get_coeffs, **kw)

    ins = [np.zeros(ctx.shape_of(node.input[0]), dtype=np.float32)]
    for k, name in enumerate(node.input[1:], start=1):
        ins.append(np.asarray(ctx.require_const(name, f"{node.op_type}'s input {k}")) if name else None)
    op_resize._interpolate_1d_along_axis = spy
    try:
        (want,) = fold.evaluate(node, ins, [onnx.helper.make_opsetid("", ctx.opset)])[:1]
    except Exception as exc:  # the reference refuses the attributes: the model is at fault
        raise ctx.unsupported(f"{node.op_type}: {str(exc).splitlines()[0][:200]}") from None
    finally:
        op_resize._interpolate_1d_along_axis = orig
    # With `axes`, the reference resizes each slice of the listed axes (moved last) in turn:
    # its call axes index those, and the calls repeat per slice.
    rank = len(ins[0].shape)
    listed = [a + rank if a < 0 else a for a in (ctx.attrs().get("axes") or [])]
    maps, seen, shape = [], set(), list(ins[0].shape)
    for axis, n, scale, m, get_coeffs, kw in calls:
        axis = listed[axis] if listed else axis
        if axis in seen:
            break
        seen.add(axis)
        shape[axis] = m
        w = orig(np.eye(n), 0, scale, m, get_coeffs, **kw)
        r = orig(np.zeros((n, 1)), 0, scale, m, get_coeffs, **kw)[:, 0]
        maps.append((axis, w - r[:, None], r))
    if tuple(shape) != tuple(np.shape(want)):  # an implementation that is not separable this way
        raise ctx.unsupported(f"{node.op_type} with these attributes (opset {ctx.opset})")
    return maps


@rule("Resize", "Upsample")
def resize(ctx: LoweringContext, node: onnx.NodeProto) -> None:
    x, out = node.input[0], node.output[0]
    if ctx.dtype(x) is not DType.FX32:
        raise ctx.unsupported(f"{node.op_type} of a {ctx.dtype(x).value} tensor")
    maps = axis_maps(ctx, node)
    fo = frac(ctx, out)
    cur = x
    if not maps:
        view(ctx, x, ctx.shape_of(x), 0, strides_of(ctx.shape_of(x)), out)
        return
    for step, (axis, w, r) in enumerate(maps):
        last = step == len(maps) - 1
        shape = tuple(ctx.shape_of(cur))
        rank = len(shape)
        perm = [d for d in range(rank) if d != axis] + [axis]
        moved = tuple(shape[d] for d in perm)
        src = cur
        if axis != rank - 1 or rank == 1:
            src = tmp(node, f"moved{step}")
            st = strides_of(shape)
            view(ctx, cur, moved if rank > 1 else (1, shape[0]), 0, [st[d] for d in perm] if rank > 1 else [0, 1], src)
        wname = tmp(node, f"w{step}")
        ctx.policy.overrides.setdefault(wname, WEIGHT_FRAC)  # the weights lie in about [−0.6, 1.2]
        ctx.bind(wname, Const(np.ascontiguousarray(w)))
        ins = [ctx.fx(src), ctx.fx(wname)]
        if np.any(r):
            bname = tmp(node, f"b{step}")
            ctx.bind(bname, Const(np.ascontiguousarray(r)))
            ins.append(ctx.fx(bname))
        f_in = ctx.frac_of(ins[0])
        f_step = min(fo if last else f_in, f_in + ctx.frac_of(ins[1]))
        if len(ins) == 3 and ctx.frac_of(ins[2]) > f_in + ctx.frac_of(ins[1]):
            ins[2] = ctx.emit("cast", [ins[2]], {"to": "fx32", "frac": f_in + ctx.frac_of(ins[1])}, tmp(node, f"bq{step}"))
        mm = tmp(node, f"mm{step}")
        ctx.bind(mm, ctx.emit("matmul", ins, {"frac": f_step, "transpose_b": True}, mm))
        new_shape = list(shape)
        new_shape[axis] = w.shape[0]
        dst = out if last else tmp(node, f"axis{step}")
        moved_out = tuple(new_shape[d] for d in perm) if rank > 1 else (1, new_shape[0])
        st2 = strides_of(moved_out)
        if rank == 1:
            view(ctx, mm, tuple(new_shape), 0, [1], dst)
        else:
            back = [perm.index(d) for d in range(rank)]
            view(ctx, mm, tuple(new_shape), 0, [st2[b] for b in back], dst)
        cur = dst
