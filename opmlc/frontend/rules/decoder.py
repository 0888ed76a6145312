"""Rules for the ops transformer decoders add to the CNN set: Gather with run-time indices (the
IR's `gather`; `qgather` for a constant embedding table under `--weights`), Erf and Gelu (`unary` erf and compositions), Pow with a constant exponent
(products, sqrt, reciprocal), LayerNormalization and RMSNormalization (the IR's `norm`).

LLaMA's RMSNorm as exporters write it out (Pow, ReduceMean, Add, Sqrt, Div/Reciprocal, Mul) is
rewritten into RMSNormalization before lowering (opmlc/frontend/fuse_norm.py); Range, Cos/Sin
of positions, causal masks (Trilu, Equal, Where on constants) and shape arithmetic are constant
and folded (opmlc/frontend/fold.py); Softmax on any axis is in rules/softmax.py.
"""

from __future__ import annotations

from math import prod

import numpy as np
import onnx

from opmlc.frontend.context import Const, LoweringContext
from opmlc.frontend.rules import rule
from opmlc.frontend.rules.arith import binary, const, frac, tmp, unary
from opmlc.frontend.rules.shape import reshape_to
from opmlc.ir.ops.norm import Z_FRAC, eps_units
from opmlc.ir.types import DType


def gather_runtime(ctx: LoweringContext, node: onnx.NodeProto) -> None:
    """Gather whose indices are a run-time tensor: the IR's gather (see opmlc/ir/ops/gather.py
    for the out-of-range rule)."""
    data, idx = node.input[0], node.input[1]
    rank = len(ctx.shape_of(data))
    axis = ctx.attrs().get("axis", 0)
    axis = axis + rank if axis < 0 else axis
    if ctx.dtype(idx) not in (DType.I32, DType.I64):
        raise ctx.unsupported(f"Gather indices of type {ctx.dtype(idx).value}")
    out = node.output[0]
    table = ctx.const(data)
    if table is not None and table.ndim == 2 and axis == 0:  # the model's own (QDQ) quantized table
        from opmlc.frontend.rules.quantized_weights import qdq_gather_table

        qw = qdq_gather_table(ctx, data)
        if qw is not None:
            fo = min(ctx.policy.activation(out), ctx.frac_of(qw.scale))
            ctx.bind(out, ctx.emit("qgather", [*qw.operands(), ctx.value(idx)],
                                   {"block_size": qw.block_size, "frac": fo}, out))
            return
    if (table is not None and table.ndim == 2 and axis == 0 and ctx.quantizes_weights()
            and np.issubdtype(table.dtype, np.floating)):
        # --weights: an embedding table, quantized per row (one token's vector) or row block
        qw = ctx.qweight_ref(data, table)
        fo = min(ctx.policy.activation(out), ctx.frac_of(qw.scale))
        ctx.bind(out, ctx.emit("qgather", [*qw.operands(), ctx.value(idx)],
                               {"block_size": qw.block_size, "frac": fo}, out))
        return
    ctx.bind(out, ctx.emit("gather", [ctx.value(data), ctx.value(idx)], {"axis": axis}, out))


@rule("Erf")
def erf(ctx: LoweringContext, node: onnx.NodeProto) -> None:
    unary(ctx, "erf", node.input[0], node.output[0])


