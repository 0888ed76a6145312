"""Kernel of opmlc/ir/ops/norm.py, row by row: the mean (layer), the sum of rounded squares,
the variance, its normalisation by a count of leading zeros (llvm.ctlz: MIPS32's clz), one
isqrt64 and one i64 division for the reciprocal square root, then the scaled outputs."""

from __future__ import annotations

from llvmlite import ir

from opmlc.backend.kernels import kernel
from opmlc.backend.kernels._fx import isqrt64, ld, round_div, smax, smin, to_fx_flagged
from opmlc.backend.kernels._ir import (
    I1,
    I64,
    c32,
    c64,
    count,
    entry_alloca,
    loop,
    shr_round_var,
    store,
    touched_rows,
)
from opmlc.ir.ops.norm import Z_FRAC, Z_LIMIT, shift_bits
from opmlc.ir.types import DType, TensorType


@kernel("norm")
def emit(b: ir.IRBuilder, out: ir.Value, args: list[ir.Value], types: list[TensorType], attrs: dict,
         out_type: TensorType) -> None:
    n = out_type.shape[-1]
    rows = out_type.numel // n
    r = shift_bits(n)
    fg = types[1].frac
    acc_frac = Z_FRAC + fg
    fx = DType.FX32
    total = entry_alloca(b, I64, name="total")
    with touched_rows(b, rows, n) as (row, first, end):  # a part: its rows' statistics in full
        base = b.mul(row, c32(n))
        mu = c64(0)
        if attrs["kind"] == "layer":
            b.store(c64(0), total)
            with loop(b, n, "sum") as j:
                b.store(b.add(b.load(total, typ=I64), ld(b, args[0], b.add(base, j), fx)), total)
            mu = round_div(b, b.load(total, typ=I64), c64(n))
        b.store(c64(0), total)
        with loop(b, n, "sq") as j:
            c = b.sub(ld(b, args[0], b.add(base, j), fx), mu)
            a = b.select(b.icmp_signed("<", c, c64(0)), b.sub(c64(0), c), c)
            sq = b.lshr(b.add(b.mul(a, a), c64(1 << (r - 1))), c64(r))
            b.store(b.add(b.load(total, typ=I64), sq), total)
        v = b.add(round_div(b, b.load(total, typ=I64), c64(n)), c64(int(attrs["eps"])))
        v = smax(b, v, c64(1))
        bl = b.sub(c64(64), b.ctlz(v, ir.Constant(I1, 0)))
        e = b.ashr(b.sub(c64(62), bl), c64(1))
        up = b.shl(v, b.shl(smax(b, e, c64(0)), c64(1)))
        w = b.select(b.icmp_signed(">=", e, c64(0)), up, b.ashr(v, c64(2)))
        s = b.call(isqrt64(b.module), [w])
        rr = round_div(b, c64(1 << 61), s)
        sh = b.sub(c64(37 + r // 2), e)
        with loop(b, end, "out", start=first) as j:
            c = b.sub(ld(b, args[0], b.add(base, j), fx), mu)
            z_wide = shr_round_var(b, b.mul(c, rr), sh, 62)
            z = smin(b, smax(b, z_wide, c64(-Z_LIMIT)), c64(Z_LIMIT))
            y = b.mul(z, ld(b, args[1], j, fx))
            if len(args) == 3:
                bias = ld(b, args[2], j, fx)
                k = acc_frac - types[2].frac
                y = b.add(y, b.shl(bias, c64(k)) if k else bias)
            v, sat = to_fx_flagged(b, y, acc_frac, out_type.frac)
            if sat is not None:  # ops/norm.py: once per element, whichever clamp acted
                count(b, b.or_(sat, b.icmp_signed("!=", z, z_wide)))
            store(b, v, out, b.add(base, j))
