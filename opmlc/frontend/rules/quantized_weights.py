"""The model's own quantized weights (docs/DESIGN.md "ONNX quantized formats"): ONNX's integers
kept as the IR's quantized weight (ir/ops/_qweight.py), exactly, never re-quantized.

Where it sits: between the lowering rules and the context. `given_qweight` makes the
initializers; QDQ's weight side is recorded before folding (`record_qdq_weight`, called by
frontend/lower.py) and taken by the Conv, MatMul/Gemm and Gather rules (`qdq_conv_weight`,
`qdq_matmul_weight`, `qdq_gather_table`); `hoist_dequantize_of_gather` rewrites
quantize_dynamic's embedding so its table is such a weight; com.microsoft MatMulNBits is lowered
here. The QOperator rules (rules/quantized.py) use `given_qweight` for their integer weights.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import onnx

from opmlc.frontend.context import Const, LoweringContext, QWeightRefs
from opmlc.frontend.rules import rule
from opmlc.ir.types import MAX_FRAC, DType, TensorType

MS = "com.microsoft"
_T = onnx.TensorProto
# ONNX's integer types by element type, as numpy (ml_dtypes) names them
ONNX_QTYPE = {_T.INT2: "int2", _T.UINT2: "uint2", _T.INT4: "int4", _T.UINT4: "uint4", _T.INT8: "int8",
              _T.UINT8: "uint8", _T.INT16: "int16", _T.UINT16: "uint16", _T.INT32: "int32"}


def _opt(node: onnx.NodeProto, i: int) -> str | None:
    return node.input[i] if len(node.input) > i and node.input[i] else None


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


def weight_qtype(arr: np.ndarray) -> str | None:
    name = str(np.asarray(arr).dtype)
    return name if name in QWEIGHT_TYPES else None


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
    qtype = weight_qtype(q) if q is not None else None
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
