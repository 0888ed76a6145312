"""Rules for ONNX's quantized formats, as onnxruntime's quantizers export them.

- QDQ: QuantizeLinear onto the IR's `quantize_linear` (fx32 → the integers, rounded half to
  even and saturated to the quantized type), DequantizeLinear onto cast + sub + mul (exact
  integers, then one rounding of (q − zp)·scale). A DequantizeLinear of a constant weight is
  folded at compile time (frontend/fold.py): the float op after it sees an fx32 weight.
- QOperator: QLinearConv, QLinearMatMul, com.microsoft QGemm, MatMulInteger and ConvInteger
  accumulate exactly (x − x_zp)·(w − w_zp) (+ the int32 bias) as an fx32 tensor at 0 bits —
  the int32 onnxruntime computes — and the QLinear forms requantize it with
  `quantize_linear`, multiplier x_scale·w_scale/y_scale computed in float32 as onnxruntime
  does (held exactly: a float32 mantissa fits the 31-bit multiplier).
- DynamicQuantizeLinear: min/max reductions, the scale (max − min)/255, and x·255/(max − min)
  by one division at 30 bits, rounded half to even.
- com.microsoft MatMulNBits: the packed 4-bit weight is dequantized at compile time into an
  fx32 weight of the IR's matmul.

Values of a quantized type (int4/uint4/int8/uint8/int16/uint16) are i32 IR values. Semantics
and error bounds against onnxruntime: docs/DESIGN.md "ONNX quantized formats".
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import onnx

from opmlc.frontend.context import Const, LoweringContext, QWeightRefs
from opmlc.frontend.rules import rule
from opmlc.frontend.rules.cnn import resolve_pads
from opmlc.frontend.rules.shape import reshape_to
from opmlc.ir import fixedpoint as fp
from opmlc.ir.ops.quantize import MAX_SHIFT, MIN_SHIFT, channel_shape
from opmlc.ir.types import MAX_FRAC, DType, TensorType

MS = "com.microsoft"
_T = onnx.TensorProto
# the quantized types ONNX has and their ranges, by numpy dtype name (int2/int4…: ml_dtypes)
QRANGE = {"int2": (-2, 1), "uint2": (0, 3), "int4": (-8, 7), "uint4": (0, 15), "int8": (-128, 127), "uint8": (0, 255),
          "int16": (-(2**15), 2**15 - 1), "uint16": (0, 2**16 - 1), "int32": (fp.INT32_MIN, fp.INT32_MAX)}
ONNX_QTYPE = {_T.INT2: "int2", _T.UINT2: "uint2", _T.INT4: "int4", _T.UINT4: "uint4", _T.INT8: "int8", _T.UINT8: "uint8", _T.INT16: "int16",
              _T.UINT16: "uint16", _T.INT32: "int32"}
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


# the integer types a quantized weight (ir/ops/_qweight.py) keeps as they are: (IR dtype, bits)
QWEIGHT_TYPES = {"int8": (DType.I8, 8), "uint8": (DType.I8, 8), "int4": (DType.I4, 4), "uint4": (DType.I4, 4),
                 "int2": (DType.I4, 4), "uint2": (DType.I4, 4)}  # 2-bit integers held in i4


def given_qweight(ctx: LoweringContext, name: str, q: np.ndarray, zp: np.ndarray, qtype: str,
                  scale: np.ndarray | None, block_size: int) -> QWeightRefs:
    """ONNX's own integers as the IR's quantized weight, exactly (no re-quantization): q
    [N, …] (output channel first), zp and scale [N, nb] (nb blocks of the reduction axis).
    Unsigned types are shifted by 2^(bits − 1), q and zp alike (q − zp is unchanged). Without
    a scale (the integer ops) the scale is 1 at 0 bits: the product is the exact integer
    accumulation. A scale is rounded to the bits `QuantPolicy.scale_frac` allows."""
    dtype, bits = QWEIGHT_TYPES[qtype]
    q = np.asarray(q, np.int64)
    zp = np.broadcast_to(np.asarray(zp, np.int64), (q.shape[0], -(-int(np.prod(q.shape[1:])) // block_size)))
    if qtype.startswith("u"):
        q, zp = q - (1 << (bits - 1)), zp - (1 << (bits - 1))
    if scale is None:
        fs, raw = 0, np.ones(zp.shape, np.int64)
    else:
        scale = np.broadcast_to(np.asarray(scale, np.float64), zp.shape)
        k = int(np.prod(q.shape[1:]))
        d = np.abs(q.reshape(q.shape[0], -1) - np.repeat(zp, block_size, 1)[:, :k])
        nb = zp.shape[1]
        dmax = np.pad(d, ((0, 0), (0, nb * block_size - k))).reshape(q.shape[0], nb, block_size).max(2)
        # as many bits as fit (the model's scales are given: keep them as exact as an int32
        # allows), fewer where the range analysis's accumulator rule overrides them
        peak = float((dmax * scale).max(initial=0.0))
        fits = MAX_FRAC if peak == 0.0 else 30 - max(0, math.ceil(math.log2(peak + 1e-300)))
        fs = max(0, min(MAX_FRAC, fits, ctx.policy.overrides.get(f"{name}/scale", MAX_FRAC)))
        while True:  # |q − zp| · scale must stay an int32 (the weight fits where an fx32 one would)
            raw = np.rint(scale * 2.0**fs).astype(np.int64)
            if fs == 0 or int((dmax * raw).max(initial=0)) < 1 << 31:
                break
            fs -= 1
    b = ctx.builder
    q_ref = b.add_initializer(name, q.astype(np.int8), TensorType(dtype, q.shape))
    s_ref = b.add_initializer(f"{name}/scale", raw.astype(np.int32), TensorType(DType.FX32, raw.shape, fs))
    z_ref = None
    if np.any(zp != 0):
        z_ref = b.add_initializer(f"{name}/zero_point", zp.astype(np.int8), TensorType(dtype, zp.shape))
    return QWeightRefs(q_ref, s_ref, z_ref, block_size)


def _weight_qtype(arr: np.ndarray) -> str | None:
    name = str(np.asarray(arr).dtype)
    return name if name in QWEIGHT_TYPES else None


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

@dataclass(frozen=True)
class QDQWeight:
    """A DequantizeLinear of constant integers of a weight type: what the float op consuming
    its (folded) output may keep as a quantized weight instead."""

    q: np.ndarray
    scale: np.ndarray
    zp: np.ndarray
    axis: int
    block_size: int
    qtype: str


def record_qdq_weight(ctx: LoweringContext, node: onnx.NodeProto, arrays: list[np.ndarray | None]) -> None:
    """Called for a DequantizeLinear whose inputs are all constants, before it is folded: note
    its integers when they are of a weight type (int8/uint8/int4/uint4)."""
    q = arrays[0]
    qtype = _weight_qtype(q) if q is not None else None
    if qtype is None or arrays[1] is None:
        return
    a = {x.name: onnx.helper.get_attribute_value(x) for x in node.attribute}
    zp = arrays[2] if len(arrays) > 2 and arrays[2] is not None else np.zeros((), np.int64)
    axis = int(a.get("axis", 1))
    axis = axis + q.ndim if axis < 0 else axis
    ctx.qdq_weights[node.output[0]] = QDQWeight(np.asarray(q).astype(np.int64), np.asarray(arrays[1], np.float64),
                                                np.asarray(zp).astype(np.int64), axis, int(a.get("block_size", 0)),
                                                qtype)


def _rows_layout(d: QDQWeight, out_axis: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, int] | None:
    """(q [N, …], zp [N, nb], scale [N, nb], block size) with the output channels along
    `out_axis` of d.q moved first, or None when the scales run along the reduction in a way a
    quantized weight cannot hold (per input channel)."""
    q = np.moveaxis(d.q, out_axis, 0)
    n, k = q.shape[0], int(np.prod(q.shape[1:]))
    if d.scale.size == 1:
        return q, np.broadcast_to(d.zp.reshape(-1)[:1], (n, 1)), np.full((n, 1), float(d.scale.reshape(-1)[0])), k
    if d.block_size == 0 and d.axis == out_axis and d.scale.ndim == 1:  # per output channel
        zp = np.broadcast_to(d.zp.reshape(-1, 1) if d.zp.size > 1 else d.zp.reshape(1, 1), (n, 1))
        return q, zp, d.scale.reshape(n, 1), k
    if d.block_size and q.ndim == 2 and d.axis != out_axis:  # blocks along the reduction axis
        scale = np.moveaxis(d.scale, out_axis, 0)
        zp = np.moveaxis(np.broadcast_to(d.zp, d.scale.shape), out_axis, 0) if d.zp.size > 1 else \
            np.broadcast_to(d.zp.reshape(-1)[:1], scale.shape)
        return q, zp, scale, d.block_size
    return None


def qdq_matmul_weight(ctx: LoweringContext, b_name: str, transposed_from: str | None) -> QWeightRefs | None:
    """The quantized weight of a MatMul/Gemm B ([N, K] after the rule's transposition) that a
    DequantizeLinear of constant integers made: `transposed_from` names the [K, N] original
    (MatMul, Gemm without transB), else b_name itself is the [N, K] one (Gemm with transB)."""
    d = ctx.qdq_weights.get(transposed_from or b_name)
    if d is None or d.q.ndim != 2:
        return None
    parts = _rows_layout(d, 1 if transposed_from else 0)
    if parts is None:
        return None
    q, zp, scale, bs = parts
    return given_qweight(ctx, f"{b_name}/q", np.ascontiguousarray(q), zp, d.qtype, scale, bs)


def qdq_gather_table(ctx: LoweringContext, table: str) -> QWeightRefs | None:
    """The quantized weight of an embedding table [V, D] made by a DequantizeLinear of constant
    integers (per tensor, per row, or blocked along D), for `qgather`."""
    d = ctx.qdq_weights.get(table)
    if d is None or d.q.ndim != 2:
        return None
    parts = _rows_layout(d, 0)
    if parts is None:
        return None
    q, zp, scale, bs = parts
    return given_qweight(ctx, f"{table}/q", q, zp, d.qtype, scale, bs)


def hoist_dequantize_of_gather(model: onnx.ModelProto) -> onnx.ModelProto:
    """Gather(Q, ids) → DequantizeLinear(·, s, zp) with a constant integer table Q and a per-tensor
    s, zp (quantize_dynamic's embedding) becomes DequantizeLinear(Q, s, zp) → Gather(·, ids):
    the same values (an elementwise map with one scale commutes with a row lookup), and the
    table's DequantizeLinear is then QDQ's weight side, kept as a quantized table (qgather)."""
    g = model.graph
    inits = {t.name: t for t in g.initializer}
    users: dict[str, list[onnx.NodeProto]] = {}
    for n in g.node:
        for i in n.input:
            users.setdefault(i, []).append(n)
    outputs = {o.name for o in g.output}
    new_nodes, dropped = [], set()
    for n in g.node:
        if id(n) in dropped:
            continue
        dq = users.get(n.output[0], []) if n.op_type == "Gather" and n.domain in ("", "ai.onnx") else []
        if (len(dq) != 1 or dq[0].op_type != "DequantizeLinear" or dq[0].input[0] != n.output[0]
                or n.output[0] in outputs or n.input[0] not in inits
                or ONNX_QTYPE.get(inits[n.input[0]].data_type) not in QWEIGHT_TYPES
                or any(p not in inits or np.prod(inits[p].dims, dtype=np.int64) != 1 for p in dq[0].input[1:] if p)):
            new_nodes.append(n)
            continue
        table = f"{n.input[0]}/dequantized"
        new_nodes.append(onnx.helper.make_node("DequantizeLinear", [n.input[0], *dq[0].input[1:]], [table],
                                               name=f"{dq[0].name}/table"))
        gather = onnx.NodeProto()
        gather.CopyFrom(n)
        gather.input[0] = table
        gather.output[0] = dq[0].output[0]
        new_nodes.append(gather)
        dropped.add(id(dq[0]))
    if not dropped:
        return model
    del g.node[:]
    g.node.extend(new_nodes)
    return model


def qdq_conv_weight(ctx: LoweringContext, w_name: str) -> QWeightRefs | None:
    """The quantized weight of a Conv weight [M, C/g, *K] made by a DequantizeLinear of
    constant integers, per tensor or per output channel."""
    d = ctx.qdq_weights.get(w_name)
    if d is None or d.block_size:
        return None
    parts = _rows_layout(d, 0)
    if parts is None:
        return None
    q, zp, scale, bs = parts
    return given_qweight(ctx, f"{w_name}/q", q, zp, d.qtype, scale, bs)


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
    qtype = _weight_qtype(wc) if wc is not None else None
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
        qtype = _weight_qtype(ctx.const(b))
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


# -- com.microsoft MatMulNBits ---------------------------------------------------------------

def unpack_nbits(packed: np.ndarray, bits: int, count: int) -> np.ndarray:
    """The first `count` unsigned `bits`-wide values of each row of packed bytes, low bits first."""
    packed = np.asarray(packed, np.uint8)
    per = 8 // bits
    shifts = (np.arange(per) * bits).astype(np.uint8)
    vals = (packed[..., None] >> shifts) & np.uint8((1 << bits) - 1)
    return vals.reshape(*packed.shape[:-1], -1)[..., :count].astype(np.int64)


def matmul_nbits_parts(ctx: LoweringContext, node: onnx.NodeProto):
    """(q [N, K] unsigned, zp [N, nb] unsigned or float, scales [N, nb], block size, bits) of a
    MatMulNBits node: B packed [N, nb, blob] low bits first, zero points packed likewise per
    row (default 2^(bits − 1)) or of the scales' float type."""
    a = ctx.attrs()
    k, n, bits, block = int(a["K"]), int(a["N"]), int(a.get("bits", 4)), int(a["block_size"])
    if bits not in (2, 4, 8):
        raise ctx.unsupported(f"MatMulNBits with bits={bits} (supported: 2, 4, 8)")
    if _opt(node, 4) is not None:
        raise ctx.unsupported("MatMulNBits with g_idx (act-order); re-export without it")
    n_blocks = -(-k // block)
    q = unpack_nbits(ctx.require_const(node.input[1], "the packed weight B").reshape(n, n_blocks, -1),
                     bits, block).reshape(n, n_blocks * block)[:, :k]
    scales = np.asarray(ctx.require_const(node.input[2], "scales"), np.float64).reshape(n, n_blocks)
    zp_name = _opt(node, 3)
    if zp_name is None:
        zp = np.full((n, n_blocks), 1 << (bits - 1), np.int64)
    else:
        zarr = np.asarray(ctx.require_const(zp_name, "zero_points"))
        if np.issubdtype(zarr.dtype, np.floating):  # zero points of the scales' type
            zp = zarr.astype(np.float64).reshape(n, n_blocks)
        else:
            zp = unpack_nbits(zarr.reshape(n, -1), bits, n_blocks)
    return q, zp, scales, block, bits


def matmul_nbits_weight(ctx: LoweringContext, node: onnx.NodeProto) -> np.ndarray:
    """The float weight [N, K] of a MatMulNBits node: (q − zp)·scale per block of the K axis."""
    q, zp, scales, block, _ = matmul_nbits_parts(ctx, node)
    blk = np.arange(q.shape[1]) // block
    return (q - zp[:, blk]) * scales[:, blk]


@rule(f"{MS}:MatMulNBits")
def matmul_nbits(ctx: LoweringContext, node: onnx.NodeProto) -> None:
    """A @ Wᵀ (+ bias) onto `qmatmul`, the packed integers kept as an i4 (bits 2, 4) or i8
    (bits 8) quantized weight with the given zero points and scales (rounded to fixed point);
    float zero points are dequantized at compile time onto `matmul` instead."""
    from opmlc.frontend.rules.linear import matmul

    out = node.output[0]
    q, zp, scales, block, bits = matmul_nbits_parts(ctx, node)
    bias = _opt(node, 5)
    x = ctx.fx(node.input[0])
    if np.issubdtype(zp.dtype, np.integer) and len(ctx.builder.type_of(x).shape) >= 2:
        qw = given_qweight(ctx, f"{out}/W", q, zp, "uint8" if bits == 8 else "uint4", scales, block)
        inputs = [x, *qw.operands()]
        prod_frac = ctx.frac_of(x) + ctx.frac_of(qw.scale)
        if bias:
            b = np.asarray(ctx.require_const(bias, "the bias"), np.float64)
            inputs.append(ctx.const_ref(bias, b, max_frac=prod_frac))
        attrs = {"block_size": block, "frac": min(ctx.policy.activation(out), prod_frac)}
        ctx.bind(out, ctx.emit("qmatmul", inputs, attrs, out))
        return
    w = matmul_nbits_weight(ctx, node)
    wname = f"{out}/W"
    ctx.bind(wname, Const(np.ascontiguousarray(w.T).astype(np.float32)))  # [K, N], as MatMul's B
    mm_out = f"{out}/mm" if bias else out
    saved = ctx.node
    ctx.node = onnx.helper.make_node("MatMul", [node.input[0], wname], [mm_out], name=node.name)
    try:
        matmul(ctx, ctx.node)
        if bias:
            from opmlc.frontend.rules.logs import bin_

            bin_(ctx, "add", mm_out, bias, out)
    finally:
        ctx.node = saved
