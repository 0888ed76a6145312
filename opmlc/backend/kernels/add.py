"""Kernel of opmlc/ir/ops/add.py: align both operands to max(fa, fb) bits, add in i64,
rescale to the output's bits, saturate; operands broadcast by zero strides."""

from __future__ import annotations

from llvmlite import ir

from opmlc.backend.kernels import kernel
from opmlc.backend.kernels._ir import (
    broadcast_strides,
    linear_index,
    load,
    nest,
    rescale,
    saturate32,
    sext64,
    shl,
    store,
    strides,
)
from opmlc.ir.types import TensorType


@kernel("add")
def emit(b: ir.IRBuilder, out: ir.Value, args: list[ir.Value], types: list[TensorType], attrs: dict,
         out_type: TensorType) -> None:
    shape = out_type.shape
    sa, sb = (broadcast_strides(t.shape, shape) for t in types)
    so = strides(shape)
    fa, fb = types[0].frac, types[1].frac
    top = max(fa, fb)
    with nest(b, shape) as idx:
        x = shl(b, sext64(b, load(b, args[0], linear_index(b, idx, sa))), top - fa)
        y = shl(b, sext64(b, load(b, args[1], linear_index(b, idx, sb))), top - fb)
        total = rescale(b, b.add(x, y), top, out_type.frac)
        store(b, saturate32(b, total), out, linear_index(b, idx, so))
