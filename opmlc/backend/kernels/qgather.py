"""Kernel of opmlc/ir/ops/qgather.py: for each (run-time) index, gather's bounds check, then
the selected row dequantized block by block: (q − zp) · scale in i64, one rounding shift,
saturation. An index out of range reads row 0 (so no read leaves the table) and writes zeros;
its elements never count as saturated. A node part (kernels/_ir.py `part_range`) does the same
for each of its flat output elements."""

from __future__ import annotations

from llvmlite import ir

from opmlc.backend.kernels import kernel
from opmlc.backend.kernels._fx import ld
from opmlc.backend.kernels._ir import (
    I32,
    c32,
    c64,
    count,
    load,
    loop,
    out_of_int32,
    part_range,
    saturate32,
    sext64,
    shr_round,
    store,
    uncounted,
)
from opmlc.backend.kernels._qweight import load_q
from opmlc.ir.types import TensorType


@kernel("qgather")
def emit(b: ir.IRBuilder, out: ir.Value, args: list[ir.Value], types: list[TensorType], attrs: dict,
         out_type: TensorType) -> None:
    qt, st, idx_t = types[0], types[1], types[-1]
    q, scale, idx = args[0], args[1], args[-1]
    zp = args[2] if len(args) == 4 else None
    v, d = qt.shape
    nb = st.shape[1]
    bs = attrs["block_size"]
    shift = st.frac - out_type.frac

    def row_of(j: ir.Value) -> tuple[ir.Value, ir.Value]:
        """(in range, the table row) index j selects."""
        i = ld(b, idx, j, idx_t.dtype)
        i = b.select(b.icmp_signed("<", i, c64(0)), b.add(i, c64(v)), i)
        ok = b.and_(b.icmp_signed(">=", i, c64(0)), b.icmp_signed("<", i, c64(v)))
        return ok, b.trunc(b.select(ok, i, c64(0)), I32)

    def element(ok: ir.Value, row: ir.Value, col: ir.Value, zpv: ir.Value, sv: ir.Value, dst) -> None:
        """Column col of the selected row, dequantized, to the output element dst()."""
        w = b.mul(sext64(b, b.sub(load_q(b, q, b.add(b.mul(row, c32(d)), col), qt.dtype), zpv)), sv)
        r = shr_round(b, w, shift)
        with uncounted(b):  # only the rows an index selects count
            res = saturate32(b, r)
        count(b, b.and_(ok, out_of_int32(b, r)))
        store(b, b.select(ok, res, c32(0)), out, dst())

    rng = part_range(b)
    if rng is not None:
        with loop(b, rng[1], "e", start=rng[0]) as e:
            if v == 0:
                store(b, c32(0), out, e)
            else:
                ok, row = row_of(b.udiv(e, c32(d)))
                col = b.urem(e, c32(d))
                cell = b.add(b.mul(row, c32(nb)), b.udiv(col, c32(bs)))
                zpv = load_q(b, zp, cell, qt.dtype) if zp is not None else c32(0)
                element(ok, row, col, zpv, sext64(b, load(b, scale, cell)), lambda: e)
        return
    with loop(b, idx_t.numel, "j") as j:
        dst = b.mul(j, c32(d))
        if v == 0:
            with loop(b, d, "e") as e:
                store(b, c32(0), out, b.add(dst, e))
        else:
            ok, row = row_of(j)
            with loop(b, nb, "blk") as blk:
                cell = b.add(b.mul(row, c32(nb)), blk)
                zpv = load_q(b, zp, cell, qt.dtype) if zp is not None else c32(0)
                sv = sext64(b, load(b, scale, cell))
                k0 = b.mul(blk, c32(bs))
                # the last block may be shorter: min(bs, d − k0) elements
                length = b.sub(c32(d), k0)
                length = b.select(b.icmp_unsigned("<", length, c32(bs)), length, c32(bs))
                with loop(b, length, "e") as e:
                    col = b.add(k0, e)
                    element(ok, row, col, zpv, sv, lambda: b.add(dst, col))
