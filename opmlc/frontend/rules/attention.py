"""Rule for ONNX's Attention (opsets 23–24), lowered onto the IR's `matmul` (run-time K and V),
`softmax`, `view`, `concat`, `where`, `binary`, `unary` tanh and `reduce`.

Y = softmax(mask(softcap(scale · Q·Kᵀ))) · V per head, with 3-D inputs split into heads and
joined back, the KV cache (past_key/past_value → present_key/present_value) as a concat on the
sequence axis, grouped-query attention as K/V heads repeated by a stride-0 view, and the masks
as `where`: a masked score becomes the most negative fx32 value, whose exp is exactly 0 in
the softmax (the −inf of the float definition). A row with every key masked gives zeros, as
ONNX's reference does. Masks: is_causal (bottom-right aligned after a cache), a bool or float
attn_mask (broadcast; a shorter last axis is padded as masked), nonpad_kv_seqlen (opset 24),
sliding windows (left/right_window_size, opset 25).

Bits: Q is pre-multiplied by the scale (it gains log2(1/scale) bits), so the scores are one
matmul rounded once; they keep min(bits of Q·scale, bits of K) − ⌈log2 head_size⌉ (at most 24),
so a product of typical magnitudes never saturates. The probabilities are exact to 2^−(fo+1)
+ 3e-7 (ops/softmax.py), Y is one more int64 accumulation.
"""

from __future__ import annotations

import math

import numpy as np
import onnx

from opmlc.frontend.context import Const, LoweringContext, NodeNames
from opmlc.frontend.rules import rule
from opmlc.frontend.rules.arith import frac
from opmlc.frontend.rules.movement import strides_of, view
from opmlc.frontend.rules.shape import reshape_to
from opmlc.ir.types import DType

GATE_FRAC = 30
SCORE_FRAC_MAX = 24


