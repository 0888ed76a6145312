"""LLVM reads of quantized weights (opmlc/ir/ops/_qweight.py) for the q-kernels: an i8 element
is a signed byte; an i4 element is a nibble of the packed bytes (element e in byte e >> 1, the
high nibble for even e), sign-extended by a shift left into the byte's top and an arithmetic
shift right by 4 (shift amounts 0 or 4: always in range)."""

from __future__ import annotations

from llvmlite import ir

from opmlc.backend.kernels._ir import I8, I32, c32, load, saturate32, sext64, shl, shr_round, store
from opmlc.ir.graph import Graph
from opmlc.ir.ops._qweight import split_inputs
from opmlc.ir.types import DType, TensorType


def load_q(b: ir.IRBuilder, ptr: ir.Value, idx: ir.Value, dtype: DType) -> ir.Value:
    """Element `idx` (i32) of an i8/i4 tensor, as a sign-extended i32."""
    if dtype is DType.I8:
        return b.sext(load(b, ptr, idx, I8), I32)
    byte = load(b, ptr, b.lshr(idx, c32(1)), I8)
    odd = b.trunc(b.and_(idx, c32(1)), I8)  # 1: the low nibble
    up = b.shl(byte, b.shl(odd, ir.Constant(I8, 2)))  # the wanted nibble in the byte's top half
    return b.sext(b.ashr(up, ir.Constant(I8, 4)), I32)


def nibbles(b: ir.IRBuilder, byte: ir.Value) -> tuple[ir.Value, ir.Value]:
    """The (high, low) signed nibbles of a packed byte (elements 2i and 2i + 1), as i32."""
    hi = b.ashr(byte, ir.Constant(I8, 4))
    lo = b.ashr(b.shl(byte, ir.Constant(I8, 4)), ir.Constant(I8, 4))
    return b.sext(hi, I32), b.sext(lo, I32)


def operands(args: list[ir.Value], types: list[TensorType]) -> tuple:
    """A q-kernel's operands: x, q, scale, the zero point and the bias (None where absent: both
    are optional inputs after the scale, ir/ops/_qweight.py split_inputs) and the bias's type."""
    zp_t, bias_t = split_inputs(types, 1)
    zp = args[3] if zp_t is not None else None
    bias = args[-1] if bias_t is not None else None
    return (*args[:3], zp, bias, bias_t)


def constant_qweight(graph: Graph, index: int, accepts) -> bool:
    """Whether a q-kernel that `accepts` node `index` may specialise on its weight: it accepts
    the node, and q and scale are initializers (a host kernel's derived buffer is made from
    them; kernels/native/__init__.py, "Constant operands")."""
    node = graph.nodes[index]
    return (accepts(graph.input_types(node), node.attrs, graph.values[node.output].type)
            and all(v in graph.initializers for v in node.inputs[1:3]))


def finish_output(b: ir.IRBuilder, acc: ir.Value, bias: ir.Value | None, bias_t: TensorType | None, j: ir.Value,
                  prod_frac: int, shift: int, out: ir.Value, index: ir.Value) -> None:
    """A q-kernel's last steps for one output (ir/ops/qmatmul.py): the exact sum `acc` (i64, at
    `prod_frac` fractional bits) plus the bias of column `j` when there is one, the rounding
    shift, the counted saturation, the store at out[index]."""
    if bias is not None:
        acc = b.add(acc, shl(b, sext64(b, load(b, bias, j)), prod_frac - bias_t.frac))
    store(b, saturate32(b, shr_round(b, acc, shift)), out, index)
