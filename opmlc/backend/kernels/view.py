"""Kernel of opmlc/ir/ops/view.py: a loop nest over the output computing each source index
(offset + Σ i_k·stride_k, i32 arithmetic without overflow flags); outside the box the fill is
stored and the load is redirected to element 0 so that no read leaves the input."""

from __future__ import annotations

from llvmlite import ir

from opmlc.backend.kernels import kernel
from opmlc.backend.kernels._fx import ld, st
from opmlc.backend.kernels._ir import I1, I64, c32, c64, linear_index, out_nest, strides
from opmlc.ir.ops.view import box
from opmlc.ir.types import TensorType


@kernel("view")
def emit(b: ir.IRBuilder, out: ir.Value, args: list[ir.Value], types: list[TensorType], attrs: dict,
         out_type: TensorType) -> None:
    shape = out_type.shape
    dt = out_type.dtype
    lo, hi = box(attrs, shape)
    fill = c64(int(attrs.get("fill", 0)))
    so = strides(shape)
    with out_nest(b, shape) as idx:  # a part: its flat elements only
        if types[0].numel == 0:
            st(b, fill, out, linear_index(b, idx, so), dt)
        else:
            src = b.add(c32(attrs["offset"]), linear_index(b, idx, attrs["strides"]))
            ok = ir.Constant(I1, 1)
            for k, i in enumerate(idx):
                if lo[k] > 0:
                    ok = b.and_(ok, b.icmp_signed(">=", i, c32(lo[k])))
                if hi[k] < shape[k]:
                    ok = b.and_(ok, b.icmp_signed("<", i, c32(hi[k])))
            v = ld(b, args[0], b.select(ok, src, c32(0)), dt)
            st(b, b.select(ok, v, fill), out, linear_index(b, idx, so), dt)


__all__ = ["I64", "emit"]
