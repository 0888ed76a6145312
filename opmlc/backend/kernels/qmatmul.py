"""Kernel of opmlc/ir/ops/qmatmul.py: per output element and per block of the reduction, an
exact i64 sum of x · (q − zp), times the block's scale, accumulated in i64; then the bias,
one rounding shift and saturation, as matmul's kernel.

Summing per block and multiplying by the scale once is the op's semantics rearranged:
wrap-around int64 arithmetic is a ring, so Σ_b scale_b · Σ_{k ∈ b} x_k · (q_k − zp_b) gives
the bits of Σ_k x_k · ((q_k − zp_b) · scale_b). The inner loop is a load of x, a load of q (a
byte; for i4 one byte serves two elements), the zero point's subtraction and a multiply-add
(`madd` on MIPS: both factors are sign-extended i32), with ROW_TILE rows of x sharing each
weight load as in matmul's kernel; the block loop has a constant trip count, so the host
vectorises it.
"""

from __future__ import annotations

from math import prod

from llvmlite import ir

from opmlc.backend.kernels import kernel
from opmlc.backend.kernels._ir import (
    I8,
    I64,
    c32,
    c64,
    entry_alloca,
    load,
    loop,
    part_range,
    saturate32,
    sext64,
    shl,
    shr_round,
    store,
)
from opmlc.backend.kernels._qweight import load_q, nibbles
from opmlc.ir.ops._qweight import split_inputs
from opmlc.ir.types import DType, TensorType

ROW_TILE = 4  # rows of x per pass over a weight row (matmul's kernel does the same)


@kernel("qmatmul")
def emit(b: ir.IRBuilder, out: ir.Value, args: list[ir.Value], types: list[TensorType], attrs: dict,
         out_type: TensorType) -> None:
    xt, qt, st = types[:3]
    zp_t, bias_t = split_inputs(types, 1)
    x, q, scale = args[:3]
    zp = args[3] if zp_t is not None else None
    bias = args[-1] if bias_t is not None else None
    k = xt.shape[-1]
    m = prod(xt.shape[:-1])
    n = qt.shape[0]
    bs = attrs["block_size"]
    nb = st.shape[1]
    full, tail = divmod(k, bs)
    prod_frac = xt.frac + st.frac
    shift = prod_frac - out_type.frac
    # i4 weights two elements per byte when every block starts and ends on a byte boundary
    pairs = qt.dtype is DType.I4 and k % 2 == 0 and bs % 2 == 0
    acc = [entry_alloca(b, I64, name=f"acc{r}") for r in range(ROW_TILE)]
    inner = [entry_alloca(b, I64, name=f"inner{r}") for r in range(ROW_TILE)]

    def block(rows: int, i0: ir.Value, j: ir.Value, blk: ir.Value, k0: ir.Value, length: int) -> None:
        zpv = load_q(b, zp, b.add(b.mul(j, c32(nb)), blk), qt.dtype) if zp is not None else c32(0)
        sv = sext64(b, load(b, scale, b.add(b.mul(j, c32(nb)), blk)))
        for r in range(rows):
            b.store(c64(0), inner[r])
        qbase = b.add(b.mul(j, c32(k)), k0)
        xrow = [b.add(b.mul(b.add(i0, c32(r)), c32(k)), k0) for r in range(rows)]
        if pairs:
            with loop(b, length // 2, "p") as p:
                hi, lo = nibbles(b, load(b, q, b.add(b.lshr(qbase, c32(1)), p), I8))
                y0, y1 = sext64(b, b.sub(hi, zpv)), sext64(b, b.sub(lo, zpv))
                for r in range(rows):
                    xi = b.add(xrow[r], b.shl(p, c32(1)))
                    x0 = sext64(b, load(b, x, xi))
                    x1 = sext64(b, load(b, x, b.add(xi, c32(1))))
                    b.store(b.add(b.add(b.load(inner[r], typ=I64), b.mul(x0, y0)), b.mul(x1, y1)), inner[r])
        else:
            with loop(b, length, "k") as kk:
                y = sext64(b, b.sub(load_q(b, q, b.add(qbase, kk), qt.dtype), zpv))
                for r in range(rows):
                    xv = sext64(b, load(b, x, b.add(xrow[r], kk)))
                    b.store(b.add(b.load(inner[r], typ=I64), b.mul(xv, y)), inner[r])
        for r in range(rows):
            b.store(b.add(b.load(acc[r], typ=I64), b.mul(b.load(inner[r], typ=I64), sv)), acc[r])

    rng = part_range(b)
    if rng is not None:  # a node part: its flat output elements one by one, no row tiles
        with loop(b, rng[1], "e", start=rng[0]) as e:
            i, j = b.udiv(e, c32(n)), b.urem(e, c32(n))
            b.store(shl(b, sext64(b, load(b, bias, j)), prod_frac - bias_t.frac) if bias is not None else c64(0),
                    acc[0])
            if full:
                with loop(b, full, "blk") as blk:
                    block(1, i, j, blk, b.mul(blk, c32(bs)), bs)
            if tail:
                block(1, i, j, c32(full), c32(full * bs), tail)
            store(b, saturate32(b, shr_round(b, b.load(acc[0], typ=I64), shift)), out, e)
        return
    first_row = 0
    for rows, count in ((ROW_TILE, m // ROW_TILE), (1, m % ROW_TILE)):
        if count == 0:
            continue
        with loop(b, count, f"m{rows}") as t:
            i0 = b.add(c32(first_row), b.mul(t, c32(rows)))
            with loop(b, n, f"n{rows}") as j:
                if bias is not None:
                    bv = shl(b, sext64(b, load(b, bias, j)), prod_frac - bias_t.frac)
                else:
                    bv = c64(0)
                for r in range(rows):
                    b.store(bv, acc[r])
                if full:
                    with loop(b, full, "blk") as blk:
                        block(rows, i0, j, blk, b.mul(blk, c32(bs)), bs)
                if tail:
                    block(rows, i0, j, c32(full), c32(full * bs), tail)
                for r in range(rows):
                    res = saturate32(b, shr_round(b, b.load(acc[r], typ=I64), shift))
                    store(b, res, out, b.add(b.mul(b.add(i0, c32(r)), c32(n)), j))
        first_row += rows * count
