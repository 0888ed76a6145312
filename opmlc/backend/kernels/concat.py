"""Kernel of opmlc/ir/ops/concat.py: each input copied (and, for fx32, converted to the output's
bits) into its slab of the output. A node part (kernels/_ir.py `part_range`) walks its own
output elements instead, each taken from the input whose slab holds it."""

from __future__ import annotations

from llvmlite import ir

from opmlc.backend.kernels import kernel
from opmlc.backend.kernels._fx import ld, st, to_fx
from opmlc.backend.kernels._ir import c32, linear_index, nest, out_nest, part_range, strides
from opmlc.ir.types import DType, TensorType


@kernel("concat")
def emit(b: ir.IRBuilder, out: ir.Value, args: list[ir.Value], types: list[TensorType], attrs: dict,
         out_type: TensorType) -> None:
    axis = attrs["axis"]
    so = strides(out_type.shape)
    dt = out_type.dtype

    def copy(ptr: ir.Value, t: TensorType, idx: list[ir.Value], at) -> None:
        """Input element idx of `t` to the output element at() (computed after the load)."""
        v = ld(b, ptr, linear_index(b, idx, strides(t.shape)), dt)
        if dt is DType.FX32:
            v = to_fx(b, v, t.frac, out_type.frac)
        st(b, v, out, at(), dt)

    if part_range(b) is not None:
        with out_nest(b, out_type.shape, "c") as idx:
            o = linear_index(b, idx, so)
            start = 0
            for ptr, t in zip(args, types, strict=True):
                if t.numel:  # an unsigned compare covers both ends of the slab
                    inside = b.icmp_unsigned("<", b.sub(idx[axis], c32(start)), c32(t.shape[axis]))
                    with b.if_then(inside):
                        copy(ptr, t, [*idx[:axis], b.sub(idx[axis], c32(start)), *idx[axis + 1:]], lambda: o)
                start += t.shape[axis]
        return
    start = 0
    for ptr, t in zip(args, types, strict=True):
        with nest(b, t.shape, f"c{start}") as idx:
            copy(ptr, t, idx, lambda idx=idx, at=start * so[axis]: b.add(linear_index(b, idx, so), c32(at)))
        start += t.shape[axis]
