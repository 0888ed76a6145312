"""Rules for ONNX's quantized formats, as onnxruntime's quantizers export them.

- QDQ: QuantizeLinear onto the IR's `quantize_linear` (fx32 → the integers, rounded half to
  even and saturated to the quantized type), DequantizeLinear onto cast + sub + mul (exact
  integers, then one rounding of (q − zp)·scale). A DequantizeLinear of constant integers is
  QDQ's weight side: recorded (`record_qdq_weight`) and folded, so that Conv, MatMul, Gemm and
  a Gather table keep the integers as a quantized weight (`qdq_*_weight`), else see fx32.
- QOperator: QLinearConv, QLinearMatMul, com.microsoft QGemm/QLinearMul, MatMulInteger and
  ConvInteger accumulate (x − x_zp)·(w − w_zp) (+ the int32 bias) exactly as an fx32 tensor at
  0 bits — the int32 onnxruntime computes — and the QLinear forms requantize it with
  `quantize_linear`, multiplier x_scale·w_scale/y_scale computed in float32 as onnxruntime
  does (held exactly: a float32 mantissa fits the 31-bit multiplier). QLinearAdd and
  QLinearGlobalAveragePool likewise end in `quantize_linear`.
- DynamicQuantizeLinear: min/max reductions, the scale (max − min)/255, and x·255/(max − min)
  by one division at 30 bits, rounded half to even.
- com.microsoft MatMulNBits: `qmatmul` with the packed integers as an i4 (or i8) weight.

The model's integers are kept exactly (`given_qweight`: no re-quantization). Values of a
quantized type (int2…uint16) are i32 IR values. Semantics and error bounds against
onnxruntime: docs/DESIGN.md "ONNX quantized formats".
"""

from __future__ import annotations

import math

import numpy as np
import onnx

from opmlc.frontend.context import Const, LoweringContext
from opmlc.frontend.rules import rule
from opmlc.frontend.rules.cnn import resolve_pads
from opmlc.frontend.rules.quantized_weights import MS, ONNX_QTYPE, given_qweight, weight_qtype
from opmlc.frontend.rules.shape import reshape_to
from opmlc.ir import fixedpoint as fp
from opmlc.ir.ops.quantize import MAX_SHIFT, MIN_SHIFT, channel_shape
from opmlc.ir.types import MAX_FRAC, DType, TensorType

_T = onnx.TensorProto
# the quantized types ONNX has and their ranges, by numpy dtype name (int2/int4…: ml_dtypes)
QRANGE = {"int2": (-2, 1), "uint2": (0, 3), "int4": (-8, 7), "uint4": (0, 15), "int8": (-128, 127), "uint8": (0, 255),
          "int16": (-(2**15), 2**15 - 1), "uint16": (0, 2**16 - 1), "int32": (fp.INT32_MIN, fp.INT32_MAX)}
DQ_RATIO_FRAC = 30  # x / (max − min) in DynamicQuantizeLinear: |ratio| ≤ 1
DQ_VALUE_FRAC = 22  # x / scale: at most 255 in magnitude (rounded: 256), 22 bits hold it
DQ_SUM_FRAC = 21  # + the zero point: |·| ≤ 512 as the analysis bounds it (really 0..255)


# -- helpers --------------------------------------------------------------------------------

def _opt(node: onnx.NodeProto, i: int) -> str | None:
    return node.input[i] if len(node.input) > i and node.input[i] else None


def _qtype_of(ctx: LoweringContext, zp: str | None, output_dtype: int = 0) -> str:
    """The quantized type a QuantizeLinear produces: its zero point's, else `output_dtype`, else uint8."""
    if zp is not None:  # the ONNX type where known (a bound graph input's numpy type may be wider)
        arr = ctx.const(zp)
        name = ONNX_QTYPE.get(ctx.elem_types.get(zp, 0)) or (str(arr.dtype) if arr is not None else None)
        if name not in QRANGE:
            raise ctx.unsupported(f"quantized type {name or 'of ' + repr(zp)} (supported: {', '.join(QRANGE)})")
        return name
    if output_dtype:
        if output_dtype not in ONNX_QTYPE:
            raise ctx.unsupported(f"output_dtype {_T.DataType.Name(output_dtype)} "
                                  f"(supported: {', '.join(QRANGE)})")
        return ONNX_QTYPE[output_dtype]
    return "uint8"


