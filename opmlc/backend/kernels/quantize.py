"""Kernel of opmlc/ir/ops/quantize.py (quantize_linear): three loops (outer, channel, inner),
the channel's multiplier and zero point loaded once per channel; the product in i64, the
shift constant, so every shift amount is known to be in range."""

from __future__ import annotations

from math import prod

from llvmlite import ir

from opmlc.backend.kernels import kernel
from opmlc.backend.kernels._fx import ld, smax, smin, st
from opmlc.backend.kernels._ir import c32, c64, loop
from opmlc.ir.types import DType, TensorType


@kernel("quantize_linear")
def emit(b: ir.IRBuilder, out: ir.Value, args: list[ir.Value], types: list[TensorType], attrs: dict,
         out_type: TensorType) -> None:
    shape = out_type.shape
    per_axis = any(t.shape != () for t in types[1:])
    axis = attrs.get("axis", 0) if per_axis else 0
    outer = prod(shape[:axis]) if per_axis else 1
    channels = shape[axis] if per_axis else 1
    inner = prod(shape[axis + 1:]) if per_axis else out_type.numel
    s = attrs["shift"]
    with loop(b, outer, "o") as o:
        with loop(b, channels, "c") as c:
            m = ld(b, args[1], c if types[1].shape else c32(0), DType.I32)
            zp = ld(b, args[2], c if types[2].shape else c32(0), DType.I32)
            base = b.mul(b.add(b.mul(o, c32(channels)), c), c32(inner))
            with loop(b, inner, "j") as j:
                i = b.add(base, j)
                p = b.mul(ld(b, args[0], i, DType.FX32), m)
                odd = b.and_(b.ashr(p, c64(s)), c64(1))
                r = b.ashr(b.add(b.add(p, c64((1 << (s - 1)) - 1)), odd), c64(s))
                r = smin(b, smax(b, b.add(r, zp), c64(attrs["qmin"])), c64(attrs["qmax"]))
                st(b, r, out, i, DType.I32)
