"""Kernel of opmlc/ir/ops/softmax.py, row by row: max, Q30 exps kept in a stack scratch row,
their sum, one unsigned 2^62 / sum, then the rounded products."""

from __future__ import annotations

from llvmlite import ir

from opmlc.backend.kernels import kernel
from opmlc.backend.kernels._host import floor_divmod_host, host
from opmlc.backend.kernels._ir import (
    I64,
    c32,
    c64,
    entry_alloca,
    exp_nonpositive_q30,
    load,
    loop,
    saturate32,
    sext64,
    shr_round,
    store,
    touched_rows,
)
from opmlc.ir.types import TensorType


@kernel("softmax")
def emit(b: ir.IRBuilder, out: ir.Value, args: list[ir.Value], types: list[TensorType], attrs: dict,
         out_type: TensorType) -> None:
    n = out_type.shape[-1]
    rows = out_type.numel // n if n else 0
    exp = exp_nonpositive_q30(b.module)
    scratch = entry_alloca(b, I64, n, "e")
    top = entry_alloca(b, I64, name="max")
    total = entry_alloca(b, I64, name="sum")
    frac = c64(types[0].frac)
    with touched_rows(b, rows, n) as (r, first, end):  # a part: its rows' statistics in full
        base = b.mul(r, c32(n))
        b.store(sext64(b, load(b, args[0], base)), top)
        with loop(b, n, "mx") as j:
            x = sext64(b, load(b, args[0], b.add(base, j)))
            cur = b.load(top, typ=I64)
            b.store(b.select(b.icmp_signed(">", x, cur), x, cur), top)
        b.store(c64(0), total)
        with loop(b, n, "ex") as j:
            d = b.sub(sext64(b, load(b, args[0], b.add(base, j))), b.load(top, typ=I64))
            e = b.call(exp, [d, frac])
            store(b, e, scratch, j)
            b.store(b.add(b.load(total, typ=I64), e), total)
        s = b.load(total, typ=I64)
        s = b.select(b.icmp_unsigned("==", s, c64(0)), c64(1), s)  # never 0 (≥ 2^30); guard anyway
        if host(b):
            # the FPU's exact floor (kernels/_host.py) instead of a scalar i64 division per row:
            # 2^62 is exact as a double, s ∈ [2^30, 2^61) (n < 2^31 exps ≤ 2^30 each), so
            # 2^62 / s ≤ 2^32 < 2^50 and |q·s| < 2^62 + 2s < 2^63: the fast path's argument holds
            recip, _rem = floor_divmod_host(b, c64(1 << 62), s, in_fast_range=True)
        else:
            recip = b.udiv(c64(1 << 62), s)
        with loop(b, end, "out", start=first) as j:
            y = shr_round(b, b.mul(load(b, scratch, j, I64), recip), 62 - out_type.frac)
            store(b, saturate32(b, y), out, b.add(base, j))