def _ints(ctx: LoweringContext, name: str | None, what: str) -> np.ndarray:
    """A constant integer tensor (zero point, packed weight) as int64; 0 when omitted."""
    if name is None:
        return np.zeros((), np.int64)
    return np.asarray(ctx.require_const(name, what)).astype(np.int64)


def _scales(ctx: LoweringContext, name: str, what: str) -> np.ndarray:
    s = np.asarray(ctx.require_const(name, what), dtype=np.float32)
    if not np.all(np.isfinite(s)) or np.any(s <= 0):
        raise ctx.unsupported(f"{what} {name!r} must be finite and positive")
    return s


def multiplier(ctx: LoweringContext, real: np.ndarray, frac: int) -> tuple[np.ndarray, int]:
    """(m, shift) with m·2^−shift ≈ real / 2^frac: one shift for all channels, the largest
    |m| in [2^30, 2^31) (31 significant bits; a channel k times smaller keeps 31 − log2 k)."""
    r = np.asarray(real, np.float64) / 2.0**frac
    top = float(np.max(np.abs(r))) if r.size else 0.0
    if top == 0.0:
        return np.zeros(r.shape, np.int32), MIN_SHIFT
    shift = min(MAX_SHIFT, 30 - math.floor(math.log2(top)))
    m = np.rint(r * 2.0**shift)
    if np.max(np.abs(m)) >= 2**31:
        shift -= 1
        m = np.rint(r * 2.0**shift)
    if shift < MIN_SHIFT:
        raise ctx.unsupported(f"a quantization multiplier of {top * 2.0**frac:.3g} per unit is too large "
                              f"for an input with {frac} fractional bits")
    return m.astype(np.int32), shift


def requantize(ctx: LoweringContext, x: int, real: np.ndarray, zp: np.ndarray, qtype: str, axis: int,
               out: str) -> None:
    """out = saturate(round_half_even(x·real) + zp) to qtype, as `quantize_linear`."""
    m, shift = multiplier(ctx, real, ctx.frac_of(x))
    shape = ctx.builder.type_of(x).shape
    axis = axis + len(shape) if axis < 0 else axis
    refs = []
    for what, arr in (("m", m), ("zp", zp)):
        arr = np.asarray(arr)
        if arr.shape != shape and (arr.ndim > 1 or (arr.ndim == 1 and arr.size == 1)):
            arr = arr.reshape(-1)[0] if arr.size == 1 else arr.reshape(-1)
        refs.append(ctx.const_ref(f"{out}/{what}", np.asarray(arr, np.int32), DType.I32))
    lo, hi = QRANGE[qtype]
    attrs = {"shift": shift, "axis": axis, "qmin": lo, "qmax": hi}
    ctx.bind(out, ctx.emit("quantize_linear", [x, *refs], attrs, out))


def _centered(ctx: LoweringContext, name: str, zp: str | None, out: str) -> int:
    """A run-time integer tensor minus its scalar zero point (a constant, or a run-time one as
    DynamicQuantizeLinear makes), as fx32 at 0 bits (exact)."""
    if ctx.dtype(name) is DType.FX32:
        raise ctx.unsupported(f"input {name!r} must be a quantized (integer) tensor")
    x = ctx.emit("cast", [ctx.value(name)], {"to": "fx32", "frac": 0}, f"{out}/int")
    if zp is None:
        return x
    if ctx.const(zp) is None:
        if ctx.shape_of(zp) not in ((), (1,)):
            raise ctx.unsupported(f"a per-axis zero point for the run-time input {name!r}")
        zref = ctx.emit("cast", [ctx.value(zp)], {"to": "fx32", "frac": 0}, f"{out}/zp_int")
        return ctx.emit("binary", [x, zref], {"kind": "sub", "frac": 0}, f"{out}/centered")
    z = _ints(ctx, zp, "zero point")
    if z.size > 1 and np.any(z != z.reshape(-1)[0]):
        raise ctx.unsupported(f"a per-axis zero point for the run-time input {name!r}")
    z0 = int(z.reshape(-1)[0]) if z.size else 0
    if z0 == 0:
        return x
    zref = ctx.const_ref(f"{out}/zp", np.asarray(float(z0)), max_frac=0)
    return ctx.emit("binary", [x, zref], {"kind": "sub", "frac": 0}, f"{out}/centered")


