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
    saturate32,
    sext64,
    shl,
    shr_round,
    store,
)
from opmlc.ir.types import TensorType


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
    acc_slot = entry_alloca(b, I64, name="acc")
    with nest(b, batch, "batch") as bidx:
        a_base = b.mul(linear_index(b, bidx, bsa), c32(m * k)) if batch else c32(0)
        b_base = b.mul(linear_index(b, bidx, bsb), c32(k * n)) if batch else c32(0)
        o_base = b.mul(linear_index(b, bidx, bso), c32(m * n)) if batch else c32(0)
        with loop(b, m, "m") as i:
            a_row = b.add(a_base, b.mul(i, c32(k)))
            with loop(b, n, "n") as j:
                if len(args) == 3:
                    bias = shl(b, sext64(b, load(b, args[2], j)), prod_frac - types[2].frac)
                else:
                    bias = c64(0)
                b.store(bias, acc_slot)
                with loop(b, k, "k") as kk:
                    x = sext64(b, load(b, args[0], b.add(a_row, kk)))
                    b_idx = b.add(b.mul(j, c32(k)), kk) if trans else b.add(b.mul(kk, c32(n)), j)
                    y = sext64(b, load(b, args[1], b.add(b_base, b_idx)))
                    b.store(b.add(b.load(acc_slot, typ=I64), b.mul(x, y)), acc_slot)
                result = saturate32(b, shr_round(b, b.load(acc_slot, typ=I64), shift))
                store(b, result, out, b.add(o_base, b.add(b.mul(i, c32(n)), j)))