@rule("Attention")
def attention(ctx: LoweringContext, node: onnx.NodeProto) -> None:
    a = ctx.attrs()
    name = NodeNames(node)
    ins = list(node.input) + [""] * 7
    q, k, v, mask, past_k, past_v, nonpad = ins[:7]
    outs = list(node.output) + [""] * 4
    y, present_k, present_v, qk_out = outs[:4]
    mode = int(a.get("qk_matmul_output_mode", 0))
    softcap = float(a.get("softcap", 0.0))
    causal = bool(a.get("is_causal", 0))
    left, right = int(a.get("left_window_size", -1)), int(a.get("right_window_size", -1))
    for t in (q, k, v):
        if ctx.dtype(t) is not DType.FX32:
            raise ctx.unsupported("Attention of non-float tensors")

    def heads(x: str, n_heads: int) -> str:
        """[B, S, H·d] → [B, H, S, d] (a 4-D input is already so)."""
        shape = ctx.shape_of(x)
        if len(shape) == 4:
            return x
        b, s, hd = shape
        d = hd // n_heads
        out = name("heads")
        view(ctx, x, (b, n_heads, s, d), 0, (s * hd, d, hd, 1), out)
        return out

    q_rank = len(ctx.shape_of(q))
    q_heads = int(a.get("q_num_heads", 0)) or ctx.shape_of(q)[1]
    kv_heads = int(a.get("kv_num_heads", 0)) or ctx.shape_of(k)[1]
    Q, K, V = heads(q, q_heads), heads(k, kv_heads), heads(v, kv_heads)

    # the KV cache
    def cached(past: str, cur: str, out: str) -> str:
        if not past:
            if out:
                reshape_to(ctx, cur, tuple(ctx.shape_of(cur)), out)
            return cur
        dst = out or name("present")
        fo = frac(ctx, out) if out else min(ctx.frac_of(ctx.fx(past)), ctx.frac_of(ctx.fx(cur)))
        ctx.bind(dst, ctx.emit("concat", [ctx.fx(past), ctx.fx(cur)], {"axis": 2, "frac": fo}, dst))
        return dst

    past_len = ctx.shape_of(past_k)[2] if past_k else 0
    K, V = cached(past_k, K, present_k), cached(past_v, V, present_v)
    batch, _, s_q, d = ctx.shape_of(Q)
    t_kv = ctx.shape_of(K)[2]

    # grouped-query attention: each KV head serves q_heads / kv_heads query heads
    def repeat(x: str) -> str:
        if q_heads == kv_heads:
            return x
        if q_heads % kv_heads:
            raise ctx.unsupported(f"Attention with {q_heads} query heads over {kv_heads} KV heads")
        rep = q_heads // kv_heads
        shape = ctx.shape_of(x)
        st = strides_of(shape)
        wide = name("rep")
        view(ctx, x, (shape[0], kv_heads, rep, shape[2], shape[3]), 0, (st[0], st[1], 0, st[2], st[3]), wide)
        out = name("gqa")
        reshape_to(ctx, wide, (shape[0], q_heads, shape[2], shape[3]), out)
        return out

    K, V = repeat(K), repeat(V)

    # scores = (scale·Q)·Kᵀ, one accumulation
    scale = float(a["scale"]) if "scale" in a else 1.0 / math.sqrt(d)
    fq = ctx.frac_of(ctx.fx(Q))
    fqs = max(0, min(30, fq + math.floor(-math.log2(scale)))) if scale > 0 else fq
    sc = name("scale")
    ctx.bind(sc, Const(np.asarray(scale, dtype=np.float64)))
    qs = name("qs")
    ctx.bind(qs, ctx.emit("binary", [ctx.fx(Q), ctx.fx(sc)], {"kind": "mul", "frac": fqs}, qs))
    fk = ctx.frac_of(ctx.fx(K))
    fs = max(0, min(SCORE_FRAC_MAX, min(fqs, fk) - math.ceil(math.log2(max(d, 1)))))
    raw = qk_out if (qk_out and mode == 0) else name("scores")
    if raw == qk_out:
        fs = min(fs, frac(ctx, qk_out))
    ctx.bind(raw, ctx.emit("matmul", [ctx.fx(qs), ctx.fx(K)], {"frac": fs, "transpose_b": True}, raw))
    scores = raw

    if softcap > 0:
        fc = max(0, min(30, math.floor(30 - math.log2(softcap))))
        inv = name("inv_cap")
        ctx.bind(inv, Const(np.asarray(1.0 / softcap)))
        div = name("capdiv")
        ctx.bind(div, ctx.emit("binary", [ctx.fx(scores), ctx.fx(inv)], {"kind": "mul", "frac": fs}, div))
        th = name("tanh")
        ctx.bind(th, ctx.emit("unary", [ctx.fx(div)], {"kind": "tanh", "frac": GATE_FRAC}, th))
        cap = name("cap")
        ctx.bind(cap, Const(np.asarray(softcap)))
        capped = qk_out if (qk_out and mode == 1) else name("capped")
        fo = frac(ctx, qk_out) if capped == qk_out else min(fc, 24)
        ctx.bind(capped, ctx.emit("binary", [ctx.fx(th), ctx.fx(cap)], {"kind": "mul", "frac": fo}, capped))
        scores = capped
    elif qk_out and mode == 1:
        reshape_to(ctx, scores, tuple(ctx.shape_of(scores)), qk_out)

    # masks: `allowed` (bool, broadcastable to [B, H, S, T]) and an additive float mask
    allowed: str | None = None
    additive: str | None = None

    def both(x: str | None, y: str) -> str:
        if x is None:
            return y
        out = name("and")
        ctx.bind(out, ctx.emit("binary", [ctx.value(x), ctx.value(y)], {"kind": "and"}, out))
        return out

    if mask:
        m = mask
        m_shape = ctx.shape_of(m)
        if m_shape[-1] < t_kv:  # a shorter mask: the missing keys are masked
            padded = name("mask_pad")
            st = strides_of(m_shape)
            shape = (*m_shape[:-1], t_kv)
            is_bool = ctx.dtype(m) is DType.BOOL
            fill = 0 if is_bool else -(1 << 31)
            view(ctx, m, shape, 0, st, padded, lo=[0] * len(shape), hi=list(m_shape), fill=fill)
            m = padded
        if ctx.dtype(m) is DType.BOOL:
            allowed = m
        else:
            additive = m
    if causal:
        i = np.arange(s_q).reshape(s_q, 1)
        j = np.arange(t_kv).reshape(1, t_kv)
        if nonpad:  # per batch: j ≤ i + nonpad[b] − S
            rel = name("rel")
            ctx.bind(rel, Const((j - i + s_q).astype(np.int64)))
            lens = name("lens")
            reshape_to(ctx, nonpad, (batch, 1, 1, 1), lens)
            c = name("causal")
            ctx.bind(c, ctx.emit("binary", [ctx.value(rel), _i64(ctx, lens, name)], {"kind": "le"}, c))
        else:
            c = name("causal")
            ctx.bind(c, Const(j <= i + past_len))
        allowed = both(allowed, c)
    if left >= 0 or right >= 0:  # sliding window: p − left ≤ j ≤ p + right, p = i + offset
        i = np.arange(s_q).reshape(s_q, 1)
        j = np.arange(t_kv).reshape(1, t_kv)
        if nonpad and not past_k:  # offset = nonpad[b] − S, per batch
            rel = name("rel")
            ctx.bind(rel, Const((i - j - s_q).astype(np.int64)))
            lens = name("lens")
            reshape_to(ctx, nonpad, (batch, 1, 1, 1), lens)
            diff = name("diff")
            ctx.bind(diff, ctx.emit("binary", [ctx.value(rel), _i64(ctx, lens, name)], {"kind": "add"}, diff))
            for size, kind, bound in ((left, "le", left), (right, "ge", -right)):
                if size < 0:  # −1: that side is unbounded
                    continue
                lim = name("lim")
                ctx.bind(lim, Const(np.asarray(bound, dtype=np.int64)))
                w = name("window")
                ctx.bind(w, ctx.emit("binary", [ctx.value(diff), ctx.value(lim)], {"kind": kind}, w))
                allowed = both(allowed, w)
        else:
            diff = i + past_len - j
            ok = np.ones(diff.shape, dtype=bool)
            if left >= 0:
                ok &= diff <= left
            if right >= 0:
                ok &= -diff <= right
            w = name("window")
            ctx.bind(w, Const(ok))
            allowed = both(allowed, w)
    if nonpad:
        jj = name("j")
        ctx.bind(jj, Const(np.arange(t_kv, dtype=np.int64).reshape(1, 1, 1, t_kv)))
        lens = name("lens")
        reshape_to(ctx, nonpad, (batch, 1, 1, 1), lens)
        pm = name("pad_mask")
        ctx.bind(pm, ctx.emit("binary", [ctx.value(jj), _i64(ctx, lens, name)], {"kind": "lt"}, pm))
        allowed = both(allowed, pm)

    biased = scores
    if additive is not None:
        out = name("biased")
        ctx.bind(out, ctx.emit("binary", [ctx.fx(scores), ctx.fx(additive)], {"kind": "add",
                                                                             "frac": ctx.frac_of(ctx.fx(scores))}, out))
        biased = out
    if allowed is not None:
        neg = name("neginf")
        ctx.bind(neg, Const(np.asarray(-np.inf, dtype=np.float32)))
        out = name("masked")
        ctx.bind(out, ctx.emit("where", [ctx.value(allowed), ctx.fx(biased), ctx.fx(neg)],
                               {"frac": ctx.frac_of(ctx.fx(biased))}, out))
        biased = out
    if qk_out and mode == 2:
        reshape_to(ctx, biased, tuple(ctx.shape_of(biased)), qk_out)
    elif qk_out and mode not in (0, 1, 3):
        raise ctx.unsupported(f"Attention qk_matmul_output_mode {mode}")

    probs = name("probs")
    ctx.bind(probs, ctx.emit("softmax", [ctx.fx(biased)], {"frac": GATE_FRAC}, probs))
    if allowed is not None:  # a row with no allowed key gives zeros
        anyk = name("any")
        ai = name("allowed_i")
        ctx.bind(ai, ctx.emit("cast", [ctx.value(allowed)], {"to": "i32", "frac": 0}, ai))
        rank = len(ctx.shape_of(ai))
        ctx.bind(anyk, ctx.emit("reduce", [ctx.value(ai)], {"kind": "max", "axes": [rank - 1], "keepdims": 1}, anyk))
        zero_i = name("zero_i")
        ctx.bind(zero_i, Const(np.zeros((), dtype=np.int32)))
        dead = name("dead")
        ctx.bind(dead, ctx.emit("binary", [ctx.value(anyk), ctx.value(zero_i)], {"kind": "eq"}, dead))
        zero = name("zero")
        ctx.bind(zero, Const(np.zeros((), dtype=np.float32)))
        guarded = name("guarded")
        ctx.bind(guarded, ctx.emit("where", [ctx.value(dead), ctx.fx(zero), ctx.fx(probs)], {"frac": GATE_FRAC}, guarded))
        probs = guarded
    if qk_out and mode == 3:
        ctx.bind(qk_out, ctx.emit("cast", [ctx.fx(probs)], {"to": "fx32", "frac": frac(ctx, qk_out)}, qk_out))

    if not y:
        return
    fy = frac(ctx, y)
    if q_rank == 4:
        ctx.bind(y, ctx.emit("matmul", [ctx.fx(probs), ctx.fx(V)], {"frac": fy}, y))
        return
    y4 = name("y4")
    ctx.bind(y4, ctx.emit("matmul", [ctx.fx(probs), ctx.fx(V)], {"frac": fy}, y4))
    dv = ctx.shape_of(V)[3]
    yt = name("yt")
    view(ctx, y4, (batch, s_q, q_heads, dv), 0, (q_heads * s_q * dv, dv, s_q * dv, 1), yt)
    reshape_to(ctx, yt, (batch, s_q, q_heads * dv), y)


def _i64(ctx: LoweringContext, x: str, name: NodeNames) -> int:
    ref = ctx.value(x)
    if ctx.builder.type_of(ref).dtype is DType.I64:
        return ref
    return ctx.emit("cast", [ref], {"to": "i64", "frac": 0}, name("i64"))