def _int_const(ctx: LoweringContext, name: str, arr: np.ndarray) -> int:
    """An integer constant (a centered weight, an int32 bias) as fx32 at 0 bits (exact)."""
    if np.max(np.abs(arr), initial=0) >= 2**31:
        raise ctx.unsupported(f"constant {name!r} does not fit int32")
    return ctx.const_ref(name, np.asarray(arr, np.float64), max_frac=0)


def _operand(ctx: LoweringContext, name: str, zp_name: str | None, out: str, axis_of_zp: int) -> tuple[int, bool]:
    """(IR value of name − zp at 0 bits, whether it is a constant)."""
    w = ctx.const(name)
    if w is None:
        return _centered(ctx, name, zp_name, out), False
    w = np.asarray(w).astype(np.int64)
    zp = _ints(ctx, zp_name, "zero point")
    if zp.ndim == 1 and zp.size > 1:
        zp = zp.reshape(channel_shape(w.ndim, axis_of_zp % w.ndim, zp.size))
    return _int_const(ctx, f"{out}/w", w - zp), True


# -- QDQ --------------------------------------------------------------------------------------

@rule("QuantizeLinear")
def quantize_linear(ctx: LoweringContext, node: onnx.NodeProto) -> None:
    a = ctx.attrs()
    x = ctx.fx(node.input[0])
    s = _scales(ctx, node.input[1], "y_scale")
    zp_name = _opt(node, 2)
    qtype = _qtype_of(ctx, zp_name, a.get("output_dtype", 0))
    zp = _ints(ctx, zp_name, "y_zero_point")
    shape = ctx.builder.type_of(x).shape
    axis = a.get("axis", 1)
    axis = axis + len(shape) if axis < 0 else axis
    bs = int(a.get("block_size", 0))
    if bs:  # blocked: each block's scale and zero point repeated over its elements
        s = np.repeat(s, bs, axis=axis).take(range(shape[axis]), axis=axis)
        if zp.size > 1:
            zp = np.repeat(zp, bs, axis=axis).take(range(shape[axis]), axis=axis)
    elif not (s.ndim == 1 and s.size > 1):
        axis = 0
    requantize(ctx, x, 1.0 / s.astype(np.float64), zp, qtype, axis, node.output[0])


@rule("DequantizeLinear")
def dequantize_linear(ctx: LoweringContext, node: onnx.NodeProto) -> None:
    a = ctx.attrs()
    out = node.output[0]
    s = _scales(ctx, node.input[1], "x_scale")
    zp = _ints(ctx, _opt(node, 2), "x_zero_point")
    shape = ctx.shape_of(node.input[0])
    axis = a.get("axis", 1)
    axis = axis + len(shape) if axis < 0 else axis
    x = ctx.emit("cast", [ctx.value(node.input[0])], {"to": "fx32", "frac": 0}, f"{out}/int")
    bs = int(a.get("block_size", 0))
    if bs:  # blocked (opset 21): each scale serves bs consecutive elements along the axis
        s = np.repeat(s, bs, axis=axis).take(range(shape[axis]), axis=axis)
        zp = np.repeat(np.broadcast_to(zp, _block_shape(shape, axis, bs)), bs, axis=axis).take(
            range(shape[axis]), axis=axis) if zp.size > 1 else zp
    elif s.ndim == 1 and s.size > 1:
        s = s.reshape(channel_shape(len(shape), axis, s.size))
        zp = zp.reshape(channel_shape(len(shape), axis, zp.size)) if zp.size > 1 else zp
    if np.any(zp != 0):
        x = ctx.emit("binary", [x, _int_const(ctx, f"{out}/zp", zp)], {"kind": "sub", "frac": 0}, f"{out}/centered")
    sref = scale_const(ctx, f"{out}/scale", s.astype(np.float64))
    fo = min(ctx.policy.activation(out), ctx.frac_of(sref))
    ctx.bind(out, ctx.emit("binary", [x, sref], {"kind": "mul", "frac": fo}, out))


