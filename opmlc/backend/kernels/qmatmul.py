"""Kernel of opmlc/ir/ops/qmatmul.py: per output element and per block of the reduction, an
exact i64 sum of x · (q − zp), times the block's scale, accumulated in i64; then the bias,
one rounding shift and saturation, as matmul's kernel.

Summing per block and multiplying by the scale once is the op's semantics rearranged:
wrap-around int64 arithmetic is a ring, so Σ_b scale_b · Σ_{k ∈ b} x_k · (q_k − zp_b) gives
the bits of Σ_k x_k · ((q_k − zp_b) · scale_b). The inner loop is a load of x, a load of q (a
byte; for i4 one byte serves two elements), the zero point's subtraction and a multiply-add
(`madd` on MIPS: both factors are sign-extended i32), with ROW_TILE rows of x sharing each
weight load as in matmul's kernel, or, for leftover rows (M = 1), COL_TILE weight rows sharing
each load of x; the block loop has a constant trip count, so the host vectorises it.

The MIPS module replaces that inner loop by one call per output and block of a hand-written
routine (kernels/_mipsdot.py) that keeps the sum in HI/LO, and computes one output at a time
(docs/DESIGN.md "MIPS cost II"); i4 blocks of odd length keep the loop.
"""

from __future__ import annotations

from math import prod

from llvmlite import ir

