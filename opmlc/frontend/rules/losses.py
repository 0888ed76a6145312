"""Rules for the loss ops NegativeLogLikelihoodLoss and SoftmaxCrossEntropyLoss, lowered onto
`binary` (a one-hot compare of the run-time labels with the class indices), `where`,
`reduce` and, for SoftmaxCrossEntropyLoss, the LogSoftmax of rules/logs.py.

loss[n, d…] = −input[n, t, d…] · w[t] with t = target[n, d…] (0 where t = ignore_index),
picked exactly: the one-hot mask selects one class per position and the sum over the class
axis adds zeros to it. Reductions: none, sum, or mean = Σ loss / Σ w[t] (the count of
positions not ignored without weights), one division.
"""

from __future__ import annotations

from math import prod

import numpy as np
import onnx

from opmlc.frontend.context import Const, LoweringContext
from opmlc.frontend.rules import rule
from opmlc.frontend.rules.arith import binary, frac, tmp
from opmlc.frontend.rules.logs import bin_, log_sum_exp, sum_frac
from opmlc.frontend.rules.shape import reshape_to
from opmlc.ir.types import DType


def nll(ctx: LoweringContext, node: onnx.NodeProto, logp: str, target: str, weight: str | None, out: str) -> None:
    a = ctx.attrs()
    reduction = a.get("reduction", b"mean")
    reduction = reduction.decode() if isinstance(reduction, bytes) else reduction
    ignore = a.get("ignore_index")
    shape = ctx.shape_of(logp)
    n, c, rest = shape[0], shape[1], tuple(shape[2:])
    if ctx.dtype(target) not in (DType.I32, DType.I64):
        raise ctx.unsupported("a loss target that is not an integer tensor")
    # the one-hot mask [N, C, d…] of the target classes (none where the target is ignored)
    t1 = tmp(node, "t1")
    reshape_to(ctx, target, (n, 1, *rest), t1)
    ctx.bind(tmp(node, "classes"), Const(np.arange(c, dtype=np.int64).reshape((1, c) + (1,) * len(rest))))
    binary(ctx, "eq", t1, tmp(node, "classes"), tmp(node, "hot"))
    hot = tmp(node, "hot")
    valid = None
    if ignore is not None:
        ctx.bind(tmp(node, "ignore"), Const(np.asarray(int(ignore), dtype=np.int64)))
        binary(ctx, "ne", t1, tmp(node, "ignore"), tmp(node, "valid"))
        binary(ctx, "and", hot, tmp(node, "valid"), tmp(node, "hot_valid"))
        hot, valid = tmp(node, "hot_valid"), tmp(node, "valid")
    f = ctx.frac_of(ctx.fx(logp))
    ctx.bind(tmp(node, "zero"), Const(np.zeros((), dtype=np.float32)))

    def pick(src: str, what: str, fo: int) -> str:
        """Σ_c hot · src over the class axis: the target class's value (0 if none)."""
        sel = tmp(node, f"{what}_sel")
        ctx.bind(sel, ctx.emit("where", [ctx.value(hot), ctx.fx(src), ctx.fx(tmp(node, "zero"))], {"frac": fo}, sel))
        picked = tmp(node, what)
        ctx.bind(picked, ctx.emit("reduce", [ctx.value(sel)], {"kind": "sum", "axes": [1], "keepdims": 0, "frac": fo},
                                  picked))
        return picked

    picked = pick(logp, "picked", f)
    fo = frac(ctx, out)
    each = out if reduction == "none" else tmp(node, "each")
    fe = fo if reduction == "none" else f
    wt = None
    if weight is not None:
        w = tmp(node, "w")
        reshape_to(ctx, weight, (1, c) + (1,) * len(rest), w)
        wt = pick(w, "wt", ctx.frac_of(ctx.fx(w)))
        bin_(ctx, "mul", picked, wt, tmp(node, "wl"), fe)
        bin_(ctx, "sub", tmp(node, "zero"), tmp(node, "wl"), each, fe)
    else:
        bin_(ctx, "sub", tmp(node, "zero"), picked, each, fe)
    if reduction == "none":
        return
    if reduction not in ("sum", "mean"):
        raise ctx.unsupported(f"loss reduction {reduction!r}")
    count = n * prod(rest)
    axes = list(range(1 + len(rest)))
    total = out if reduction == "sum" else tmp(node, "total")
    ft = fo if reduction == "sum" else sum_frac(count, f)
    ctx.bind(total, ctx.emit("reduce", [ctx.fx(each)], {"kind": "sum", "axes": axes, "keepdims": 0, "frac": ft}, total))
    if reduction == "sum":
        return
    if wt is not None:
        den = tmp(node, "wsum")
        fw = sum_frac(count, ctx.frac_of(ctx.fx(wt)))
        ctx.bind(den, ctx.emit("reduce", [ctx.fx(wt)], {"kind": "sum", "axes": axes, "keepdims": 0, "frac": fw}, den))
    elif valid is not None:
        den = tmp(node, "count")
        vi = tmp(node, "valid_i")
        ctx.bind(vi, ctx.emit("cast", [ctx.value(valid)], {"to": "i64", "frac": 0}, vi))
        ctx.bind(den, ctx.emit("reduce", [ctx.value(vi)], {"kind": "sum", "axes": list(range(2 + len(rest))),
                                                           "keepdims": 0}, den))
    else:
        den = tmp(node, "n")
        ctx.bind(den, Const(np.asarray(float(count))))
    binary(ctx, "div", total, den, out)


@rule("NegativeLogLikelihoodLoss")
def nll_loss(ctx: LoweringContext, node: onnx.NodeProto) -> None:
    weight = node.input[2] if len(node.input) > 2 and node.input[2] else None
    nll(ctx, node, node.input[0], node.input[1], weight, node.output[0])


@rule("SoftmaxCrossEntropyLoss")
def softmax_cross_entropy(ctx: LoweringContext, node: onnx.NodeProto) -> None:
    scores = node.input[0]
    if len(ctx.shape_of(scores)) < 2:
        raise ctx.unsupported("SoftmaxCrossEntropyLoss of scores of rank < 2")
    log_prob = node.output[1] if len(node.output) > 1 and node.output[1] else tmp(node, "log_prob")
    d, lg = log_sum_exp(ctx, node, scores, [1])
    bin_(ctx, "sub", d, lg, log_prob, frac(ctx, log_prob) if log_prob in node.output else ctx.frac_of(ctx.fx(scores)))
    weight = node.input[2] if len(node.input) > 2 and node.input[2] else None
    nll(ctx, node, log_prob, node.input[1], weight, node.output[0])
