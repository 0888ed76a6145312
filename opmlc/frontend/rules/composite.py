"""Rules for small ONNX ops that are compositions of existing IR ops: Hardmax and OneHot
(a one-hot compare with the class indices), LpNormalization (p = 2: the IR's `norm`, whose
rsqrt is exact; p = 1: a sum of magnitudes and one division), InstanceNormalization and
GroupNormalization (rows normalised by `norm`, then the per-channel scale and bias),
CenterCropPad (one `view`), CumSum (a matmul with a constant triangle), Shrink, Swish and
SwiGLU (`where`, `binary`, `unary` sigmoid).
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


@rule("OneHot")
def one_hot(ctx: LoweringContext, node: onnx.NodeProto) -> None:
    """values[1] where the (normalised) index equals the position along `axis`, else values[0];
    an index outside [−depth, depth) matches nothing."""
    idx, depth_name, values = node.input[:3]
    out = node.output[0]
    depth = int(np.asarray(ctx.require_const(depth_name, "OneHot's depth")).item())
    shape = ctx.shape_of(idx)
    rank = len(shape) + 1
    axis = ctx.attrs().get("axis", -1)
    axis = axis + rank if axis < 0 else axis
    ref = ctx.value(idx)
    if ctx.builder.type_of(ref).dtype is not DType.I64:  # float or narrower int indices: truncated
        ref = ctx.emit("cast", [ref], {"to": "i64", "frac": 0}, tmp(node, "idx64"))
    ctx.bind(tmp(node, "idx64"), ref)
    ctx.bind(tmp(node, "depth"), Const(np.asarray(depth, dtype=np.int64)))
    ctx.bind(tmp(node, "zero_i"), Const(np.asarray(0, dtype=np.int64)))
    binary(ctx, "lt", tmp(node, "idx64"), tmp(node, "zero_i"), tmp(node, "neg"))
    binary(ctx, "add", tmp(node, "idx64"), tmp(node, "depth"), tmp(node, "wrapped"))
    ctx.bind(tmp(node, "norm"), ctx.emit("where", [ctx.value(tmp(node, "neg")), ctx.value(tmp(node, "wrapped")),
                                                    ctx.value(tmp(node, "idx64"))], {}, tmp(node, "norm")))
    expanded = tuple(shape[:axis]) + (1,) + tuple(shape[axis:])
    reshape_to(ctx, tmp(node, "norm"), expanded, tmp(node, "idx_x"))
    iota = [1] * rank
    iota[axis] = depth
    ctx.bind(tmp(node, "iota"), Const(np.arange(depth, dtype=np.int64).reshape(iota)))
    binary(ctx, "eq", tmp(node, "idx_x"), tmp(node, "iota"), tmp(node, "hot"))
    for k, what in enumerate(("off", "on")):
        s = ctx.sym(values)
        if isinstance(s, Const):
            ctx.bind(tmp(node, what), Const(np.asarray(s.array).reshape(-1)[k:k + 1]))
        else:
            view(ctx, values, (1,), k, (1,), tmp(node, what))
    dt = ctx.dtype(values)
    attrs = {"frac": frac(ctx, out)} if dt is DType.FX32 else {}
    ctx.bind(out, ctx.emit("where", [ctx.value(tmp(node, "hot")), ctx.value(tmp(node, "on")),
                                     ctx.value(tmp(node, "off"))], attrs, out))


@rule("CenterCropPad")
def center_crop_pad(ctx: LoweringContext, node: onnx.NodeProto) -> None:
    """One view: each listed axis cropped around its centre or zero-padded around the input
    (the extra element of an odd difference at the end, as ONNX's reference does)."""
    x, out = node.input[0], node.output[0]
    shape = list(ctx.shape_of(x))
    rank = len(shape)
    target = [int(v) for v in np.asarray(ctx.require_const(node.input[1], "CenterCropPad's shape")).ravel()]
    axes = ctx.attrs().get("axes") or list(range(rank))
    axes = [a + rank if a < 0 else a for a in axes]
    st = strides_of(shape)
    new, offset, lo, hi = list(shape), 0, [0] * rank, list(shape)
    for a, sh in zip(axes, target, strict=True):
        dim = shape[a]
        new[a] = sh
        if sh < dim:
            offset += (dim - sh) // 2 * st[a]
            hi[a] = sh
        elif sh > dim:
            d = (sh - dim) // 2
            offset -= d * st[a]
            lo[a], hi[a] = d, d + dim
    view(ctx, x, new, offset, st, out, lo=lo, hi=hi, fill=0)


def _channel_affine(ctx: LoweringContext, node: onnx.NodeProto, normed: str, shape, scale: str, bias: str,
                    groups: int | None = None) -> None:
    """out = normed · scale[c] + bias[c] (a per-group scale of older GroupNormalization is
    repeated over its group's channels)."""
    c = shape[1]
    per_channel = (c,) + (1,) * (len(shape) - 2)
    names = []
    for what, src in (("scale", scale), ("bias", bias)):
        n = ctx.shape_of(src)[0]
        if n != c and groups:  # one value per group
            view(ctx, src, (groups, c // groups), 0, (1, 0), tmp(node, f"{what}_rep"))
            src = tmp(node, f"{what}_rep")
        reshape_to(ctx, src, per_channel, tmp(node, f"{what}_c"))
        names.append(tmp(node, f"{what}_c"))
    out = node.output[0]
    bin_(ctx, "mul", normed, names[0], tmp(node, "scaled"), max(frac(ctx, out), ctx.frac_of(ctx.fx(normed)) - 4))
    binary(ctx, "add", tmp(node, "scaled"), names[1], out)


def _normalize_rows(ctx: LoweringContext, node: onnx.NodeProto, rows: int, n: int, eps: float) -> str:
    """x reshaped to [rows, n], each row normalised to mean 0 and variance 1 by the IR's norm."""
    x = node.input[0]
    reshape_to(ctx, x, (rows, n), tmp(node, "rows"))
    ctx.bind(tmp(node, "ones"), Const(np.ones((n,), dtype=np.float32)))
    ref = ctx.fx(tmp(node, "rows"))
    fz = max(0, min(26, 30 - ceil(log2(sqrt(n) + 1))))  # |z| ≤ √n
    attrs = {"kind": "layer", "eps": eps_units(eps, ctx.frac_of(ref), n), "frac": fz}
    ctx.bind(tmp(node, "z"), ctx.emit("norm", [ref, ctx.fx(tmp(node, "ones"))], attrs, tmp(node, "z")))
    reshape_to(ctx, tmp(node, "z"), tuple(ctx.shape_of(x)), tmp(node, "normed"))
    return tmp(node, "normed")


@rule("InstanceNormalization")
def instance_norm(ctx: LoweringContext, node: onnx.NodeProto) -> None:
    shape = ctx.shape_of(node.input[0])
    n = prod(shape[2:])
    normed = _normalize_rows(ctx, node, shape[0] * shape[1], n, float(ctx.attrs().get("epsilon", 1e-5)))
    _channel_affine(ctx, node, normed, shape, node.input[1], node.input[2])


@rule("GroupNormalization")
def group_norm(ctx: LoweringContext, node: onnx.NodeProto) -> None:
    a = ctx.attrs()
    if a.get("stash_type", 1) != 1:
        raise ctx.unsupported(f"GroupNormalization with stash_type {a['stash_type']}")
    shape = ctx.shape_of(node.input[0])
    g = int(a["num_groups"])
    if shape[1] % g:
        raise ctx.unsupported(f"GroupNormalization of {shape[1]} channels in {g} groups")
    rows = shape[0] * g
    normed = _normalize_rows(ctx, node, rows, prod(shape[1:]) // g, float(a.get("epsilon", 1e-5)))
    _channel_affine(ctx, node, normed, shape, node.input[1], node.input[2], g)


@rule("CumSum")
def cumsum(ctx: LoweringContext, node: onnx.NodeProto) -> None:
    """A matmul with a constant 0/1 triangle along the axis (moved last and back by views):
    one int64 accumulation, exact. Integer tensors (int8…int32) go through fx32 with 0 bits and
    back, so a sum beyond int32 saturates where ONNX would wrap."""
    a = ctx.attrs()
    x, out = node.input[0], node.output[0]
    shape = tuple(ctx.shape_of(x))
    rank = len(shape)
    axis = int(np.asarray(ctx.require_const(node.input[1], "CumSum's axis")).item())
    axis = axis + rank if axis < 0 else axis
    dt = ctx.dtype(x)
    if dt not in (DType.FX32, DType.I32):
        raise ctx.unsupported(f"CumSum of a {dt.value} tensor")
    n = shape[axis]
    k, j = np.arange(n).reshape(n, 1), np.arange(n).reshape(1, n)
    keep = {(0, 0): k <= j, (1, 0): k < j, (0, 1): k >= j, (1, 1): k > j}[(int(a.get("exclusive", 0)),
                                                                         int(a.get("reverse", 0)))]
    ctx.bind(tmp(node, "tri_t"), Const(np.ascontiguousarray(keep.T.astype(np.float32))))  # [N, K]
    src = x
    perm = [d for d in range(rank) if d != axis] + [axis]
    moved = tuple(shape[d] for d in perm)
    if axis != rank - 1:
        src = tmp(node, "moved")
        st = strides_of(shape)
        view(ctx, x, moved, 0, [st[d] for d in perm], src)
    if rank == 1:
        reshape_to(ctx, src, (1, n), tmp(node, "row"))
        src = tmp(node, "row")
    ref = ctx.fx(src) if dt is DType.FX32 else ctx.emit("cast", [ctx.value(src)], {"to": "fx32", "frac": 0},
                                                         tmp(node, "as_fx"))
    fo = frac(ctx, out) if dt is DType.FX32 else 0
    ctx.bind(tmp(node, "sums"), ctx.emit("matmul", [ref, ctx.fx(tmp(node, "tri_t"))],
                                         {"frac": min(fo, ctx.frac_of(ref) + ctx.frac_of(ctx.fx(tmp(node, "tri_t")))),
                                          "transpose_b": True}, tmp(node, "sums")))
    res = tmp(node, "sums")
    if dt is not DType.FX32:
        ctx.bind(tmp(node, "ints"), ctx.emit("cast", [ctx.value(res)], {"to": "i32", "frac": 0}, tmp(node, "ints")))
        res = tmp(node, "ints")
    if axis == rank - 1:
        reshape_to(ctx, res, shape, out)
        return
    st2 = strides_of(moved)
    back = [perm.index(d) for d in range(rank)]
    view(ctx, res, shape, 0, [st2[b] for b in back], out)
