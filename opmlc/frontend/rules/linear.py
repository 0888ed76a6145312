"""Rules for Gemm and MatMul, both lowered onto the IR's `matmul` (bias fused when it is a
constant vector). Transposes and the alpha/beta scales of constant operands are folded into
the constants before quantization. Under `--weights int8|int4` a constant weight matrix
becomes a quantized weight and the product the IR's `qmatmul` (same bias fusion)."""

from __future__ import annotations

import math

import numpy as np
import onnx

from opmlc.frontend.context import Const, LoweringContext
from opmlc.frontend.rules import rule
from opmlc.frontend.rules.shape import reshape_to


@rule("Gemm")
def gemm(ctx: LoweringContext, node: onnx.NodeProto) -> None:
    a = ctx.attrs()
    alpha, beta = float(a.get("alpha", 1.0)), float(a.get("beta", 1.0))
    trans_a, trans_b = a.get("transA", 0), a.get("transB", 0)
    out = node.output[0]
    a_name, b_name = node.input[0], node.input[1]
    if trans_a:
        a_const = ctx.const(a_name)
        if a_const is None:  # a run-time A: a transposing view
            from opmlc.frontend.rules.movement import view

            m, k = ctx.shape_of(a_name)
            view(ctx, a_name, (k, m), 0, (1, k), f"{a_name}/T")
            a_name = f"{a_name}/T"
        else:
            a_name = f"{a_name}/T"
            ctx.bind(a_name, Const(a_const.T))
    b_const = ctx.const(b_name)
    if b_const is not None:  # weights are stored [N, K] (see the IR's matmul)
        if not trans_b or alpha != 1.0:
            b_name = f"{b_name}.T" if alpha == 1.0 else f"{b_name}.T*alpha"
            ctx.bind(b_name, Const(np.ascontiguousarray(alpha * (b_const if trans_b else b_const.T))))
    elif alpha != 1.0:  # a run-time B: alpha scales A instead (one more rounding, at A's bits)
        from opmlc.frontend.rules.logs import bin_

        f = ctx.frac_of(ctx.fx(a_name)) - max(0, math.ceil(math.log2(abs(alpha)))) if alpha else 0
        ctx.bind(f"{out}/alpha", Const(np.asarray(alpha)))
        bin_(ctx, "mul", a_name, f"{out}/alpha", f"{a_name}*alpha", max(0, f))
        a_name = f"{a_name}*alpha"
    transpose_b = bool(b_const is not None or trans_b)
    op, inputs, mm_attrs = product_operands(ctx, a_name, b_name, transpose_b)
    n = ctx.shape_of(b_name)[0 if transpose_b else 1]
    c_name = node.input[2] if len(node.input) > 2 and node.input[2] else None
    bias_vector = None
    if c_name is not None:
        c_const = ctx.const(c_name)
        if c_const is not None:
            c = beta * np.broadcast_to(c_const, (ctx.shape_of(a_name)[0], n))
            if np.all(c == c[:1]):  # the same row everywhere: a bias vector, fused
                bias_vector = c[0]
                plain = beta == 1.0 and c_const.shape == (n,)
                bias_name = c_name if plain else f"{c_name}/bias"
        elif beta != 1.0:  # a run-time C: scaled by beta first, at its own bits
            from opmlc.frontend.rules.logs import bin_

            f = ctx.frac_of(ctx.fx(c_name)) - max(0, math.ceil(math.log2(abs(beta)))) if beta else 0
            ctx.bind(f"{out}/beta", Const(np.asarray(beta)))
            bin_(ctx, "mul", c_name, f"{out}/beta", f"{c_name}*beta", max(0, f))
            c_name = f"{c_name}*beta"
    # at most the product's bits (few input bits, as for large activations, leave fewer)
    prod_frac = product_frac(ctx, op, inputs)
    frac = min(ctx.policy.activation(out), prod_frac)
    mm_attrs = {"frac": frac, "transpose_b": transpose_b} if op == "matmul" else {**mm_attrs, "frac": frac}
    if bias_vector is not None:
        inputs.append(ctx.const_ref(bias_name, np.ascontiguousarray(bias_vector), max_frac=prod_frac))
        ctx.bind(out, ctx.emit(op, inputs, mm_attrs, out))
        return
    if c_name is None:
        ctx.bind(out, ctx.emit(op, inputs, mm_attrs, out))
        return
    prod_name = f"{out}/matmul"
    ctx.bind(prod_name, ctx.emit(op, inputs, mm_attrs, prod_name))
    c_ref = ctx.const_ref(f"{c_name}/beta", beta * ctx.const(c_name)) if ctx.const(c_name) is not None else ctx.ref(c_name)
    ctx.bind(out, ctx.emit("binary", [ctx.ref(prod_name), c_ref], {"kind": "add", "frac": frac}, out))


