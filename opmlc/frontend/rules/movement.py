"""Rules for ONNX data-movement ops, all lowered onto the IR's `view` (a strided copy with a
constant border), `concat` and `reshape`: Transpose, Slice, Expand, Tile, Pad (constant mode),
Split, Squeeze, Unsqueeze, DepthToSpace, SpaceToDepth, Gather (constant indices; run-time ones
are rules/decoder.py's), Trilu, EyeLike, Concat. Shape parameters (axes, starts, pads, repeats…)
must be compile-time constants.
"""

from __future__ import annotations

from math import prod

import numpy as np
import onnx

from opmlc.frontend.context import Const, LoweringContext
from opmlc.frontend.rules import rule
from opmlc.frontend.rules.shape import reshape_to
from opmlc.ir import fixedpoint as fp
from opmlc.ir.types import DType


def strides_of(shape) -> list[int]:
    out, acc = [], 1
    for d in reversed(shape):
        out.append(acc)
        acc *= d
    return out[::-1]


def view(ctx: LoweringContext, name: str, shape, offset: int, strides, out: str,
         lo=None, hi=None, fill: int = 0) -> None:
    attrs = {"shape": [int(d) for d in shape], "offset": int(offset), "strides": [int(s) for s in strides]}
    if lo is not None:
        attrs.update(lo=[int(v) for v in lo], hi=[int(v) for v in hi], fill=int(fill))
    ctx.bind(out, ctx.emit("view", [ctx.value(name)], attrs, out))


def const_ints(ctx: LoweringContext, node: onnx.NodeProto, index: int, attr: str, what: str):
    """An int list given as input `index` (newer opsets) or attribute `attr` (older); None if absent."""
    if len(node.input) > index and node.input[index]:
        return [int(v) for v in np.asarray(ctx.require_const(node.input[index], what)).ravel()]
    v = ctx.attrs().get(attr)
    return None if v is None else [int(a) for a in v]


def norm_axes(axes, rank: int) -> list[int]:
    return [a + rank if a < 0 else a for a in axes]


@rule("Transpose")
def transpose(ctx: LoweringContext, node: onnx.NodeProto) -> None:
    src = ctx.shape_of(node.input[0])
    perm = ctx.attrs().get("perm") or list(range(len(src)))[::-1]
    st = strides_of(src)
    view(ctx, node.input[0], [src[p] for p in perm], 0, [st[p] for p in perm], node.output[0])


@rule("Slice")
def slice_(ctx: LoweringContext, node: onnx.NodeProto) -> None:
    src = ctx.shape_of(node.input[0])
    if ctx.opset < 10:
        starts, ends = ctx.attrs()["starts"], ctx.attrs()["ends"]
        axes = ctx.attrs().get("axes") or list(range(len(starts)))
        steps = [1] * len(starts)
    else:
        starts = const_ints(ctx, node, 1, "", "Slice's starts")
        ends = const_ints(ctx, node, 2, "", "Slice's ends")
        axes = const_ints(ctx, node, 3, "", "Slice's axes") or list(range(len(starts)))
        steps = const_ints(ctx, node, 4, "", "Slice's steps") or [1] * len(starts)
    st = strides_of(src)
    shape, strides, offset = list(src), list(st), 0
    for a, b, e, s in zip(norm_axes(axes, len(src)), starts, ends, steps, strict=True):
        if s == 0:
            raise ctx.unsupported("Slice with step 0")
        r = range(*slice(b, e, s).indices(src[a]))
        shape[a] = len(r)
        strides[a] = st[a] * s
        offset += (r.start if len(r) else 0) * st[a]
    view(ctx, node.input[0], shape, offset if prod(shape) else 0, strides, node.output[0])


@rule("Expand")
def expand(ctx: LoweringContext, node: onnx.NodeProto) -> None:
    src = ctx.shape_of(node.input[0])
    want = [int(d) for d in ctx.require_const(node.input[1], "Expand's shape")]
    shape = np.broadcast_shapes(tuple(src), tuple(want))
    padded = (1,) * (len(shape) - len(src)) + tuple(src)
    st = strides_of(padded)
    view(ctx, node.input[0], shape, 0, [0 if d == 1 else s for d, s in zip(padded, st, strict=True)], node.output[0])


