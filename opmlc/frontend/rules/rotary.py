"""Rotary position embeddings as onnxruntime computes them: com.microsoft RotaryEmbedding (the
builder's separate RoPE op, for execution providers that do not fuse it into attention), ONNX's
RotaryEmbedding (opset 23, the same rotation) and the rotary step GroupQueryAttention does
inside (rules/genai.py). Lowered onto `gather` (cos/sin
rows at run-time positions), `view`, `binary` mul/add/sub and `concat`.

onnxruntime's rotation of one head vector x at position p, with half = rotary_dim / 2 and
c = cos_cache[p], s = sin_cache[p] (each `half` wide):
  - halves (interleaved = 0): x1 = x[:half], x2 = x[half:rotary_dim];
  - interleaved: x1 = x[0:rotary_dim:2], x2 = x[1:rotary_dim:2];
  - out1 = x1·c − x2·s, out2 = x2·c + x1·s, written back in the same layout;
  - the features from rotary_dim on (partial rotary) pass through unchanged.

Error bound (against float64 on the quantized operands): each product is rounded once to the
input's bits and the sum/difference is exact, so an output is within 2·2^−(f+1) = 2^−f of the
exact rotation of the quantized x by the quantized cos/sin (f the input's bits; cos/sin are
constants at their own bits, or run-time values at theirs).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx

from opmlc.frontend.context import Const, LoweringContext, NodeNames
from opmlc.frontend.rules import rule
from opmlc.frontend.rules.movement import strides_of, view
from opmlc.frontend.rules.shape import reshape_to
from opmlc.ir.types import DType

MS = "com.microsoft"


def rotate(ctx: LoweringContext, name: Callable[[str], str], x: str, cos_c: str, sin_c: str, pos: str,
           interleaved: bool, out: str | None = None) -> str:
    """Rotate x [B, n, S, hd] at positions `pos` ([S], or [B, S] / [1, S] per batch row): the
    first 2·half features (half = cos_cache's width), the rest passed through. Returns the
    output's name (`out` when given)."""
    B, n, S, hd = ctx.shape_of(x)
    half = ctx.shape_of(cos_c)[1]
    rot = 2 * half
    if rot > hd:
        raise ctx.unsupported(f"rotary cache of width {half} for heads of {hd}")
    f = ctx.frac_of(ctx.fx(x))
    pos_shape = ctx.shape_of(pos)
    rows_b = pos_shape[0] if len(pos_shape) == 2 else 1

    def table(c: str) -> str:
        rows = name("rows")
        ctx.bind(rows, ctx.emit("gather", [ctx.fx(c), ctx.value(pos)], {"axis": 0}, rows))  # [(B,) S, half]
        cs = name("cs")
        reshape_to(ctx, rows, (rows_b, 1, S, half), cs)
        return cs

    cos, sin = table(cos_c), table(sin_c)
    st = strides_of((B, n, S, hd))
    x1, x2 = name("x1"), name("x2")
    if interleaved:
        view(ctx, x, (B, n, S, half), 0, (st[0], st[1], st[2], 2), x1)
        view(ctx, x, (B, n, S, half), 1, (st[0], st[1], st[2], 2), x2)
    else:
        view(ctx, x, (B, n, S, half), 0, st, x1)
        view(ctx, x, (B, n, S, half), half, st, x2)

    def op(kind: str, a_: str, b_: str) -> str:
        res = name(kind)
        ctx.bind(res, ctx.emit("binary", [ctx.fx(a_), ctx.fx(b_)], {"kind": kind, "frac": f}, res))
        return res

    r1 = op("sub", op("mul", x1, cos), op("mul", x2, sin))
    r2 = op("add", op("mul", x2, cos), op("mul", x1, sin))
    if interleaved:
        a1, a2 = name("r1"), name("r2")
        reshape_to(ctx, r1, (B, n, S, half, 1), a1)
        reshape_to(ctx, r2, (B, n, S, half, 1), a2)
        pair = name("pair")
        ctx.bind(pair, ctx.emit("concat", [ctx.fx(a1), ctx.fx(a2)], {"axis": 4, "frac": f}, pair))
        inter = name("inter")
        reshape_to(ctx, pair, (B, n, S, rot), inter)
        parts = [inter]
    else:
        parts = [r1, r2]
    if rot < hd:
        rest = name("pass")
        view(ctx, x, (B, n, S, hd - rot), rot, st, rest)
        parts.append(rest)
    res = out or name("rotated")
    ctx.bind(res, ctx.emit("concat", [ctx.fx(q) for q in parts], {"axis": 3, "frac": f}, res))
    return res


@rule(f"{MS}:RotaryEmbedding")
def ms_rotary_embedding(ctx: LoweringContext, node: onnx.NodeProto) -> None:
    """com.microsoft RotaryEmbedding(input, position_ids, cos_cache, sin_cache): input [B, S,
    hidden] (heads of hidden / num_heads, or of 2·cos_cache's width when num_heads is 0) or [B,
    heads, S, head]; position_ids [B, S] (or [1]: the first position, the others following);
    rotary_embedding_dim (0: the cache's 2·width) rotated, the rest of each head passed through."""
    a = ctx.attrs()
    if int(a.get("is_packed_batching", 0)):
        raise ctx.unsupported("RotaryEmbedding with is_packed_batching")
    if float(a.get("scale", 1.0)) != 1.0:
        raise ctx.unsupported(f"RotaryEmbedding with scale {a['scale']}")
    x, pos_ids, cos_c, sin_c = node.input[:4]
    _rotary_node(ctx, node, x, pos_ids, cos_c, sin_c, head_from_cache=True)


@rule("RotaryEmbedding")
def onnx_rotary_embedding(ctx: LoweringContext, node: onnx.NodeProto) -> None:
    """ONNX's RotaryEmbedding (opset 23)(X, cos_cache, sin_cache[, position_ids]): the same
    rotation; a 3-D X needs num_heads; rotary_embedding_dim 0 rotates the whole head; without
    position_ids the caches are already per token, [B, S, rot / 2]."""
    x, cos_c, sin_c = node.input[:3]
    pos_ids = node.input[3] if len(node.input) > 3 else ""
    _rotary_node(ctx, node, x, pos_ids, cos_c, sin_c, head_from_cache=False)


def _rotary_node(ctx: LoweringContext, node: onnx.NodeProto, x: str, pos_ids: str, cos_c: str, sin_c: str,
                 head_from_cache: bool) -> None:
    """Both RotaryEmbedding ops onto `rotate`: heads split from a 3-D input and joined back,
    positions made [B, S] (or [S]), a cache wider than the rotation cut to its first columns."""
    a = ctx.attrs()
    name = NodeNames(node)
    out = node.output[0]
    interleaved = bool(a.get("interleaved", 0))
    if ctx.dtype(x) is not DType.FX32:
        raise ctx.unsupported("RotaryEmbedding of a non-float input")
    shape = ctx.shape_of(x)
    width = ctx.shape_of(cos_c)[-1]
    heads = int(a.get("num_heads", 0))
    if len(shape) == 4:
        B, N, S, hd = shape
    elif len(shape) == 3:
        B, S, hidden = shape
        if not heads and not head_from_cache:
            raise ctx.unsupported("RotaryEmbedding of a 3-D input without num_heads")
        hd = hidden // heads if heads else 2 * width
        if hd == 0 or hidden % hd:
            raise ctx.unsupported(f"RotaryEmbedding of hidden size {hidden} in heads of {hd}")
        N = hidden // hd
    else:
        raise ctx.unsupported(f"RotaryEmbedding of a rank-{len(shape)} input")
    rot_dim = int(a.get("rotary_embedding_dim", 0)) or (2 * width if head_from_cache else hd)
    if rot_dim > hd or rot_dim % 2 or rot_dim > 2 * width:
        raise ctx.unsupported(f"RotaryEmbedding's rotary dimension {rot_dim} with heads of {hd} and a cache of"
                              f" width {width}")

    if not pos_ids:  # ONNX's per-token caches [B, S, half]: rows b·S + s of the flattened caches
        if tuple(ctx.shape_of(cos_c)) != (B, S, width):
            raise ctx.unsupported(f"RotaryEmbedding without position_ids and caches of shape {list(ctx.shape_of(cos_c))}")
        flat = []
        for c in (cos_c, sin_c):
            f = name("flat_cache")
            reshape_to(ctx, c, (B * S, width), f)
            flat.append(f)
        cos_c, sin_c = flat
        positions = name("positions")
        ctx.bind(positions, Const(np.arange(B * S, dtype=np.int64).reshape(B, S)))
    else:  # [B, S] as given, or [1] → p0 + 0 … S − 1
        pshape = ctx.shape_of(pos_ids)
        pos = ctx.value(pos_ids)
        if ctx.builder.type_of(pos).dtype is not DType.I64:
            pos = ctx.emit("cast", [pos], {"to": "i64", "frac": 0}, name("pos64"))
        positions = name("positions")
        if pshape in ((1,), ()):
            first = name("p0")
            ctx.bind(first, ctx.emit("reshape", [pos], {"shape": [1]}, first))
            ar = name("arange")
            ctx.bind(ar, Const(np.arange(S, dtype=np.int64)))
            ctx.bind(positions, ctx.emit("binary", [ctx.value(first), ctx.value(ar)], {"kind": "add"}, positions))
        elif pshape in ((B, S), (1, S)):
            ctx.bind(positions, pos)
        else:
            raise ctx.unsupported(f"RotaryEmbedding's position_ids of shape {list(pshape)} for input {list(shape)}")
    if rot_dim != 2 * width:
        cos_c, sin_c = (_first_columns(ctx, name, c, rot_dim // 2) for c in (cos_c, sin_c))

    if len(shape) == 4:
        rotate(ctx, name, x, cos_c, sin_c, positions, interleaved, out)
        return
    heads4 = name("heads")  # [B, S, N·hd] → [B, N, S, hd]
    view(ctx, x, (B, N, S, hd), 0, (S * N * hd, hd, N * hd, 1), heads4)
    r = rotate(ctx, name, heads4, cos_c, sin_c, positions, interleaved)
    back = name("back")
    view(ctx, r, (B, S, N, hd), 0, (N * S * hd, hd, S * hd, 1), back)
    reshape_to(ctx, back, (B, S, N * hd), out)


def _first_columns(ctx: LoweringContext, name: Callable[[str], str], cache: str, width: int) -> str:
    """A cache wider than the rotation: its first `width` columns."""
    narrow = name("narrow")
    view(ctx, cache, (ctx.shape_of(cache)[0], width), 0, strides_of(ctx.shape_of(cache)), narrow)
    return narrow
