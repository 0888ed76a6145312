"""Rules for elementwise ONNX ops, lowered onto the IR's `binary`, `unary`, `cast` and `where`
(tinygrad-style: activations such as LeakyRelu, Elu, HardSigmoid, Softsign or Clip are
compositions of those, not ops of their own).

Output bits: an fx32 result takes the policy's bits for its ONNX name (calibrated or the
default); internal intermediates take the default.
"""

from __future__ import annotations

import numpy as np
import onnx

from opmlc.frontend.context import Const, LoweringContext
from opmlc.frontend.rules import rule
from opmlc.ir.types import DType

ONNX_TO_IR = {
    onnx.TensorProto.FLOAT: DType.FX32, onnx.TensorProto.DOUBLE: DType.FX32,
    onnx.TensorProto.FLOAT16: DType.FX32, onnx.TensorProto.BFLOAT16: DType.FX32,
    onnx.TensorProto.INT8: DType.I32, onnx.TensorProto.INT16: DType.I32, onnx.TensorProto.INT32: DType.I32,
    onnx.TensorProto.UINT8: DType.I32, onnx.TensorProto.UINT16: DType.I32,
    onnx.TensorProto.INT64: DType.I64, onnx.TensorProto.UINT32: DType.I64, onnx.TensorProto.BOOL: DType.BOOL,
}


def frac(ctx: LoweringContext, name: str) -> int:
    return ctx.policy.activation(name)


def operands(ctx: LoweringContext, a: str, b: str) -> tuple[int, int, DType]:
    """Both operands as IR values of one dtype (fx32 if either is a float)."""
    da, db = ctx.dtype(a), ctx.dtype(b)
    if da is db:
        return ctx.value(a), ctx.value(b), da
    if DType.FX32 in (da, db):
        return ctx.fx(a), ctx.fx(b), DType.FX32
    if {da, db} == {DType.I32, DType.I64}:
        ra, rb = ctx.value(a), ctx.value(b)
        if da is DType.I32:
            ra = ctx.emit("cast", [ra], {"to": "i64"})
        else:
            rb = ctx.emit("cast", [rb], {"to": "i64"})
        return ra, rb, DType.I64
    raise ctx.unsupported(f"operands of types {da.value} and {db.value}")


def binary(ctx: LoweringContext, kind: str, a: str, b: str, out: str) -> int:
    ra, rb, dt = operands(ctx, a, b)
    attrs = {"kind": kind}
    if dt is DType.FX32:
        fo = frac(ctx, out)
        if kind == "div":
            fa, fb = ctx.frac_of(ra), ctx.frac_of(rb)
            fo = min(fo, fa - fb + 31)
        attrs["frac"] = fo
    ref = ctx.emit("binary", [ra, rb], attrs, out)
    ctx.bind(out, ref)
    return ref


