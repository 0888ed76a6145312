"""Rules for the onnxruntime contrib ops of onnxruntime-genai's model builder (LLaMA, Qwen2,
Mistral, Phi-3, Gemma, Phi exports): GroupQueryAttention, SkipSimplifiedLayerNormalization,
SkipLayerNormalization (Phi's) and SimplifiedLayerNormalization (the builder writes the last in
the default domain; load.py moves it to com.microsoft); its rotary step is rules/rotary.py's. Semantics are onnxruntime's (docs/ContribOperators.md and its CPU
kernels); MatMulNBits is rules/quantized.py's.

GroupQueryAttention, at static shapes: the key/value cache is a fixed buffer of the compile's
context length C (`past_key` [1, kv_heads, C, head] in, `present_key` of the same shape and type
out, onnxruntime's shared-buffer layout). With p = seqlens_k + 1 − S (the cache entries already
written) the S new keys and values are written at positions p … p + S − 1 (`where` over a
run-time `gather` of the new rows; every other entry is copied), query s sits at position p + s
for the rotary embedding (rows of cos_cache/sin_cache gathered at run time) and attends to
the keys j ≤ p + s (a `where` to the most negative value before the softmax: exactly zero
weight), so the unused tail of the buffer never contributes. The new entries are rounded to
the cache's bits (the graph input's; the analysis bounds them by the declared cache range,
docs/DESIGN.md "Generation"), so a step's present cache has the type the next step reads.

Error bounds (against float64 on the quantized operands): rotary products one rounding each
(2^−(f+1) per output, f its bits; cos/sin constants at their bits); scores, softmax and the
weighted sum as rules/attention.py (one rounded int64 accumulation each, softmax within
2^−(fo+1) + 3e-7); the cache write is exact apart from the rounding to the cache's bits.
"""

from __future__ import annotations

import math

import numpy as np
import onnx

from opmlc.frontend.context import Const, LoweringContext, NodeNames
from opmlc.frontend.rules import rule
from opmlc.frontend.rules.arith import frac
from opmlc.frontend.rules.attention import GATE_FRAC, SCORE_FRAC_MAX
from opmlc.frontend.rules.decoder import layer_norm, rms_norm
from opmlc.frontend.rules.movement import strides_of, view
from opmlc.frontend.rules.rotary import rotate
from opmlc.frontend.rules.shape import reshape_to
from opmlc.ir.types import DType

MS = "com.microsoft"
# the attributes the rule reads; any other (a later onnxruntime's) is refused by name
GQA_ATTRS = {"num_heads", "kv_num_heads", "scale", "local_window_size", "softcap", "do_rotary", "rotary_interleaved"}


def _opt(node: onnx.NodeProto, i: int) -> str:
    return node.input[i] if len(node.input) > i else ""


@rule(f"{MS}:SimplifiedLayerNormalization")
def simplified_layer_norm(ctx: LoweringContext, node: onnx.NodeProto) -> None:
    if any(node.output[1:]):
        raise ctx.unsupported("SimplifiedLayerNormalization's inv_std_var output")
    rms_norm(ctx, node)


@rule(f"{MS}:SkipSimplifiedLayerNormalization")
def skip_simplified_layer_norm(ctx: LoweringContext, node: onnx.NodeProto) -> None:
    """out = RMSNorm(input + skip [+ bias]) · gamma; output 3 is the sum itself."""
    _skip_norm(ctx, node, "RMSNormalization", gamma_beta=(2,), bias=3)


@rule(f"{MS}:SkipLayerNormalization")
def skip_layer_norm(ctx: LoweringContext, node: onnx.NodeProto) -> None:
    """out = LayerNorm(input + skip [+ bias]) · gamma [+ beta] (Phi's export); output 3 is the sum."""
    _skip_norm(ctx, node, "LayerNormalization", gamma_beta=(2, 3), bias=4)


def _skip_norm(ctx: LoweringContext, node: onnx.NodeProto, norm: str, gamma_beta: tuple[int, ...], bias: int) -> None:
    """The skip sum as `binary` adds (input + skip, then + bias), then the plain `norm` op of
    rules/decoder.py over it; the mean and inv_std_var outputs are refused."""
    outs = list(node.output) + [""] * 4
    if outs[1] or outs[2]:
        raise ctx.unsupported(f"{node.op_type}'s mean or inv_std_var output")
    x, skip, b = node.input[0], node.input[1], _opt(node, bias)
    total = outs[3] or f"{outs[0] or node.name}/sum"
    if ctx.shape_of(skip) != ctx.shape_of(x):
        raise ctx.unsupported(f"{node.op_type} with a skip of another shape than the input")
    summed = total if not b else f"{total}/nobias"
    ctx.bind(summed, ctx.emit("binary", [ctx.fx(x), ctx.fx(skip)], {"kind": "add", "frac": frac(ctx, summed)}, summed))
    if b:
        ctx.bind(total, ctx.emit("binary", [ctx.fx(summed), ctx.fx(b)], {"kind": "add", "frac": frac(ctx, total)},
                                 total))
    if not outs[0]:
        return
    saved = ctx.node
    params = [_opt(node, i) for i in gamma_beta]
    while params and not params[-1]:
        params.pop()
    ctx.node = onnx.helper.make_node(norm, [total, *params], [outs[0]], name=node.name,
                                     epsilon=float(ctx.attrs().get("epsilon", 1e-5)), axis=-1)
    try:
        (rms_norm if norm == "RMSNormalization" else layer_norm)(ctx, ctx.node)
    finally:
        ctx.node = saved


