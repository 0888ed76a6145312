"""Kernel of opmlc/ir/ops/where.py: a broadcast loop nest selecting between two operands."""

from __future__ import annotations

from llvmlite import ir

from opmlc.backend.kernels import kernel
from opmlc.backend.kernels._fx import ld, st, to_fx
from opmlc.backend.kernels._ir import broadcast_strides, c64, linear_index, nest, strides
from opmlc.ir.types import DType, TensorType


@kernel("where")
def emit(b: ir.IRBuilder, out: ir.Value, args: list[ir.Value], types: list[TensorType], attrs: dict,
         out_type: TensorType) -> None:
    shape = out_type.shape
    sc, sa, sb = (broadcast_strides(t.shape, shape) for t in types)
    so = strides(shape)
    dt = out_type.dtype
    with nest(b, shape) as idx:
        c = ld(b, args[0], linear_index(b, idx, sc), DType.BOOL)
        x = ld(b, args[1], linear_index(b, idx, sa), dt)
        y = ld(b, args[2], linear_index(b, idx, sb), dt)
        if dt is DType.FX32:
            x = b.sext(to_fx(b, x, types[1].frac, out_type.frac), x.type)
            y = b.sext(to_fx(b, y, types[2].frac, out_type.frac), y.type)
        st(b, b.select(b.icmp_signed("!=", c, c64(0)), x, y), out, linear_index(b, idx, so), dt)
