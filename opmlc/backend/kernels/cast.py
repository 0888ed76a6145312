"""Kernel of opmlc/ir/ops/cast.py: one flat loop converting each element."""

from __future__ import annotations

from llvmlite import ir

from opmlc.backend.kernels import kernel
from opmlc.backend.kernels._fx import ld, st, to_fx
from opmlc.backend.kernels._ir import c64, out_loop
from opmlc.ir.types import DType, TensorType


@kernel("cast")
def emit(b: ir.IRBuilder, out: ir.Value, args: list[ir.Value], types: list[TensorType], attrs: dict,
         out_type: TensorType) -> None:
    src = types[0]
    with out_loop(b, out_type.numel) as i:
        x = ld(b, args[0], i, src.dtype)
        if out_type.dtype is DType.BOOL:
            r = b.icmp_signed("!=", x, c64(0))
        elif out_type.dtype is DType.FX32:
            r = to_fx(b, x, src.frac, out_type.frac)
        elif src.dtype is DType.FX32 and src.frac:
            f = c64(src.frac)
            r = b.select(b.icmp_signed("<", x, c64(0)), b.sub(c64(0), b.ashr(b.sub(c64(0), x), f)), b.ashr(x, f))
        else:
            r = x
        st(b, r, out, i, out_type.dtype)