@rule(f"{MS}:GroupQueryAttention")
def group_query_attention(ctx: LoweringContext, node: onnx.NodeProto) -> None:
    a = ctx.attrs()
    name = NodeNames(node)
    ins = list(node.input) + [""] * 12
    query, key, value, past_k, past_v, seqlens_k, _total, cos_c, sin_c = ins[:9]
    if any(ins[9:12]):
        raise ctx.unsupported("GroupQueryAttention with position_ids, attention_bias or head_sink inputs")
    outs = list(node.output) + [""] * 3
    y, present_k, present_v = outs[:3]
    H, KV = int(a["num_heads"]), int(a["kv_num_heads"])
    if float(a.get("softcap", 0.0)) != 0.0:
        raise ctx.unsupported("GroupQueryAttention with softcap")
    unknown = sorted(set(a) - GQA_ATTRS)
    if unknown:  # e.g. sliding_window_cache (a ring buffer of the window), qk_output, smooth_softmax
        raise ctx.unsupported(f"GroupQueryAttention with attribute(s) {', '.join(unknown)}")
    if not past_k or not past_v:
        raise ctx.unsupported("GroupQueryAttention without a key/value cache (past_key, past_value)")
    if H % KV:
        raise ctx.unsupported(f"GroupQueryAttention with {H} query heads over {KV} key/value heads")
    window = int(a.get("local_window_size", -1))
    B, S, width = ctx.shape_of(query)
    _, _, C, hd = ctx.shape_of(past_k)
    if B != 1:
        raise ctx.unsupported(f"GroupQueryAttention with batch {B}: compile with batch 1 (--input-shape)")
    for t in (query, past_k, past_v):
        if ctx.dtype(t) is not DType.FX32:
            raise ctx.unsupported("GroupQueryAttention of non-float tensors")
    if S > C:
        raise ctx.unsupported(f"GroupQueryAttention of {S} new tokens over a cache of {C}")

    def heads(src: str, n: int, offset: int, row: int) -> str:
        """[1, S, row] (n heads of hd from `offset`) → [1, n, S, hd]."""
        out = name("heads")
        view(ctx, src, (1, n, S, hd), offset, (S * row, hd, row, 1), out)
        return out

    if key:
        Q = heads(query, H, 0, width)
        K = heads(key, KV, 0, ctx.shape_of(key)[2])
        V = heads(value, KV, 0, ctx.shape_of(value)[2])
    else:  # packed QKV
        if width != (H + 2 * KV) * hd:
            raise ctx.unsupported(f"GroupQueryAttention's packed query of width {width} for {H}+2·{KV} heads of {hd}")
        Q, K, V = heads(query, H, 0, width), heads(query, KV, H * hd, width), heads(query, KV, (H + KV) * hd, width)

    # p = seqlens_k + 1 − S: the cache entries written before this call
    p = name("past_len")
    sl = ctx.value(seqlens_k)
    if ctx.builder.type_of(sl).dtype is not DType.I64:
        sl = ctx.emit("cast", [sl], {"to": "i64", "frac": 0}, name("seqlens64"))
    off = name("one_minus_s")
    ctx.bind(off, Const(np.asarray([1 - S], dtype=np.int64)))
    sl1 = name("seqlens1")
    reshape_to_ref(ctx, sl, (1,), sl1)
    ctx.bind(p, ctx.emit("binary", [ctx.value(sl1), ctx.value(off)], {"kind": "add"}, p))

    if int(a.get("do_rotary", 0)):
        if not cos_c or not sin_c:
            raise ctx.unsupported("GroupQueryAttention do_rotary without cos_cache/sin_cache")
        pos = name("pos")
        ar = name("arange_s")
        ctx.bind(ar, Const(np.arange(S, dtype=np.int64)))
        ctx.bind(pos, ctx.emit("binary", [ctx.value(p), ctx.value(ar)], {"kind": "add"}, pos))
        interleaved = bool(a.get("rotary_interleaved", 0))
        Q = rotate(ctx, name, Q, cos_c, sin_c, pos, interleaved)
        K = rotate(ctx, name, K, cos_c, sin_c, pos, interleaved)

    # the cache: entries p … p + S − 1 replaced by the new rows
    j = name("j")
    ctx.bind(j, Const(np.arange(C, dtype=np.int64)))
    idx = name("row")
    ctx.bind(idx, ctx.emit("binary", [ctx.value(j), ctx.value(p)], {"kind": "sub"}, idx))
    zero = name("zero")
    ctx.bind(zero, Const(np.zeros((1,), dtype=np.int64)))
    s_c = name("s")
    ctx.bind(s_c, Const(np.full((1,), S, dtype=np.int64)))
    ge = name("ge")
    ctx.bind(ge, ctx.emit("binary", [ctx.value(idx), ctx.value(zero)], {"kind": "ge"}, ge))
    lt = name("lt")
    ctx.bind(lt, ctx.emit("binary", [ctx.value(idx), ctx.value(s_c)], {"kind": "lt"}, lt))
    new_rows = name("new_rows")
    ctx.bind(new_rows, ctx.emit("binary", [ctx.value(ge), ctx.value(lt)], {"kind": "and"}, new_rows))
    sel = name("sel")
    reshape_to(ctx, new_rows, (1, 1, C, 1), sel)

    def write(past: str, cur: str, out: str) -> str:
        dst = out or name("present")
        rows = name("rows")
        ctx.bind(rows, ctx.emit("gather", [ctx.fx(cur), ctx.value(idx)], {"axis": 2}, rows))
        fo = ctx.frac_of(ctx.fx(past))
        ctx.bind(dst, ctx.emit("where", [ctx.value(sel), ctx.fx(rows), ctx.fx(past)], {"frac": fo}, dst))
        return dst

    Kc, Vc = write(past_k, K, present_k), write(past_v, V, present_v)
    if not y:
        return

    def repeat(x: str) -> str:
        if H == KV:
            return x
        rep = H // KV
        shape = ctx.shape_of(x)
        st = strides_of(shape)
        wide = name("rep")
        view(ctx, x, (1, KV, rep, C, hd), 0, (st[0], st[1], 0, st[2], st[3]), wide)
        out = name("gqa")
        reshape_to(ctx, wide, (1, H, C, hd), out)
        return out

    Kh, Vh = repeat(Kc), repeat(Vc)
    scale = float(a.get("scale", 0.0)) or 1.0 / math.sqrt(hd)
    fq = ctx.frac_of(ctx.fx(Q))
    fqs = max(0, min(30, fq + math.floor(-math.log2(scale))))
    sc = name("scale")
    ctx.bind(sc, Const(np.asarray(scale, dtype=np.float64)))
    qs = name("qs")
    ctx.bind(qs, ctx.emit("binary", [ctx.fx(Q), ctx.fx(sc)], {"kind": "mul", "frac": fqs}, qs))
    fk = ctx.frac_of(ctx.fx(Kh))
    fs = max(0, min(SCORE_FRAC_MAX, min(fqs, fk) - math.ceil(math.log2(max(hd, 1)))))
    scores = name("scores")
    ctx.bind(scores, ctx.emit("matmul", [ctx.fx(qs), ctx.fx(Kh)], {"frac": fs, "transpose_b": True}, scores))

    # query s (position p + s) sees keys j ≤ p + s, and with a window j > p + s − window
    rel = name("rel")
    jj, ss = np.arange(C).reshape(1, C), np.arange(S).reshape(S, 1)
    ctx.bind(rel, Const((jj - ss).reshape(1, 1, S, C).astype(np.int64)))
    allowed = name("causal")
    ctx.bind(allowed, ctx.emit("binary", [ctx.value(rel), ctx.value(p)], {"kind": "le"}, allowed))
    if window >= 0:
        relw = name("relw")
        ctx.bind(relw, Const((jj - ss + window).reshape(1, 1, S, C).astype(np.int64)))
        inw = name("in_window")
        ctx.bind(inw, ctx.emit("binary", [ctx.value(p), ctx.value(relw)], {"kind": "lt"}, inw))
        both = name("allowed")
        ctx.bind(both, ctx.emit("binary", [ctx.value(allowed), ctx.value(inw)], {"kind": "and"}, both))
        allowed = both
    neg = name("neginf")
    ctx.bind(neg, Const(np.asarray(-np.inf, dtype=np.float32)))
    masked = name("masked")
    ctx.bind(masked, ctx.emit("where", [ctx.value(allowed), ctx.fx(scores), ctx.fx(neg)], {"frac": fs}, masked))
    probs = name("probs")
    ctx.bind(probs, ctx.emit("softmax", [ctx.fx(masked)], {"frac": GATE_FRAC}, probs))
    fy = frac(ctx, y)
    y4 = name("y4")
    ctx.bind(y4, ctx.emit("matmul", [ctx.fx(probs), ctx.fx(Vh)], {"frac": fy}, y4))
    yt = name("yt")
    view(ctx, y4, (1, S, H, hd), 0, (H * S * hd, hd, S * hd, 1), yt)
    reshape_to(ctx, yt, (1, S, H * hd), y)


def reshape_to_ref(ctx: LoweringContext, ref: int, shape: tuple[int, ...], out: str) -> None:
    ctx.bind(out, ctx.emit("reshape", [ref], {"shape": list(shape)}, out))
