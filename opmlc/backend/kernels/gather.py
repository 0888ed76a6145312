"""Kernel of opmlc/ir/ops/gather.py: for each outer index and each (run-time) index, one
bounds check, then a copy of the selected slice, or zeros when the index is out of range (the
load is redirected to slice 0 then, so no read leaves the data). A node part (kernels/_ir.py
`part_range`) does the same for each of its flat output elements."""

from __future__ import annotations

from math import prod

from llvmlite import ir

from opmlc.backend.kernels import kernel
from opmlc.backend.kernels._fx import ld, st
from opmlc.backend.kernels._ir import I32, c32, c64, flat_index, loop, part_range
from opmlc.ir.types import TensorType


@kernel("gather")
def emit(b: ir.IRBuilder, out: ir.Value, args: list[ir.Value], types: list[TensorType], attrs: dict,
         out_type: TensorType) -> None:
    data_t, idx_t = types
    axis = attrs["axis"]
    outer = prod(data_t.shape[:axis])
    n = data_t.shape[axis]
    inner = prod(data_t.shape[axis + 1:])
    m = idx_t.numel
    dt = out_type.dtype

    def row_of(o: ir.Value, j: ir.Value) -> tuple[ir.Value, ir.Value]:
        """(in range, the first source element of the slice index j selects under outer o)."""
        i = ld(b, args[1], j, idx_t.dtype)
        i = b.select(b.icmp_signed("<", i, c64(0)), b.add(i, c64(n)), i)
        ok = b.and_(b.icmp_signed(">=", i, c64(0)), b.icmp_signed("<", i, c64(n)))
        row = b.trunc(b.select(ok, i, c64(0)), I32)
        return ok, b.mul(b.add(b.mul(o, c32(n)), row), c32(inner))

    rng = part_range(b)
    if rng is not None:
        with loop(b, rng[1], "e", start=rng[0]) as e:
            o, j, k = flat_index(b, e, (outer, m, inner))
            if n == 0:
                st(b, c64(0), out, e, dt)
            else:
                ok, src = row_of(o, j)
                st(b, b.select(ok, ld(b, args[0], b.add(src, k), dt), c64(0)), out, e, dt)
        return
    with loop(b, outer, "o") as o, loop(b, m, "j") as j:
        dst = b.mul(b.add(b.mul(o, c32(m)), j), c32(inner))
        if n == 0:
            with loop(b, inner, "k") as k:
                st(b, c64(0), out, b.add(dst, k), dt)
        else:
            ok, src = row_of(o, j)
            with loop(b, inner, "k") as k:
                v = ld(b, args[0], b.add(src, k), dt)
                st(b, b.select(ok, v, c64(0)), out, b.add(dst, k), dt)
