"""Kernel of opmlc/ir/ops/concat.py: each input copied (and, for fx32, converted to the output's
bits) into its slab of the output."""

from __future__ import annotations

from llvmlite import ir

from opmlc.backend.kernels import kernel
from opmlc.backend.kernels._fx import ld, st, to_fx
from opmlc.backend.kernels._ir import c32, linear_index, nest, strides
from opmlc.ir.types import DType, TensorType


@kernel("concat")
def emit(b: ir.IRBuilder, out: ir.Value, args: list[ir.Value], types: list[TensorType], attrs: dict,
         out_type: TensorType) -> None:
    axis = attrs["axis"]
    so = strides(out_type.shape)
    dt = out_type.dtype
    start = 0
    for ptr, t in zip(args, types, strict=True):
        with nest(b, t.shape, f"c{start}") as idx:
            v = ld(b, ptr, linear_index(b, idx, strides(t.shape)), dt)
            if dt is DType.FX32:
                v = to_fx(b, v, t.frac, out_type.frac)
            o = b.add(linear_index(b, idx, so), c32(start * so[axis]))
            st(b, v, out, o, dt)
        start += t.shape[axis]
