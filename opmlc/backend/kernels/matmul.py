"""Kernel of opmlc/ir/ops/matmul.py: per output element an i64 dot product (plus the shifted
bias), one rounding shift, saturation. With `transpose_b` both operands of the inner loop are
contiguous rows: the host vectorises it, MIPS keeps the sum in HI/LO with `madd`."""

from __future__ import annotations

import numpy as np
from llvmlite import ir

from opmlc.backend.kernels import kernel
from opmlc.backend.kernels._ir import (
    I64,
    broadcast_strides,
    c32,
    c64,
    entry_alloca,
    linear_index,
    load,
    loop,
    nest,
    part_range,
    saturate32,
    sext64,
    shl,
    shr_round,
    store,
)
from opmlc.ir.types import TensorType

# Rows of `a` computed together: each loaded element of `b` serves ROW_TILE dot products, which
# cuts the passes over a large weight matrix (natively) and the loads per multiply-add (on MIPS).
ROW_TILE = 4


@kernel("matmul")
def emit(b: ir.IRBuilder, out: ir.Value, args: list[ir.Value], types: list[TensorType], attrs: dict,
         out_type: TensorType) -> None:
    ta, tb = types[0], types[1]
    trans = bool(attrs.get("transpose_b"))
    m, k = ta.shape[-2], ta.shape[-1]
    n = tb.shape[-2] if trans else tb.shape[-1]
    batch = out_type.shape[:-2]
    # strides of each operand's batch dimensions, in matrices, broadcast against the output's
    bsa = broadcast_strides(ta.shape[:-2], batch) if batch else []
    bsb = broadcast_strides(tb.shape[:-2], batch) if batch else []
    bso = [int(s) for s in np.cumprod((1,) + batch[::-1])[-2::-1]] if batch else []
    prod_frac = ta.frac + tb.frac
    shift = prod_frac - out_type.frac
    tiles = [(ROW_TILE, m // ROW_TILE), (1, m % ROW_TILE)]
    slots = [entry_alloca(b, I64, name=f"acc{r}") for r in range(ROW_TILE)]
    rng = part_range(b)
    if rng is not None:  # a node part: its flat output elements one by one, no row tiles
        assert not batch, "parts of a batched matmul are not planned (opmlc/backend/parts.py)"
        with loop(b, rng[1], "e", start=rng[0]) as e:
            i, j = b.udiv(e, c32(n)), b.urem(e, c32(n))
            if len(args) == 3:
                b.store(shl(b, sext64(b, load(b, args[2], j)), prod_frac - types[2].frac), slots[0])
            else:
                b.store(c64(0), slots[0])
            with loop(b, k, "k") as kk:
                b_idx = b.add(b.mul(j, c32(k)), kk) if trans else b.add(b.mul(kk, c32(n)), j)
                y = sext64(b, load(b, args[1], b_idx))
                x = sext64(b, load(b, args[0], b.add(b.mul(i, c32(k)), kk)))
                b.store(b.add(b.load(slots[0], typ=I64), b.mul(x, y)), slots[0])
            store(b, saturate32(b, shr_round(b, b.load(slots[0], typ=I64), shift)), out, e)
        return
    with nest(b, batch, "batch") as bidx:
        a_base = b.mul(linear_index(b, bidx, bsa), c32(m * k)) if batch else c32(0)
        b_base = b.mul(linear_index(b, bidx, bsb), c32(k * n)) if batch else c32(0)
        o_base = b.mul(linear_index(b, bidx, bso), c32(m * n)) if batch else c32(0)
        first_row = 0
        for rows, count in tiles:  # full tiles of ROW_TILE rows, then the remaining rows one by one
            if count == 0:
                continue
            with loop(b, count, f"m{rows}") as t:
                i0 = b.add(c32(first_row), b.mul(t, c32(rows)))
                with loop(b, n, f"n{rows}") as j:
                    if len(args) == 3:
                        bias = shl(b, sext64(b, load(b, args[2], j)), prod_frac - types[2].frac)
                    else:
                        bias = c64(0)
                    for r in range(rows):
                        b.store(bias, slots[r])
                    with loop(b, k, f"k{rows}") as kk:
                        b_idx = b.add(b.mul(j, c32(k)), kk) if trans else b.add(b.mul(kk, c32(n)), j)
                        y = sext64(b, load(b, args[1], b.add(b_base, b_idx)))
                        for r in range(rows):
                            a_idx = b.add(a_base, b.add(b.mul(b.add(i0, c32(r)), c32(k)), kk))
                            x = sext64(b, load(b, args[0], a_idx))
                            b.store(b.add(b.load(slots[r], typ=I64), b.mul(x, y)), slots[r])
                    for r in range(rows):
                        result = saturate32(b, shr_round(b, b.load(slots[r], typ=I64), shift))
                        o_idx = b.add(o_base, b.add(b.mul(b.add(i0, c32(r)), c32(n)), j))
                        store(b, result, out, o_idx)
            first_row += rows * count
