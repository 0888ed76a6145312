"""Kernel of opmlc/ir/ops/quantize.py (quantize_linear): three loops (outer, channel, inner),
the channel's multiplier and zero point loaded once per channel (or one flat loop when they
are given per element); the product in i64, the shift constant, so every shift amount is
known to be in range. A node part (kernels/_ir.py `part_range`) takes its flat elements, each
with its channel's multiplier and zero point."""

from __future__ import annotations

from math import prod

from llvmlite import ir

from opmlc.backend.kernels import kernel
from opmlc.backend.kernels._fx import ld, smax, smin, st
from opmlc.backend.kernels._ir import c32, c64, loop, out_loop, part_range
from opmlc.ir.types import DType, TensorType


@kernel("quantize_linear")
def emit(b: ir.IRBuilder, out: ir.Value, args: list[ir.Value], types: list[TensorType], attrs: dict,
         out_type: TensorType) -> None:
    shape = out_type.shape
    s = attrs["shift"]
    if any(t.shape == shape and t.shape != () for t in types[1:]):  # per element (blocked)
        with out_loop(b, out_type.numel) as i:
            m = ld(b, args[1], i if types[1].shape else c32(0), DType.I32)
            zp = ld(b, args[2], i if types[2].shape else c32(0), DType.I32)
            st(b, _quantize(b, ld(b, args[0], i, DType.FX32), m, zp, s, attrs), out, i, DType.I32)
        return
    per_axis = any(t.shape != () for t in types[1:])
    axis = attrs.get("axis", 0) if per_axis else 0
    outer = prod(shape[:axis]) if per_axis else 1
    channels = shape[axis] if per_axis else 1
    inner = prod(shape[axis + 1:]) if per_axis else out_type.numel
    rng = part_range(b)
    if rng is not None:  # a node part: its flat elements, each with its channel's constants
        with loop(b, rng[1], "e", start=rng[0]) as i:
            c = b.urem(b.udiv(i, c32(inner)), c32(channels))
            m = ld(b, args[1], c if types[1].shape else c32(0), DType.I32)
            zp = ld(b, args[2], c if types[2].shape else c32(0), DType.I32)
            st(b, _quantize(b, ld(b, args[0], i, DType.FX32), m, zp, s, attrs), out, i, DType.I32)
        return
    with loop(b, outer, "o") as o:
        with loop(b, channels, "c") as c:
            m = ld(b, args[1], c if types[1].shape else c32(0), DType.I32)
            zp = ld(b, args[2], c if types[2].shape else c32(0), DType.I32)
            base = b.mul(b.add(b.mul(o, c32(channels)), c), c32(inner))
            with loop(b, inner, "j") as j:
                i = b.add(base, j)
                st(b, _quantize(b, ld(b, args[0], i, DType.FX32), m, zp, s, attrs), out, i, DType.I32)


def _quantize(b: ir.IRBuilder, x: ir.Value, m: ir.Value, zp: ir.Value, s: int, attrs: dict) -> ir.Value:
    """clamp(rhe(x·m / 2^s) + zp, qmin, qmax) on i64 values (the op's formula)."""
    p = b.mul(x, m)
    odd = b.and_(b.ashr(p, c64(s)), c64(1))
    r = b.ashr(b.add(b.add(p, c64((1 << (s - 1)) - 1)), odd), c64(s))
    return smin(b, smax(b, b.add(r, zp), c64(attrs["qmin"])), c64(attrs["qmax"]))