@rule("Gelu")
def gelu(ctx: LoweringContext, node: onnx.NodeProto) -> None:
    """x/2 · (1 + erf(x/√2)), or with approximate="tanh" x/2 · (1 + tanh(√(2/π)·(x + 0.044715·x³)))."""
    x, out = node.input[0], node.output[0]
    approx = ctx.attrs().get("approximate", "none")
    approx = approx.decode() if isinstance(approx, bytes) else approx
    if approx == "tanh":
        binary(ctx, "mul", x, x, tmp(node, "x2"))
        binary(ctx, "mul", tmp(node, "x2"), x, tmp(node, "x3"))
        binary(ctx, "mul", tmp(node, "x3"), const(ctx, tmp(node, "c"), 0.044715), tmp(node, "cx3"))
        binary(ctx, "add", x, tmp(node, "cx3"), tmp(node, "inner"))
        binary(ctx, "mul", tmp(node, "inner"), const(ctx, tmp(node, "k"), np.sqrt(2 / np.pi)), tmp(node, "arg"))
        unary(ctx, "tanh", tmp(node, "arg"), tmp(node, "phi"))
    elif approx == "none":
        binary(ctx, "mul", x, const(ctx, tmp(node, "rsqrt2"), 1 / np.sqrt(2)), tmp(node, "arg"))
        unary(ctx, "erf", tmp(node, "arg"), tmp(node, "phi"))
    else:
        raise ctx.unsupported(f"Gelu approximate={approx!r}")
    binary(ctx, "add", tmp(node, "phi"), const(ctx, tmp(node, "one"), 1.0), tmp(node, "onep"))
    binary(ctx, "mul", x, tmp(node, "onep"), tmp(node, "xp"))
    binary(ctx, "mul", tmp(node, "xp"), const(ctx, tmp(node, "half"), 0.5), out)


@rule("Pow")
def pow_(ctx: LoweringContext, node: onnx.NodeProto) -> None:
    """x^p for a constant scalar p that is an integer or a half-integer with |p| ≤ 64:
    x^(k/2) = sqrt(x)^k, the power by square-and-multiply, a negative p by one reciprocal."""
    x, out = node.input[0], node.output[0]
    p = ctx.const(node.input[1])
    if p is None or np.size(p) != 1 or not (2 * float(np.asarray(p).ravel()[0])).is_integer() \
            or abs(float(np.asarray(p).ravel()[0])) > 64:
        from opmlc.frontend.rules.logs import pow_exp_log

        pow_exp_log(ctx, node)  # any other exponent: exp(y · ln x)
        return
    p = float(np.asarray(p).ravel()[0])
    if ctx.dtype(x) is not DType.FX32 and (p < 0 or not p.is_integer()):
        raise ctx.unsupported(f"Pow of an integer tensor by {p}")
    base, m = x, int(abs(p))
    if not p.is_integer():
        base, m = tmp(node, "sqrt"), int(abs(2 * p))
        unary(ctx, "sqrt", x, base)
    pos = out if p >= 0 else tmp(node, "pos")
    if m == 0:
        ctx.bind(pos, Const(np.ones(ctx.shape_of(x), dtype=np.float32 if ctx.dtype(x) is DType.FX32 else np.int64)))
    else:
        # Square-and-multiply, planned first so that the last product is written under the
        # output's own name and so gets its (possibly calibrated) fractional bits.
        plan, result, sq, k, i = [], None, base, m, 0
        while True:
            if k & 1:
                if result is None:
                    result = sq
                else:
                    plan.append((result, sq, tmp(node, f"prod{i}")))
                    result = tmp(node, f"prod{i}")
            k >>= 1
            if not k:
                break
            plan.append((sq, sq, tmp(node, f"sq{i}")))
            sq, i = tmp(node, f"sq{i}"), i + 1
        if not plan:
            ctx.bind(pos, ctx.sym(result))
        else:
            last = plan[-1][2]
            for a, b, dst in plan:
                rename = (lambda n: pos if n == last else n)  # noqa: E731
                binary(ctx, "mul", rename(a), rename(b), rename(dst))
    if p < 0:
        binary(ctx, "div", const(ctx, tmp(node, "one"), 1.0), pos, out)


