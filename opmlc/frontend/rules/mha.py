"""com.microsoft MultiHeadAttention (onnxruntime-genai's builder emits it where neither
GroupQueryAttention nor the packed Attention fits the execution provider and precision, e.g.
`-e cpu -p fp16`), rewritten as ONNX's Attention and lowered by rules/attention.py, the one
definition of scaled dot-product attention here.

The mapping (onnxruntime's CPU semantics): 3-D query [B, S, N·d], key [B, L, N·d] and value
[B, L, N·dv] as Attention's 3-D inputs with N query and N key/value heads; past_key/past_value
[B, N, P, d] concatenated before the new keys (present = [B, N, P + L, d]); `unidirectional`
as is_causal (query s sees keys j ≤ P + s); `scale` (default 1/√d); key_padding_mask [B, P + L]
(1 keep, 0 pad) as a bool mask [B, 1, 1, P + L]; attention_bias [B|1, N|1, S, P + L] added to the
scores. onnxruntime adds mask_filter_value (−10000) to a masked score where opmlc gives the key
exactly zero weight: the same probabilities in float32 unless every key of a row is masked,
where onnxruntime averages over the filtered scores and opmlc (ONNX's Attention) gives zeros.
Refused by name: packed QKV/KV, the bias input, key padding masks of other shapes, both masks
together, past_sequence_length (buffer sharing), cache_indirection and the qk output.

Error bound: rules/attention.py's (one rounding for the scores, softmax within 2^−(fo+1) +
3e-7, one more for the weighted sum).
"""

from __future__ import annotations

import numpy as np
import onnx

from opmlc.frontend.context import Const, LoweringContext
from opmlc.frontend.rules import rule
from opmlc.frontend.rules.attention import attention
from opmlc.frontend.rules.shape import reshape_to
from opmlc.ir.types import DType

MS = "com.microsoft"


@rule(f"{MS}:MultiHeadAttention")
def multi_head_attention(ctx: LoweringContext, node: onnx.NodeProto) -> None:
    a = ctx.attrs()
    ins = list(node.input) + [""] * 10
    q, k, v, bias, pad_mask, attn_bias, past_k, past_v, past_len, cache_ind = ins[:10]
    outs = list(node.output) + [""] * 4
    if outs[3]:
        raise ctx.unsupported("MultiHeadAttention's qk output")
    if bias:
        raise ctx.unsupported("MultiHeadAttention with a bias input (add it to Q, K and V before the op)")
    if past_len or cache_ind:
        raise ctx.unsupported("MultiHeadAttention with past_sequence_length or cache_indirection (a shared buffer)")
    if not k or not v:
        raise ctx.unsupported("MultiHeadAttention with packed QKV (no key and value inputs)")
    for t in (q, k, v):
        if len(ctx.shape_of(t)) != 3:
            raise ctx.unsupported(f"MultiHeadAttention with a {len(ctx.shape_of(t))}-D {t!r} (packed or cross-attention"
                                  " cache); 3-D query, key and value are lowered")
    if bool(past_k) != bool(past_v):
        raise ctx.unsupported("MultiHeadAttention with only one of past_key and past_value")
    if pad_mask and attn_bias:
        raise ctx.unsupported("MultiHeadAttention with both key_padding_mask and attention_bias")
    n = int(a["num_heads"])
    B = ctx.shape_of(q)[0]
    total = ctx.shape_of(k)[1] + (ctx.shape_of(past_k)[2] if past_k else 0)

    mask = attn_bias
    if pad_mask:
        if ctx.shape_of(pad_mask) != (B, total):
            raise ctx.unsupported(f"MultiHeadAttention's key_padding_mask of shape {list(ctx.shape_of(pad_mask))}"
                                  f" (lowered: [batch, total_sequence_length] = {[B, total]})")
        base = node.output[0] or node.name
        keep = f"{base}/keep"
        ref = ctx.value(pad_mask)
        if ctx.dtype(pad_mask) is not DType.BOOL:
            zero = f"{base}/mask_zero"
            ctx.bind(zero, Const(np.zeros((), dtype=np.int64 if ctx.dtype(pad_mask) is DType.I64 else np.int32)))
            ref = ctx.emit("binary", [ref, ctx.value(zero)], {"kind": "ne"}, f"{base}/keep_flat")
        ctx.bind(f"{base}/keep_flat", ref)
        reshape_to(ctx, f"{base}/keep_flat", (B, 1, 1, total), keep)
        mask = keep

    attrs = {"q_num_heads": n, "kv_num_heads": n, "is_causal": int(a.get("unidirectional", 0))}
    if float(a.get("scale", 0.0)):
        attrs["scale"] = float(a["scale"])
    saved = ctx.node
    ctx.node = onnx.helper.make_node("Attention", [q, k, v, mask, past_k, past_v], outs[:3], name=node.name, **attrs)
    try:
        attention(ctx, ctx.node)
    finally:
        ctx.node = saved
