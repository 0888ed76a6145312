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
    flat_index,
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

# Output tiles computed together, (rows, columns): each loaded element of `b` serves ROW_TILE
# dot products, which cuts the passes over a large weight matrix (natively) and the loads per
# multiply-add (on MIPS); rows left over (a matrix-vector product: M = 1) are done COL_TILE
# columns at a time instead, each loaded element of `a` serving COL_TILE dot products.
ROW_TILE = 4
COL_TILE = 4
# The reduction loop is unrolled by this many products per tile, so that the loop step is paid
# once per group (issue 13: ≤ 7 MIPS instructions per multiply-add; LLVM's MIPS backend moves
# the accumulator through HI/LO around every `madd`, so loads shared by a tile and the loop step
# are what is left to save). A row tile is not unrolled: its loop is what the host vectorises,
# and unrolled it runs the decoders' matmuls 1.3–2× slower natively (MIPS: 7.0 either way
# against 6.6 unrolled by 2). The sums are wrap-around int64: the order cannot change the bits.
K_UNROLL = {(ROW_TILE, 1): 1, (1, COL_TILE): 4, (1, 1): 8}


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
    slots = [entry_alloca(b, I64, name=f"acc{r}") for r in range(max(ROW_TILE, COL_TILE))]

    def per_batch(bidx: list[ir.Value], flat: list[ir.Value] | None = None) -> None:
        """The outputs of one batch index: all of them, or the one output (i, j) = flat."""
        a_base = b.mul(linear_index(b, bidx, bsa), c32(m * k)) if batch else c32(0)
        b_base = b.mul(linear_index(b, bidx, bsb), c32(k * n)) if batch else c32(0)
        o_base = b.mul(linear_index(b, bidx, bso), c32(m * n)) if batch else c32(0)

        def tile(rows: int, cols: int, i0: ir.Value, j0: ir.Value) -> None:
            """out[i0 + r, j0 + c] for r < rows, c < cols: one i64 dot product each."""
            accs = [(r, c) for r in range(rows) for c in range(cols)]
            for x, (_, c) in enumerate(accs):
                jc = b.add(j0, c32(c))
                bias = sext64(b, load(b, args[2], jc)) if len(args) == 3 else None
                b.store(c64(0) if bias is None else shl(b, bias, prod_frac - types[2].frac), slots[x])

            def a_at(r: int, kk: ir.Value) -> ir.Value:
                return sext64(b, load(b, args[0], b.add(a_base, b.add(b.mul(b.add(i0, c32(r)), c32(k)), kk))))

            def b_at(c: int, kk: ir.Value) -> ir.Value:
                jc = b.add(j0, c32(c))
                idx = b.add(b.mul(jc, c32(k)), kk) if trans else b.add(b.mul(kk, c32(n)), jc)
                return sext64(b, load(b, args[1], b.add(b_base, idx)))

            def madds(kks: list[ir.Value]) -> None:
                # each output's products form one chain (one i64 add after another)
                xs = [[a_at(r, kk) for kk in kks] for r in range(rows)]
                ys = [[b_at(c, kk) for kk in kks] for c in range(cols)]
                for x, (r, c) in enumerate(accs):
                    acc = b.load(slots[x], typ=I64)
                    for u in range(len(kks)):
                        acc = b.add(acc, b.mul(xs[r][u], ys[c][u]))
                    b.store(acc, slots[x])

            unroll = K_UNROLL[(rows, cols)]
            if k // unroll:
                with loop(b, k // unroll, f"k{rows}x{cols}") as kq:
                    k0 = b.mul(kq, c32(unroll))
                    madds([b.add(k0, c32(u)) for u in range(unroll)])
            if k % unroll:  # the last k % unroll products, straight-line
                madds([c32(kk) for kk in range(k - k % unroll, k)])
            for x, (r, c) in enumerate(accs):
                acc = b.load(slots[x], typ=I64)  # `accumulate`: the i64 accumulator itself
                result = acc if attrs.get("accumulate") else saturate32(b, shr_round(b, acc, shift))
                o_idx = b.add(o_base, b.add(b.mul(b.add(i0, c32(r)), c32(n)), b.add(j0, c32(c))))
                store(b, result, out, o_idx)

        if flat is not None:
            tile(1, 1, *flat)
            return
        tile_output(b, m, n, tile)

    rng = part_range(b)
    if rng is not None:  # a node part: its flat output elements one by one (only part tasks run it)
        with loop(b, rng[1], "e", start=rng[0]) as e:
            idx = flat_index(b, e, out_type.shape)
            per_batch(idx[:-2], idx[-2:])
        return
    with nest(b, batch, "batch") as bidx:
        per_batch(bidx)


def tile_output(b: ir.IRBuilder, m: int, n: int, tile) -> None:
    """Cover an m×n output with `tile(rows, cols, i0, j0)`: ROW_TILE-row tiles one column at a
    time, then the leftover rows (M = 1: a matrix-vector product) COL_TILE columns at a time.
    The schedule of matmul's and qmatmul's MIPS kernels."""
    if m // ROW_TILE:
        with loop(b, m // ROW_TILE, "mt") as t, loop(b, n, "n") as j:
            tile(ROW_TILE, 1, b.mul(t, c32(ROW_TILE)), j)
    if m % ROW_TILE:
        with loop(b, m % ROW_TILE, "mr") as t:
            i0 = b.add(c32(m - m % ROW_TILE), t)
            if n // COL_TILE:
                with loop(b, n // COL_TILE, "nt") as jt:
                    tile(1, COL_TILE, i0, b.mul(jt, c32(COL_TILE)))
            if n % COL_TILE:
                with loop(b, n % COL_TILE, "nr") as jr:
                    tile(1, 1, i0, b.add(c32(n - n % COL_TILE), jr))