from opmlc.backend.kernels import kernel
from opmlc.backend.kernels._host import host
from opmlc.backend.kernels._ir import (
    I8,
    I32,
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
from opmlc.backend.kernels._mipsdot import qdot
from opmlc.backend.kernels._qweight import load_q, nibbles, operands
from opmlc.backend.kernels.matmul import COL_TILE, ROW_TILE, tile_output
from opmlc.ir.types import DType, TensorType

# matmul's schedule (tile_output): ROW_TILE rows of x per pass over a weight row; leftover rows
# (M = 1) take COL_TILE weight rows at a time, each loaded x serving COL_TILE multiply-adds:
# the native build's schedule, and MIPS's for i4 blocks of odd length (docs/DESIGN.md "MIPS cost").
# Not unrolled: unrolled by 4 it saved 0.6 on MIPS but ran 1.5× slower natively, where this loop
# is what the host vectorises. Same bits in any order.


@kernel("qmatmul")
def emit(b: ir.IRBuilder, out: ir.Value, args: list[ir.Value], types: list[TensorType], attrs: dict,
         out_type: TensorType) -> None:
    xt, qt, st = types[:3]
    x, q, scale, zp, bias, bias_t = operands(args, types)
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
    # MIPS: the reduction of each block is a call of a hand-written routine; the native build
    # keeps the LLVM loops below (which the host vectorises)
    routine = not host(b) and (qt.dtype is DType.I8 or pairs)
    tiles = max(ROW_TILE, COL_TILE)
    acc = [entry_alloca(b, I64, name=f"acc{r}") for r in range(tiles)]
    inner = [entry_alloca(b, I64, name=f"inner{r}") for r in range(tiles)]

    def block(rows: int, cols: int, i0: ir.Value, j0: ir.Value, blk: ir.Value, k0: ir.Value,
              length: int) -> None:
        """One block of the reduction for the outputs (i0 + r, j0 + c), r < rows, c < cols."""
        outs = [(r, c) for r in range(rows) for c in range(cols)]
        js = [b.add(j0, c32(c)) for c in range(cols)]
        zpv = [load_q(b, zp, b.add(b.mul(j, c32(nb)), blk), qt.dtype) if zp is not None else c32(0) for j in js]
        sv = [sext64(b, load(b, scale, b.add(b.mul(j, c32(nb)), blk))) for j in js]
        for x_ in range(len(outs)):
            b.store(c64(0), inner[x_])
        qbase = [b.add(b.mul(j, c32(k)), k0) for j in js]
        xrow = [b.add(b.mul(b.add(i0, c32(r)), c32(k)), k0) for r in range(rows)]

        def madds(ys: list[ir.Value], xs: list[list[ir.Value]]) -> None:
            for x_, (r, c) in enumerate(outs):
                s_ = b.load(inner[x_], typ=I64)
                for xv, yv in zip(xs[r], ys[c], strict=True):
                    s_ = b.add(s_, b.mul(xv, yv))
                b.store(s_, inner[x_])

        if routine:  # MIPS: one hand-written madd chain per output (kernels/_mipsdot.py)
            bits = 8 if qt.dtype is DType.I8 else 4
            for x_, (r, c) in enumerate(outs):
                xp = b.gep(x, [xrow[r]], source_etype=I32)
                qp = b.gep(q, [qbase[c] if bits == 8 else b.lshr(qbase[c], c32(1))], source_etype=I8)
                n_ = c32(length if bits == 8 else length // 2)
                b.store(qdot(b, bits, xp, qp, n_, zpv[c] if zp is not None else None), inner[x_])
        elif pairs:
            with loop(b, length // 2, "p") as p:
                ys = []
                for c in range(cols):
                    hi, lo = nibbles(b, load(b, q, b.add(b.lshr(qbase[c], c32(1)), p), I8))
                    ys.append([sext64(b, b.sub(hi, zpv[c])), sext64(b, b.sub(lo, zpv[c]))])
                xs = []
                for r in range(rows):
                    xi = b.add(xrow[r], b.shl(p, c32(1)))
                    xs.append([sext64(b, load(b, x, xi)), sext64(b, load(b, x, b.add(xi, c32(1))))])
                madds(ys, xs)
        else:
            with loop(b, length, "k") as kk:
                ys = [[sext64(b, b.sub(load_q(b, q, b.add(qbase[c], kk), qt.dtype), zpv[c]))] for c in range(cols)]
                xs = [[sext64(b, load(b, x, b.add(xrow[r], kk)))] for r in range(rows)]
                madds(ys, xs)
        for x_, (_, c) in enumerate(outs):
            b.store(b.add(b.load(acc[x_], typ=I64), b.mul(b.load(inner[x_], typ=I64), sv[c])), acc[x_])

    def tile(rows: int, cols: int, i0: ir.Value, j0: ir.Value) -> None:
        """The outputs (i0 + r, j0 + c): bias, the blocks, one rounding shift, saturation."""
        outs = [(r, c) for r in range(rows) for c in range(cols)]
        for x_, (_, c) in enumerate(outs):
            jc = b.add(j0, c32(c))
            bv = shl(b, sext64(b, load(b, bias, jc)), prod_frac - bias_t.frac) if bias is not None else c64(0)
            b.store(bv, acc[x_])
        if full:
            with loop(b, full, "blk") as blk:
                block(rows, cols, i0, j0, blk, b.mul(blk, c32(bs)), bs)
        if tail:
            block(rows, cols, i0, j0, c32(full), c32(full * bs), tail)
        for x_, (r, c) in enumerate(outs):
            res = b.load(acc[x_], typ=I64)  # `accumulate`: the i64 accumulator itself
            res = res if attrs.get("accumulate") else saturate32(b, shr_round(b, res, shift))
            store(b, res, out, b.add(b.mul(b.add(i0, c32(r)), c32(n)), b.add(j0, c32(c))))

    rng = part_range(b)
    if rng is not None:  # a node part: its flat output elements one by one (only part tasks run it)
        with loop(b, rng[1], "e", start=rng[0]) as e:
            tile(1, 1, b.udiv(e, c32(n)), b.urem(e, c32(n)))
        return
    if routine:  # one output at a time: the routine's call is the whole inner loop
        with loop(b, m, "i") as i, loop(b, n, "j") as j:
            tile(1, 1, i, j)
        return
    tile_output(b, m, n, tile)
