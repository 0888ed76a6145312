"""Kernel of opmlc/ir/ops/relu.py: max(x, 0) over the flat tensor."""

from __future__ import annotations

from llvmlite import ir

from opmlc.backend.kernels import kernel
from opmlc.backend.kernels._ir import c32, load, out_loop, store
from opmlc.ir.types import TensorType


@kernel("relu")
def emit(b: ir.IRBuilder, out: ir.Value, args: list[ir.Value], types: list[TensorType], attrs: dict,
         out_type: TensorType) -> None:
    with out_loop(b, out_type.numel) as i:
        x = load(b, args[0], i)
        store(b, b.select(b.icmp_signed("<", x, c32(0)), c32(0), x), out, i)