def unary(ctx: LoweringContext, kind: str, x: str, out: str, fo: int | None = None) -> int:
    ref = ctx.value(x)
    t = ctx.builder.type_of(ref)
    attrs = {"kind": kind}
    if t.dtype is DType.FX32:
        fo = frac(ctx, out) if fo is None else fo
        if kind == "sqrt":
            fo = max(-(-t.frac // 2), min(fo, (t.frac + 31) // 2))
        attrs["frac"] = fo
    r = ctx.emit("unary", [ref], attrs, out)
    ctx.bind(out, r)
    return r


def const(ctx: LoweringContext, name: str, value, like: str | None = None) -> str:
    """Bind a named scalar constant (a float unless `like` names an int tensor) and return its name."""
    dt = np.float32
    if like is not None and ctx.dtype(like) is not DType.FX32:
        dt = np.int64 if ctx.dtype(like) is DType.I64 else np.int32
    ctx.bind(name, Const(np.asarray(value, dtype=dt)))
    return name


def tmp(node: onnx.NodeProto, what: str) -> str:
    return f"{node.output[0]}/{what}"


BINARY = {"Sub": "sub", "Mul": "mul", "Div": "div", "Equal": "eq", "Less": "lt", "LessOrEqual": "le",
          "Greater": "gt", "GreaterOrEqual": "ge", "And": "and", "Or": "or", "Xor": "xor",
          "BitwiseAnd": "bitand", "BitwiseOr": "bitor", "BitwiseXor": "bitxor"}


@rule(*BINARY)
def binary_rule(ctx: LoweringContext, node: onnx.NodeProto) -> None:
    binary(ctx, BINARY[node.op_type], node.input[0], node.input[1], node.output[0])


@rule("Mod")
def mod(ctx: LoweringContext, node: onnx.NodeProto) -> None:
    fmod = ctx.attrs().get("fmod", 0)
    if DType.FX32 in (ctx.dtype(node.input[0]), ctx.dtype(node.input[1])):
        raise ctx.unsupported("Mod of float tensors")
    binary(ctx, "fmod" if fmod else "mod", node.input[0], node.input[1], node.output[0])


@rule("Max", "Min", "Sum", "Mean")
def variadic(ctx: LoweringContext, node: onnx.NodeProto) -> None:
    kind = {"Max": "max", "Min": "min", "Sum": "add", "Mean": "add"}[node.op_type]
    names = [n for n in node.input if n]
    out = node.output[0]
    if len(names) == 1:
        names = [names[0], const(ctx, tmp(node, "zero"), 0, names[0])] if kind == "add" else names * 2
    acc = names[0]
    for k, name in enumerate(names[1:]):
        last = k == len(names) - 2 and node.op_type != "Mean"
        dst = out if last else tmp(node, f"acc{k}")
        if kind == "add" and DType.FX32 in (ctx.dtype(acc), ctx.dtype(name)):
            ra, rb, _ = operands(ctx, acc, name)
            ctx.bind(dst, ctx.emit("binary", [ra, rb], {"kind": "add", "frac": frac(ctx, dst)}, dst))
        else:
            binary(ctx, kind, acc, name, dst)
        acc = dst
    if node.op_type == "Mean":
        n = len([x for x in node.input if x])
        binary(ctx, "div", acc, const(ctx, tmp(node, "n"), n, acc), out)


UNSIGNED_MASK = {onnx.TensorProto.UINT8: 0xFF, onnx.TensorProto.UINT16: 0xFFFF, onnx.TensorProto.UINT32: 0xFFFFFFFF}


@rule("Neg", "Abs", "Floor", "Ceil", "Round", "Sign", "Sigmoid", "Tanh", "Exp", "Sqrt", "Not", "BitwiseNot")
def unary_rule(ctx: LoweringContext, node: onnx.NodeProto) -> None:
    mask = UNSIGNED_MASK.get(ctx.elem_types.get(node.input[0], 0))
    if node.op_type == "BitwiseNot" and mask is not None:  # ~x of an unsigned type: x ^ all ones of its width
        binary(ctx, "bitxor", node.input[0], const(ctx, tmp(node, "ones"), mask, node.input[0]), node.output[0])
        return
    kind = {"Not": "not", "BitwiseNot": "bitnot"}.get(node.op_type, node.op_type.lower())
    unary(ctx, kind, node.input[0], node.output[0])


@rule("Reciprocal")
def reciprocal(ctx: LoweringContext, node: onnx.NodeProto) -> None:
    binary(ctx, "div", const(ctx, tmp(node, "one"), 1.0), node.input[0], node.output[0])


def select_negative(ctx: LoweringContext, node: onnx.NodeProto, x: str, neg: str, strict: bool = True) -> None:
    """out = x < 0 ? neg : x (x ≤ 0 when not strict)."""
    cond = tmp(node, "isneg")
    binary(ctx, "lt" if strict else "le", x, const(ctx, tmp(node, "zero"), 0.0), cond)
    out = node.output[0]
    a, b = ctx.fx(neg), ctx.fx(x)
    ctx.bind(out, ctx.emit("where", [ctx.value(cond), a, b], {"frac": frac(ctx, out)}, out))


@rule("LeakyRelu")
def leaky_relu(ctx: LoweringContext, node: onnx.NodeProto) -> None:
    alpha = ctx.attrs().get("alpha", 0.01)
    binary(ctx, "mul", node.input[0], const(ctx, tmp(node, "alpha"), alpha), tmp(node, "scaled"))
    select_negative(ctx, node, node.input[0], tmp(node, "scaled"))


@rule("PRelu")
def prelu(ctx: LoweringContext, node: onnx.NodeProto) -> None:
    binary(ctx, "mul", node.input[0], node.input[1], tmp(node, "scaled"))
    select_negative(ctx, node, node.input[0], tmp(node, "scaled"))


def expm1_scaled(ctx: LoweringContext, node: onnx.NodeProto, x: str, alpha: float, name: str) -> str:
    """alpha · (exp(x) − 1), bound to `name`. The branch is used where x ≤ 0 only, so its values
    lie in [−alpha, 0] and the intermediates take the output's bits (not the default); where x
    is large they saturate, and `where` discards them."""
    fo = frac(ctx, node.output[0])
    ctx.bind(tmp(node, "exp"), ctx.emit("unary", [ctx.fx(x)], {"kind": "exp", "frac": fo}, tmp(node, "exp")))
    ra, rb, _ = operands(ctx, tmp(node, "exp"), const(ctx, tmp(node, "one"), 1.0))
    ctx.bind(tmp(node, "expm1"), ctx.emit("binary", [ra, rb], {"kind": "sub", "frac": fo}, tmp(node, "expm1")))
    ra, rb, _ = operands(ctx, tmp(node, "expm1"), const(ctx, tmp(node, "alpha"), alpha))
    ctx.bind(name, ctx.emit("binary", [ra, rb], {"kind": "mul", "frac": fo}, name))
    return name


@rule("Elu")
def elu(ctx: LoweringContext, node: onnx.NodeProto) -> None:
    expm1_scaled(ctx, node, node.input[0], ctx.attrs().get("alpha", 1.0), tmp(node, "neg"))
    select_negative(ctx, node, node.input[0], tmp(node, "neg"))


@rule("Selu")
def selu(ctx: LoweringContext, node: onnx.NodeProto) -> None:
    a = ctx.attrs()
    alpha, gamma = a.get("alpha", 1.67326319217681884765625), a.get("gamma", 1.05070102214813232421875)
    x = node.input[0]
    binary(ctx, "mul", x, const(ctx, tmp(node, "gamma"), gamma), tmp(node, "pos"))
    expm1_scaled(ctx, node, x, alpha * gamma, tmp(node, "neg"))
    cond = tmp(node, "isneg")
    binary(ctx, "le", x, const(ctx, tmp(node, "zero"), 0.0), cond)
    out = node.output[0]
    ctx.bind(out, ctx.emit("where", [ctx.value(cond), ctx.fx(tmp(node, "neg")), ctx.fx(tmp(node, "pos"))],
                           {"frac": frac(ctx, out)}, out))


@rule("Celu")
def celu(ctx: LoweringContext, node: onnx.NodeProto) -> None:
    alpha = ctx.attrs().get("alpha", 1.0)
    binary(ctx, "div", node.input[0], const(ctx, tmp(node, "alpha_d"), alpha), tmp(node, "xa"))
    expm1_scaled(ctx, node, tmp(node, "xa"), alpha, tmp(node, "neg"))
    select_negative(ctx, node, node.input[0], tmp(node, "neg"))


@rule("ThresholdedRelu")
def thresholded_relu(ctx: LoweringContext, node: onnx.NodeProto) -> None:
    alpha = ctx.attrs().get("alpha", 1.0)
    x, out = node.input[0], node.output[0]
    binary(ctx, "gt", x, const(ctx, tmp(node, "alpha"), alpha), tmp(node, "above"))
    zero = const(ctx, tmp(node, "zero"), 0.0)
    ctx.bind(out, ctx.emit("where", [ctx.value(tmp(node, "above")), ctx.fx(x), ctx.fx(zero)],
                           {"frac": frac(ctx, out)}, out))


def clamp(ctx: LoweringContext, node: onnx.NodeProto, x: str, lo: str | None, hi: str | None, out: str) -> None:
    if lo is None and hi is None:
        ctx.bind(out, ctx.sym(x))
        return
    if lo is not None:
        binary(ctx, "max", x, lo, out if hi is None else tmp(node, "lo"))
        x = tmp(node, "lo")
    if hi is not None:
        binary(ctx, "min", x, hi, out)


@rule("Clip")
def clip(ctx: LoweringContext, node: onnx.NodeProto) -> None:
    x = node.input[0]
    if ctx.opset < 11:
        a = ctx.attrs()
        lo = const(ctx, tmp(node, "min"), a["min"]) if "min" in a else None
        hi = const(ctx, tmp(node, "max"), a["max"]) if "max" in a else None
    else:
        lo = node.input[1] if len(node.input) > 1 and node.input[1] else None
        hi = node.input[2] if len(node.input) > 2 and node.input[2] else None
    clamp(ctx, node, x, lo, hi, node.output[0])


@rule("HardSigmoid", "HardSwish")
def hard_sigmoid(ctx: LoweringContext, node: onnx.NodeProto) -> None:
    a = ctx.attrs()
    alpha, beta = (1 / 6, 0.5) if node.op_type == "HardSwish" else (a.get("alpha", 0.2), a.get("beta", 0.5))
    x = node.input[0]
    binary(ctx, "mul", x, const(ctx, tmp(node, "alpha"), alpha), tmp(node, "ax"))
    binary(ctx, "add", tmp(node, "ax"), const(ctx, tmp(node, "beta"), beta), tmp(node, "axb"))
    hs = node.output[0] if node.op_type == "HardSigmoid" else tmp(node, "hs")
    clamp(ctx, node, tmp(node, "axb"), const(ctx, tmp(node, "zero"), 0.0), const(ctx, tmp(node, "one"), 1.0), hs)
    if node.op_type == "HardSwish":
        binary(ctx, "mul", x, hs, node.output[0])


@rule("Softsign")
def softsign(ctx: LoweringContext, node: onnx.NodeProto) -> None:
    x = node.input[0]
    unary(ctx, "abs", x, tmp(node, "abs"))
    binary(ctx, "add", tmp(node, "abs"), const(ctx, tmp(node, "one"), 1.0), tmp(node, "den"))
    binary(ctx, "div", x, tmp(node, "den"), node.output[0])


@rule("Where")
def where(ctx: LoweringContext, node: onnx.NodeProto) -> None:
    c, a, b = node.input
    out = node.output[0]
    ra, rb, dt = operands(ctx, a, b)
    attrs = {"frac": frac(ctx, out)} if dt is DType.FX32 else {}
    ctx.bind(out, ctx.emit("where", [ctx.value(c), ra, rb], attrs, out))


def cast_to(ctx: LoweringContext, x: str, to: int, out: str) -> None:
    dt = ONNX_TO_IR.get(to)
    if dt is None:
        raise ctx.unsupported(f"cast to {onnx.TensorProto.DataType.Name(to)}, which has no IR type")
    src = ctx.dtype(x)
    if src is dt and dt is not DType.FX32:
        ctx.bind(out, ctx.sym(x))
        return
    if src is DType.FX32 and dt is DType.FX32:
        ctx.bind(out, ctx.sym(x))  # float ↔ double ↔ half: the same fixed-point value
        return
    attrs = {"to": dt.value, "frac": frac(ctx, out) if dt is DType.FX32 else 0}
    ctx.bind(out, ctx.emit("cast", [ctx.value(x)], attrs, out))


@rule("Cast")
def cast(ctx: LoweringContext, node: onnx.NodeProto) -> None:
    cast_to(ctx, node.input[0], ctx.attrs()["to"], node.output[0])


@rule("CastLike")
def cast_like(ctx: LoweringContext, node: onnx.NodeProto) -> None:
    like_type = ctx.elem_types.get(node.input[1])
    if like_type is not None and like_type not in ONNX_TO_IR:  # int2/int4…: held as i32, not cast to
        raise ctx.unsupported(f"cast to {onnx.TensorProto.DataType.Name(like_type)}, which has no IR type")
    like = ctx.dtype(node.input[1])
    to = {DType.FX32: onnx.TensorProto.FLOAT, DType.I32: onnx.TensorProto.INT32,
          DType.I64: onnx.TensorProto.INT64, DType.BOOL: onnx.TensorProto.BOOL}[like]
    cast_to(ctx, node.input[0], to, node.output[0])