@rule("Tile")
def tile(ctx: LoweringContext, node: onnx.NodeProto) -> None:
    src = ctx.shape_of(node.input[0])
    reps = [int(r) for r in ctx.require_const(node.input[1], "Tile's repeats")]
    st = strides_of(src)
    shape, strides = [], []
    for d, s, r in zip(src, st, reps, strict=True):
        shape += [r, d]
        strides += [0, s]
    tiled = f"{node.output[0]}/tiled"
    view(ctx, node.input[0], shape, 0, strides, tiled)
    reshape_to(ctx, tiled, tuple(d * r for d, r in zip(src, reps, strict=True)), node.output[0])


@rule("Pad")
def pad(ctx: LoweringContext, node: onnx.NodeProto) -> None:
    src = ctx.shape_of(node.input[0])
    r = len(src)
    a = ctx.attrs()
    mode = a.get("mode", "constant")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    if ctx.opset < 11:
        pads, value = list(a["pads"]), float(a.get("value", 0.0))
        axes = list(range(r))
    else:
        pads = const_ints(ctx, node, 1, "", "Pad's pads")
        value = 0.0
        if len(node.input) > 2 and node.input[2]:
            value = np.asarray(ctx.require_const(node.input[2], "Pad's constant value")).ravel()[0]
        axes = norm_axes(const_ints(ctx, node, 3, "", "Pad's axes") or list(range(r)), r)
    if mode != "constant":
        raise ctx.unsupported(f"Pad mode {mode!r} (only 'constant')")
    begin, end = [0] * r, [0] * r
    for i, ax in enumerate(axes):
        begin[ax], end[ax] = pads[i], pads[len(axes) + i]
    shape = [d + b + e for d, b, e in zip(src, begin, end, strict=True)]
    st = strides_of(src)
    offset = -sum(b * s for b, s in zip(begin, st, strict=True))
    lo = begin
    hi = [b + d for b, d in zip(begin, src, strict=True)]
    dt = ctx.dtype(node.input[0])
    if dt is DType.FX32:
        ref = ctx.value(node.input[0])
        fill = int(fp.quantize(np.float64(value), ctx.frac_of(ref)))
    else:
        fill = int(value)
    if prod(shape) == 0 or prod(src) == 0:
        raise ctx.unsupported("Pad of an empty tensor")
    view(ctx, node.input[0], shape, offset, st, node.output[0], lo, hi, fill)


@rule("Concat")
def concat(ctx: LoweringContext, node: onnx.NodeProto) -> None:
    from opmlc.frontend.rules.arith import ONNX_TO_IR  # noqa: F401

    names = [n for n in node.input if n and prod(ctx.shape_of(n)) > 0] or [node.input[0]]
    rank = len(ctx.shape_of(names[0]))
    axis = ctx.attrs()["axis"]
    axis = axis + rank if axis < 0 else axis
    dts = {ctx.dtype(n) for n in names}
    refs = [ctx.fx(n) for n in names] if DType.FX32 in dts else [ctx.value(n) for n in names]
    out = node.output[0]
    attrs = {"axis": axis}
    if DType.FX32 in dts:
        attrs["frac"] = ctx.policy.activation(out)
    ctx.bind(out, ctx.emit("concat", refs, attrs, out))


