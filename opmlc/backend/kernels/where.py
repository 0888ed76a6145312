"""Kernel of opmlc/ir/ops/where.py: a broadcast loop nest selecting between two operands."""

from __future__ import annotations

from llvmlite import ir

from opmlc.backend.kernels import kernel
from opmlc.backend.kernels._fx import ld, st, to_fx_flagged
from opmlc.backend.kernels._ir import broadcast_strides, c64, count, linear_index, out_nest, strides
from opmlc.ir.types import DType, TensorType


@kernel("where")
def emit(b: ir.IRBuilder, out: ir.Value, args: list[ir.Value], types: list[TensorType], attrs: dict,
         out_type: TensorType) -> None:
    shape = out_type.shape
    sc, sa, sb = (broadcast_strides(t.shape, shape) for t in types)
    so = strides(shape)
    dt = out_type.dtype
    with out_nest(b, shape) as idx:  # a part: its flat elements only
        c = ld(b, args[0], linear_index(b, idx, sc), DType.BOOL)
        x = ld(b, args[1], linear_index(b, idx, sa), dt)
        y = ld(b, args[2], linear_index(b, idx, sb), dt)
        sat_x = sat_y = None
        if dt is DType.FX32:
            x32, sat_x = to_fx_flagged(b, x, types[1].frac, out_type.frac)
            x = b.sext(x32, x.type)
            y32, sat_y = to_fx_flagged(b, y, types[2].frac, out_type.frac)
            y = b.sext(y32, y.type)
        pick = b.icmp_signed("!=", c, c64(0))
        if sat_x is not None:  # only the chosen operand's saturation counts (ops/where.py)
            count(b, b.select(pick, sat_x, sat_y))
        st(b, b.select(pick, x, y), out, linear_index(b, idx, so), dt)
