"""Kernel of opmlc/ir/ops/psum.py: per output element the wrap-around i64 sum of the partial
sums, a mean's rounded division, the finish (to_fx, or a wrap to int32). Ranged by out_loop."""

from __future__ import annotations

from llvmlite import ir

from opmlc.backend.kernels import kernel
from opmlc.backend.kernels._fx import ld, round_div, st, to_fx
from opmlc.backend.kernels._ir import c64, out_loop
from opmlc.ir.types import DType, TensorType


@kernel("psum")
def emit(b: ir.IRBuilder, out: ir.Value, args: list[ir.Value], types: list[TensorType], attrs: dict,
         out_type: TensorType) -> None:
    d = attrs.get("divisor", 1)
    with out_loop(b, out_type.numel) as i:  # a part: its flat elements only
        s = ld(b, args[0], i, DType.I64)
        for a in args[1:]:
            s = b.add(s, ld(b, a, i, DType.I64))
        if d > 1:
            s = round_div(b, s, c64(d))
        if out_type.dtype is DType.FX32:
            s = to_fx(b, s, attrs["from_frac"], attrs["frac"])
        st(b, s, out, i, out_type.dtype)
