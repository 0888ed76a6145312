"""Kernel of opmlc/ir/ops/reshape.py: an element-by-element copy (row-major order is kept)."""

from __future__ import annotations

from llvmlite import ir

from opmlc.backend.kernels import kernel
from opmlc.backend.kernels._ir import ELEM, load, out_loop, store
from opmlc.ir.types import TensorType


@kernel("reshape")
def emit(b: ir.IRBuilder, out: ir.Value, args: list[ir.Value], types: list[TensorType], attrs: dict,
         out_type: TensorType) -> None:
    ty = ELEM[out_type.dtype]
    with out_loop(b, out_type.numel) as i:
        store(b, load(b, args[0], i, ty), out, i)