@rule("Split")
def split(ctx: LoweringContext, node: onnx.NodeProto) -> None:
    src = ctx.shape_of(node.input[0])
    a = ctx.attrs()
    axis = norm_axes([a.get("axis", 0)], len(src))[0]
    sizes = const_ints(ctx, node, 1, "split", "Split's sizes")
    n = len(node.output)
    if sizes is None:
        if "num_outputs" in a:
            n = a["num_outputs"]
            chunk = -(-src[axis] // n)
            sizes = [min(chunk, src[axis] - k * chunk) for k in range(n)]
        else:
            sizes = [src[axis] // n] * n
    st = strides_of(src)
    start = 0
    for out, size in zip(node.output, sizes, strict=True):
        shape = list(src)
        shape[axis] = size
        if out:
            view(ctx, node.input[0], shape, start * st[axis], st, out)
        start += size


@rule("Squeeze", "Unsqueeze")
def squeeze(ctx: LoweringContext, node: onnx.NodeProto) -> None:
    src = list(ctx.shape_of(node.input[0]))
    axes = const_ints(ctx, node, 1, "axes", f"{node.op_type}'s axes")
    if node.op_type == "Squeeze":
        axes = norm_axes(axes, len(src)) if axes is not None else [k for k, d in enumerate(src) if d == 1]
        shape = [d for k, d in enumerate(src) if k not in axes]
    else:
        rank = len(src) + len(axes)
        shape = list(src)
        for ax in sorted(norm_axes(axes, rank)):
            shape.insert(ax, 1)
    reshape_to(ctx, node.input[0], tuple(shape), node.output[0])


@rule("DepthToSpace", "SpaceToDepth")
def depth_space(ctx: LoweringContext, node: onnx.NodeProto) -> None:
    n, c, h, w = ctx.shape_of(node.input[0])
    a = ctx.attrs()
    bs = a["blocksize"]
    mode = a.get("mode", "DCR")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    out = node.output[0]
    if node.op_type == "DepthToSpace":
        if mode == "DCR":
            shape6, perm = (n, bs, bs, c // bs**2, h, w), (0, 3, 4, 1, 5, 2)
        else:
            shape6, perm = (n, c // bs**2, bs, bs, h, w), (0, 1, 4, 2, 5, 3)
        final = (n, c // bs**2, h * bs, w * bs)
    else:
        shape6 = (n, c, h // bs, bs, w // bs, bs)
        perm = (0, 3, 5, 1, 2, 4) if mode == "DCR" else (0, 1, 3, 5, 2, 4)
        final = (n, c * bs * bs, h // bs, w // bs)
    six = f"{out}/6d"
    reshape_to(ctx, node.input[0], shape6, six)
    st = strides_of(shape6)
    moved = f"{out}/moved"
    view(ctx, six, [shape6[p] for p in perm], 0, [st[p] for p in perm], moved)
    reshape_to(ctx, moved, final, out)


@rule("Gather")
def gather(ctx: LoweringContext, node: onnx.NodeProto) -> None:
    src = ctx.shape_of(node.input[0])
    idx = ctx.const(node.input[1])
    if idx is None:
        from opmlc.frontend.rules.decoder import gather_runtime

        gather_runtime(ctx, node)
        return
    axis = norm_axes([ctx.attrs().get("axis", 0)], len(src))[0]
    idx = np.asarray(idx, dtype=np.int64)
    idx = np.where(idx < 0, idx + src[axis], idx)
    if np.any((idx < 0) | (idx >= src[axis])):
        raise ctx.unsupported("Gather index out of range")
    st = strides_of(src)
    out = node.output[0]
    parts = []
    for k, i in enumerate(idx.ravel()):
        shape = list(src)
        shape[axis] = 1
        part = f"{out}/g{k}"
        view(ctx, node.input[0], shape, int(i) * st[axis], st, part)
        parts.append(part)
    joined = f"{out}/joined"
    dt = ctx.dtype(node.input[0])
    attrs = {"axis": axis, **({"frac": ctx.frac_of(ctx.value(node.input[0]))} if dt is DType.FX32 else {})}
    ctx.bind(joined, ctx.emit("concat", [ctx.value(p) for p in parts], attrs, joined))
    final = tuple(src[:axis]) + tuple(idx.shape) + tuple(src[axis + 1:])
    reshape_to(ctx, joined, final, out)


@rule("Trilu")
def trilu(ctx: LoweringContext, node: onnx.NodeProto) -> None:
    src = ctx.shape_of(node.input[0])
    k = int(np.asarray(ctx.require_const(node.input[1], "Trilu's k")).item()) if len(node.input) > 1 and node.input[1] else 0
    upper = ctx.attrs().get("upper", 1)
    rows, cols = np.indices(src[-2:])
    keep = (cols - rows >= k) if upper else (cols - rows <= k)
    out = node.output[0]
    mask = f"{out}/mask"
    ctx.bind(mask, Const(np.broadcast_to(keep, src).copy()))
    zero = f"{out}/zero"
    dt = ctx.dtype(node.input[0])
    ctx.bind(zero, Const(np.zeros((), dtype={DType.FX32: np.float32, DType.I32: np.int32,
                                               DType.I64: np.int64, DType.BOOL: np.bool_}[dt])))
    x = ctx.value(node.input[0])
    attrs = {"frac": ctx.frac_of(x)} if dt is DType.FX32 else {}
    ctx.bind(out, ctx.emit("where", [ctx.value(mask), x, ctx.value(zero)], attrs, out))


@rule("EyeLike")
def eye_like(ctx: LoweringContext, node: onnx.NodeProto) -> None:
    from onnx.helper import tensor_dtype_to_np_dtype

    shape = ctx.shape_of(node.input[0])
    a = ctx.attrs()
    if "dtype" in a:
        dtype = tensor_dtype_to_np_dtype(a["dtype"])
    else:  # the input's element type
        dtype = {DType.FX32: np.float32, DType.I32: np.int32, DType.I64: np.int64,
                 DType.BOOL: np.bool_}[ctx.dtype(node.input[0])]
    ctx.bind(node.output[0], Const(np.eye(*shape, k=a.get("k", 0), dtype=dtype)))