@rule("MatMul")
def matmul(ctx: LoweringContext, node: onnx.NodeProto) -> None:
    a_name, b_name = node.input[0], node.input[1]
    out = node.output[0]
    a_shape, b_shape = ctx.shape_of(a_name), ctx.shape_of(b_name)
    # ONNX (numpy) MatMul promotes 1-D operands to matrices and drops the added axis after.
    if len(a_shape) == 1:
        reshape_to(ctx, a_name, (1, a_shape[0]), a_name + "/2d")
        a_name = a_name + "/2d"
    if len(b_shape) == 1:
        reshape_to(ctx, b_name, (b_shape[0], 1), b_name + "/2d")
        b_name = b_name + "/2d"
    b_const = ctx.const(b_name)
    transpose_b = False
    if b_const is not None and b_const.ndim == 2:  # weights are stored [N, K] (see the IR's matmul)
        b_name = f"{b_name}.T"
        ctx.bind(b_name, Const(b_const.T))  # a view: quantized a block of rows at a time, never copied whole
        transpose_b = True
    op, inputs, attrs = product_operands(ctx, a_name, b_name, transpose_b)
    attrs["frac"] = min(ctx.policy.activation(out), product_frac(ctx, op, inputs))  # ≤ the product's bits
    result = ctx.emit(op, inputs, attrs, out)
    shape = ctx.builder.type_of(result).shape
    final = shape
    if len(a_shape) == 1:
        final = final[:-2] + final[-1:]
    if len(b_shape) == 1:
        final = final[:-1]
    if final == shape:
        ctx.bind(out, result)
    else:
        tmp = out + "/mm"
        ctx.bind(tmp, result)
        reshape_to(ctx, tmp, final, out)


def product_operands(ctx: LoweringContext, a_name: str, b_name: str, transpose_b: bool) -> tuple[str, list[int], dict]:
    """The op, operands and attributes (all but `frac`) of a @ b: `qmatmul` with b's quantized
    weight when b is a constant [N, K] matrix and weights are quantized, else `matmul`."""
    b_const = ctx.const(b_name)
    if transpose_b and b_const is not None and b_const.ndim == 2:  # the model's own (QDQ) quantized weight
        from opmlc.frontend.rules.quantized_weights import qdq_matmul_weight

        original = b_name[:-2] if b_name.endswith(".T") else None
        qw = qdq_matmul_weight(ctx, b_name, original)
        if qw is not None:
            return "qmatmul", [ctx.ref(a_name), *qw.operands()], {"block_size": qw.block_size}
    if transpose_b and b_const is not None and b_const.ndim == 2 and ctx.quantizes_weights():
        qw = ctx.qweight_ref(b_name, b_const)
        return "qmatmul", [ctx.ref(a_name), *qw.operands()], {"block_size": qw.block_size}
    attrs = {"transpose_b": True} if transpose_b else {}
    return "matmul", [ctx.ref(a_name), ctx.ref(b_name)], attrs


def product_frac(ctx: LoweringContext, op: str, inputs: list[int]) -> int:
    """The fractional bits of the int64 product: the operands' (a quantized weight's scale's)."""
    return ctx.frac_of(inputs[0]) + ctx.frac_of(inputs[2 if op == "qmatmul" else 1])