def _norm(ctx: LoweringContext, node: onnx.NodeProto, kind: str) -> None:
    a = ctx.attrs()
    x, out = node.input[0], node.output[0]
    shape = ctx.shape_of(x)
    axis = a.get("axis", -1)
    axis = axis + len(shape) if axis < 0 else axis
    if any(o for o in node.output[1:]):
        if kind != "layer":
            raise ctx.unsupported(f"{node.op_type}'s InvStdDev output")
        _norm_statistics(ctx, node, axis, float(a.get("epsilon", 1e-5)))
    if a.get("stash_type", 1) != 1:
        raise ctx.unsupported(f"{node.op_type} with stash_type {a['stash_type']}")
    n = prod(shape[axis:])
    flat = x
    if axis != len(shape) - 1:
        flat = tmp(node, "flat")
        reshape_to(ctx, x, tuple(shape[:axis]) + (n,), flat)
    params = []
    for name in node.input[1:3]:
        if not name:
            continue
        s = ctx.sym(name)
        if isinstance(s, Const):
            arr = np.broadcast_to(s.array, shape[axis:]).reshape(n)
            key = tmp(node, f"{name}/vec")
            ctx.bind(key, Const(np.ascontiguousarray(arr)))
            params.append(ctx.fx(key))
        else:
            if ctx.shape_of(name) != tuple(shape[axis:]):
                raise ctx.unsupported(f"{node.op_type} with a run-time scale or bias that needs broadcasting")
            key = tmp(node, f"{name}/vec")
            reshape_to(ctx, name, (n,), key)
            params.append(ctx.fx(key))
    fx_in = ctx.fx(flat)
    if len(params) == 2:  # the bias's bits must sit within 31 of the accumulator's (see ops/norm.py)
        fg, fb = ctx.frac_of(params[0]), ctx.frac_of(params[1])
        want = min(max(fb, Z_FRAC + fg - 31), Z_FRAC + fg)
        if want != fb:
            params[1] = ctx.emit("cast", [params[1]], {"to": "fx32", "frac": want}, tmp(node, "bias_q"))
    f = ctx.frac_of(fx_in)
    attrs = {"kind": kind, "eps": eps_units(float(a.get("epsilon", 1e-5)), f, n), "frac": frac(ctx, out)}
    normed = out if flat == x else tmp(node, "normed")
    ctx.bind(normed, ctx.emit("norm", [fx_in, *params], attrs, normed))
    if normed != out:
        reshape_to(ctx, normed, tuple(shape), out)


def _norm_statistics(ctx: LoweringContext, node: onnx.NodeProto, axis: int, eps: float) -> None:
    """LayerNormalization's optional Mean and InvStdDev outputs, op by op: mean, the mean of
    squared deviations (at the input's bits, or the default if more), + eps, sqrt, one
    reciprocal, each rounded to its bits. Y itself is still the one `norm` node."""
    x = node.input[0]
    axes = list(range(axis, len(ctx.shape_of(x))))
    mean = node.output[1] if len(node.output) > 1 and node.output[1] else tmp(node, "mean")
    ref = ctx.fx(x)
    ctx.bind(mean, ctx.emit("reduce", [ref], {"kind": "mean", "axes": axes, "keepdims": 1, "frac": frac(ctx, mean)}, mean))
    if len(node.output) < 3 or not node.output[2]:
        return
    f = max(ctx.frac_of(ref), frac(ctx, tmp(node, "var")))  # the variance keeps the input's bits
    dev = ctx.emit("binary", [ref, ctx.value(mean)], {"kind": "sub", "frac": f}, tmp(node, "dev"))
    dev2 = ctx.emit("binary", [dev, dev], {"kind": "mul", "frac": f}, tmp(node, "dev2"))
    var = ctx.emit("reduce", [dev2], {"kind": "mean", "axes": axes, "keepdims": 1, "frac": f}, tmp(node, "var"))
    ctx.bind(tmp(node, "vare"), ctx.emit("binary", [var, ctx.value(const(ctx, tmp(node, "eps"), eps))], {"kind": "add", "frac": f},
                                         tmp(node, "vare")))
    unary(ctx, "sqrt", tmp(node, "vare"), tmp(node, "std"))
    binary(ctx, "div", const(ctx, tmp(node, "one"), 1.0), tmp(node, "std"), node.output[2])


@rule("LayerNormalization")
def layer_norm(ctx: LoweringContext, node: onnx.NodeProto) -> None:
    _norm(ctx, node, "layer")


@rule("RMSNormalization", "SimplifiedLayerNormalization")
def rms_norm(ctx: LoweringContext, node: onnx.NodeProto) -> None:
    _norm(ctx, node, "rms")