def _block_shape(shape: tuple[int, ...], axis: int, bs: int) -> tuple[int, ...]:
    return (*shape[:axis], -(-shape[axis] // bs), *shape[axis + 1:])


def scale_const(ctx: LoweringContext, name: str, s: np.ndarray) -> int:
    """A positive scale constant with as many bits as fit (≤ MAX_FRAC): its relative error then
    stays ≤ 2^−(31 − log2 of the largest/smallest ratio)."""
    peak = float(np.max(np.abs(s)))
    f = MAX_FRAC if peak < 2.0**-MAX_FRAC else max(0, min(MAX_FRAC, 30 - math.ceil(math.log2(peak + 1e-300))))
    t = TensorType(DType.FX32, tuple(s.shape), f)
    return ctx.builder.add_initializer(name, fp.quantize(s, f), t)


# -- QOperator: exact integer accumulation, requantized ---------------------------------------

def _conv_attrs(ctx: LoweringContext, x: int, w_shape: tuple[int, ...]) -> dict:
    a = ctx.attrs()
    xt = ctx.builder.type_of(x)
    r = len(xt.shape) - 2
    kernel = list(a.get("kernel_shape") or w_shape[2:])
    strides = list(a.get("strides") or [1] * r)
    dilations = list(a.get("dilations") or [1] * r)
    pads = resolve_pads(ctx, xt.shape[2:], kernel, strides, dilations)
    return {"strides": strides, "dilations": dilations, "pads": pads, "group": a.get("group", 1), "frac": 0}


def _int_conv(ctx: LoweringContext, x: str, x_zp: str | None, w: str, w_zp: str | None, bias: str | None,
              out: str) -> int:
    xr = _centered(ctx, x, x_zp, out)
    wc = ctx.const(w)
    qtype = weight_qtype(wc) if wc is not None else None
    if qtype is not None:  # kept as the build's quantized weight: one scale 1, the exact integers
        zp = _ints(ctx, w_zp, "w_zero_point").reshape(-1, 1)
        k = int(np.prod(wc.shape[1:]))
        qw = given_qweight(ctx, f"{out}/w", np.asarray(wc), zp, qtype, None, k)
        op, inputs, extra = "qconv", [xr, *qw.operands()], {"block_size": k}
        w_shape = tuple(wc.shape)
    else:
        wr, _ = _operand(ctx, w, w_zp, out, 0)
        op, inputs, extra = "conv", [xr, wr], {}
        w_shape = ctx.builder.type_of(wr).shape
    if bias is not None:
        inputs.append(_int_const(ctx, f"{out}/bias", _ints(ctx, bias, "the int32 bias")))
    attrs = {**_conv_attrs(ctx, xr, w_shape), **extra}
    return ctx.emit(op, inputs, attrs, f"{out}/acc")


def _int_matmul(ctx: LoweringContext, a: str, a_zp: str | None, b: str, b_zp: str | None, out: str,
                bias: np.ndarray | None = None) -> int:
    """Σ (a − a_zp)(b − b_zp) (+ bias) exactly, as fx32 at 0 bits; a constant b is stored [N, K]."""
    ar = _centered(ctx, a, a_zp, out)
    if len(ctx.builder.type_of(ar).shape) < 2:
        raise ctx.unsupported("a 1-D quantized matmul operand")
    bc = ctx.const(b)
    if bc is None:
        br = _centered(ctx, b, b_zp, f"{out}/b")
        if len(ctx.builder.type_of(br).shape) < 2:
            raise ctx.unsupported("a 1-D quantized matmul operand")
        inputs, attrs = [ar, br], {"frac": 0}
    else:
        bc = np.asarray(bc).astype(np.int64)
        if bc.ndim != 2:
            raise ctx.unsupported("a constant quantized matmul weight of rank other than 2")
        zp = _ints(ctx, b_zp, "b_zero_point")
        qtype = weight_qtype(ctx.const(b))
        if qtype is not None:  # kept as the build's quantized weight: scale 1, the exact integers
            qw = given_qweight(ctx, f"{out}/w", np.ascontiguousarray(bc.T), zp.reshape(-1, 1), qtype, None,
                               bc.shape[0])
            inputs, attrs, op = [ar, *qw.operands()], {"frac": 0, "block_size": bc.shape[0]}, "qmatmul"
            if bias is not None:
                inputs.append(_int_const(ctx, f"{out}/bias", bias))
            return ctx.emit(op, inputs, attrs, f"{out}/acc")
        zp = zp.reshape(1, -1) if zp.ndim == 1 and zp.size > 1 else zp  # per column
        inputs = [ar, _int_const(ctx, f"{out}/w", np.ascontiguousarray((bc - zp).T))]
        attrs = {"frac": 0, "transpose_b": True}
    if bias is not None:
        inputs.append(_int_const(ctx, f"{out}/bias", bias))
    return ctx.emit("matmul", inputs, attrs, f"{out}/acc")


def _as_i32(ctx: LoweringContext, acc: int, out: str) -> None:
    ctx.bind(out, ctx.emit("cast", [acc], {"to": "i32"}, out))


def _f32_multiplier(*factors: np.ndarray, divide_by: np.ndarray | None = None) -> np.ndarray:
    """The requantization multiplier as onnxruntime computes it: float32 products (and quotient)."""
    m = np.float32(1.0)
    for f in factors:
        m = np.asarray(m * np.asarray(f, np.float32), np.float32)
    if divide_by is not None:
        m = np.asarray(m / np.asarray(divide_by, np.float32), np.float32)
    return m.astype(np.float64)


@rule("QLinearConv")
def qlinear_conv(ctx: LoweringContext, node: onnx.NodeProto) -> None:
    x, xs, xz, w, ws, wz, ys, yz = node.input[:8]
    out = node.output[0]
    acc = _int_conv(ctx, x, xz, w, wz, _opt(node, 8), out)
    real = _f32_multiplier(_scales(ctx, xs, "x_scale"), _scales(ctx, ws, "w_scale"), divide_by=_scales(ctx, ys, "y_scale"))
    requantize(ctx, acc, real, _ints(ctx, yz, "y_zero_point"), _qtype_of(ctx, yz), 1, out)


@rule("QLinearMatMul")
def qlinear_matmul(ctx: LoweringContext, node: onnx.NodeProto) -> None:
    a, as_, az, b, bs, bz, ys, yz = node.input[:8]
    out = node.output[0]
    acc = _int_matmul(ctx, a, az, b, bz, out)
    real = _f32_multiplier(_scales(ctx, as_, "a_scale"), _scales(ctx, bs, "b_scale"), divide_by=_scales(ctx, ys, "y_scale"))
    requantize(ctx, acc, real, _ints(ctx, yz, "y_zero_point"), _qtype_of(ctx, yz), -1, out)


@rule("MatMulInteger")
def matmul_integer(ctx: LoweringContext, node: onnx.NodeProto) -> None:
    out = node.output[0]
    acc = _int_matmul(ctx, node.input[0], _opt(node, 2), node.input[1], _opt(node, 3), out)
    _as_i32(ctx, acc, out)


@rule("ConvInteger")
def conv_integer(ctx: LoweringContext, node: onnx.NodeProto) -> None:
    out = node.output[0]
    acc = _int_conv(ctx, node.input[0], _opt(node, 2), node.input[1], _opt(node, 3), None, out)
    _as_i32(ctx, acc, out)


@rule(f"{MS}:QGemm")
def qgemm(ctx: LoweringContext, node: onnx.NodeProto) -> None:
    """com.microsoft QGemm: alpha·a_scale·b_scale·((A − a_zp)(B − b_zp) + C), C an int32 bias,
    requantized to y_scale/y_zero_point, or a float output without y_scale."""
    a = ctx.attrs()
    if a.get("transA", 0):
        raise ctx.unsupported("QGemm with transA")
    alpha = float(a.get("alpha", 1.0))
    A, as_, az, B, bs, bz = node.input[:6]
    c, ys, yz = _opt(node, 6), _opt(node, 7), _opt(node, 8)
    out = node.output[0]
    bconst = ctx.const(B)
    if bconst is None:
        raise ctx.unsupported("QGemm with a run-time B")
    if a.get("transB", 0):  # _int_matmul takes B as [K, N]
        B = f"{out}/B.T"
        ctx.bind(B, Const(np.ascontiguousarray(np.asarray(bconst).T)))
    bias = None
    if c is not None:
        bias = _ints(ctx, c, "the int32 bias C")
        n = ctx.shape_of(B)[1]
        if bias.size == 1 or bias.shape == (n,) or bias.shape == (1, n):
            bias = np.broadcast_to(bias.reshape(-1), (n,))
        else:
            raise ctx.unsupported(f"QGemm bias of shape {bias.shape} (a [N] vector is supported)")
    acc = _int_matmul(ctx, A, az, B, bz, out, bias)
    if ys is not None:
        real = _f32_multiplier(np.float32(alpha), _scales(ctx, as_, "a_scale"), _scales(ctx, bs, "b_scale"),
                               divide_by=_scales(ctx, ys, "y_scale"))
        requantize(ctx, acc, real, _ints(ctx, yz, "y_zero_point"), _qtype_of(ctx, yz), -1, out)
        return
    s = _f32_multiplier(np.float32(alpha), _scales(ctx, as_, "a_scale"), _scales(ctx, bs, "b_scale"))
    sref = scale_const(ctx, f"{out}/scale", s.reshape(-1) if s.size > 1 else s.reshape(()))
    fo = min(ctx.policy.activation(out), ctx.frac_of(sref))
    ctx.bind(out, ctx.emit("binary", [acc, sref], {"kind": "mul", "frac": fo}, out))


@rule(f"{MS}:QLinearAdd")
def qlinear_add(ctx: LoweringContext, node: onnx.NodeProto) -> None:
    """C = saturate(rhe(ra·(A − A_zp) + rb·(B − B_zp)) + C_zp), ra = A_scale/C_scale and
    rb = B_scale/C_scale in float32 as onnxruntime computes them; each product at the bits the
    analysis gives it, their sum requantized by `quantize_linear` (multiplier 1)."""
    from opmlc.frontend.rules.logs import bin_

    a, as_, az, b, bs, bz, cs, cz = node.input[:8]
    out = node.output[0]
    c_scale = _scales(ctx, cs, "C_scale")
    terms = []
    for k, (x, xs, xz) in enumerate(((a, as_, az), (b, bs, bz))):
        ratio = _f32_multiplier(_scales(ctx, xs, "scale"), divide_by=c_scale)
        if ratio.size != 1:
            raise ctx.unsupported("QLinearAdd with per-axis scales")
        xr = _centered(ctx, x, xz if xz else None, f"{out}/{k}")
        ctx.bind(f"{out}/{k}c", xr)
        ctx.bind(f"{out}/{k}r", Const(np.asarray(ratio.reshape(()), np.float64)))
        bin_(ctx, "mul", f"{out}/{k}c", f"{out}/{k}r", f"{out}/{k}t")
        terms.append(f"{out}/{k}t")
    bin_(ctx, "add", terms[0], terms[1], f"{out}/sum")
    requantize(ctx, ctx.fx(f"{out}/sum"), np.asarray(1.0), _ints(ctx, cz, "C_zero_point"), _qtype_of(ctx, cz), 0, out)


@rule(f"{MS}:QLinearMul")
def qlinear_mul(ctx: LoweringContext, node: onnx.NodeProto) -> None:
    """C = saturate(rhe((A − A_zp)(B − B_zp)·A_scale·B_scale/C_scale) + C_zp): the integer
    product exact (fx32 at 0 bits), requantized like QLinearConv."""
    a, as_, az, b, bs, bz, cs, cz = node.input[:8]
    out = node.output[0]
    ar, br = _centered(ctx, a, az or None, f"{out}/a"), _centered(ctx, b, bz or None, f"{out}/b")
    prod = ctx.emit("binary", [ar, br], {"kind": "mul", "frac": 0}, f"{out}/prod")
    real = _f32_multiplier(_scales(ctx, as_, "A_scale"), _scales(ctx, bs, "B_scale"), divide_by=_scales(ctx, cs, "C_scale"))
    if real.size != 1:
        raise ctx.unsupported("QLinearMul with per-axis scales")
    requantize(ctx, prod, real.reshape(()), _ints(ctx, cz, "C_zero_point"), _qtype_of(ctx, cz), 0, out)


@rule(f"{MS}:QLinearGlobalAveragePool")
def qlinear_global_average_pool(ctx: LoweringContext, node: onnx.NodeProto) -> None:
    """y = saturate(rhe(Σ (x − x_zp) · (x_scale/y_scale)/n) + y_zp) over each channel's n
    spatial positions: the sum exact (a `reduce` sum at 0 bits), the multiplier in float32."""
    x, xs, xz, ys, yz = node.input[:5]
    out = node.output[0]
    xr = _centered(ctx, x, xz or None, out)
    shape = ctx.builder.type_of(xr).shape
    last = bool(ctx.attrs().get("channels_last", 0))
    axes = list(range(1, len(shape) - 1)) if last else list(range(2, len(shape)))
    n = int(np.prod([shape[i] for i in axes]))
    total = ctx.emit("reduce", [xr], {"kind": "sum", "axes": axes, "keepdims": 1, "frac": 0}, f"{out}/sum")
    ratio = _f32_multiplier(_scales(ctx, xs, "x_scale"), divide_by=_scales(ctx, ys, "y_scale"))
    real = _f32_multiplier(ratio, divide_by=np.float32(n))
    requantize(ctx, total, real.reshape(()), _ints(ctx, yz, "y_zero_point"), _qtype_of(ctx, yz), 0, out)


# -- DynamicQuantizeLinear ----------------------------------------------------------------------

@rule("DynamicQuantizeLinear")
def dynamic_quantize_linear(ctx: LoweringContext, node: onnx.NodeProto) -> None:
    """y_scale = (max(x, 0) − min(x, 0))/255, y_zero_point = round(−min/scale) and
    y = saturate(round(x/scale) + zp) to uint8, with x/scale = 255·x/(max − min) and
    −min/scale = −255·min/(max − min), each one division at 30 bits then a product at 22
    (rounded half to even to integers, as ONNX); the sums with the zero point at 21 bits."""
    from opmlc.frontend.rules.logs import bin_, un

    x = node.input[0]
    y, ys, yz = (list(node.output) + ["", "", ""])[:3]
    base = y or ys or yz
    xr = ctx.fx(x)
    f = ctx.frac_of(xr)
    rank = len(ctx.builder.type_of(xr).shape)
    t = lambda what: f"{base}/dql_{what}"  # noqa: E731
    ctx.bind(t("zero"), Const(np.asarray(0.0, np.float32)))
    ext = {}
    for kind, clip in (("max", "max"), ("min", "min")):
        red = ctx.emit("reduce", [xr], {"kind": kind, "axes": list(range(rank)), "keepdims": 1, "frac": f}, t(kind))
        ctx.bind(t(kind), red)
        bin_(ctx, clip, t(kind), t("zero"), t(f"{kind}0"), f)
        ext[kind] = t(f"{kind}0")
    bin_(ctx, "sub", ext["max"], ext["min"], t("span"), f)
    ctx.bind(t("255"), Const(np.asarray(255.0, np.float32)))
    ctx.bind(t("-255"), Const(np.asarray(-255.0, np.float32)))
    if ys:
        bin_(ctx, "div", t("span"), t("255"), t("scale"))
        reshape_to(ctx, t("scale"), (), ys)
    # the zero point: round(−255·min/span), in [0, 255] since |min| ≤ span
    bin_(ctx, "div", ext["min"], t("span"), t("zratio"), DQ_RATIO_FRAC)
    bin_(ctx, "mul", t("zratio"), t("-255"), t("zreal"), DQ_VALUE_FRAC)
    un(ctx, "round", t("zreal"), t("zpfx"), DQ_VALUE_FRAC)
    if yz:
        ctx.bind(t("zp_i"), ctx.emit("cast", [ctx.fx(t("zpfx"))], {"to": "i32"}, t("zp_i")))
        reshape_to(ctx, t("zp_i"), (), yz)
    if not y:
        return
    bin_(ctx, "div", x, t("span"), t("ratio"), DQ_RATIO_FRAC)
    bin_(ctx, "mul", t("ratio"), t("255"), t("real"), DQ_VALUE_FRAC)
    un(ctx, "round", t("real"), t("rounded"), DQ_VALUE_FRAC)
    bin_(ctx, "add", t("rounded"), t("zpfx"), t("shifted"), DQ_SUM_FRAC)
    bin_(ctx, "max", t("shifted"), t("zero"), t("lo"), DQ_SUM_FRAC)
    bin_(ctx, "min", t("lo"), t("255"), t("clamped"), DQ_SUM_FRAC)
    ctx.bind(y, ctx.emit("cast", [ctx.fx(t("clamped"))], {"to": "i32"}, y))

