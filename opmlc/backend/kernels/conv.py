"""Kernel of opmlc/ir/ops/conv.py: per output element an i64 dot product over the group's
channels and the kernel window, then matmul's rounding shift and saturation.

The input coordinate of each tap is checked against the input's extent once per spatial
dimension (an unsigned compare covers both ends); a tap in the padding is redirected to
element 0 and multiplied by 0, so the inner loop has no branch: loads, a multiply-add
(`madd` on MIPS) and the loop step.
"""

from __future__ import annotations

from math import prod

from llvmlite import ir

from opmlc.backend.kernels import kernel
from opmlc.backend.kernels._ir import (
    I1,
    I64,
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
    strides,
)
from opmlc.ir.types import TensorType


@kernel("conv")
def emit(b: ir.IRBuilder, out: ir.Value, args: list[ir.Value], types: list[TensorType], attrs: dict,
         out_type: TensorType) -> None:
    xt, wt = types[0], types[1]
    r = len(xt.shape) - 2
    n, c = xt.shape[:2]
    m = wt.shape[0]
    g = attrs["group"]
    cg, mg = c // g, m // g
    sp, ks, osp = xt.shape[2:], wt.shape[2:], out_type.shape[2:]
    st_, dl, pads = attrs["strides"], attrs["dilations"], attrs["pads"]
    sx, sw, so = strides(xt.shape), strides(wt.shape), strides(out_type.shape)
    prod_frac = xt.frac + wt.frac
    acc = entry_alloca(b, I64, name="acc")
    with nest(b, (n, m), "nm") as (ni, mi):
        grp = b.udiv(mi, c32(mg))  # mg ≥ 1 is a constant: never a division by zero
        if len(args) == 3:
            bias = shl(b, sext64(b, load(b, args[2], mi)), prod_frac - types[2].frac)
        else:
            bias = c64(0)
        with nest(b, osp, "o") as oidx:
            b.store(bias, acc)
            with loop(b, cg, "c") as ci:
                ch = b.add(b.mul(grp, c32(cg)), ci)
                xbase = b.add(b.mul(ni, c32(sx[0])), b.mul(ch, c32(sx[1])))
                wbase = b.add(b.mul(mi, c32(sw[0])), b.mul(ci, c32(sw[1])))
                with nest(b, ks, "k") as kidx:
                    ok = ir.Constant(I1, 1)
                    xi = xbase
                    for d in range(r):
                        coord = b.add(b.sub(b.mul(oidx[d], c32(st_[d])), c32(pads[d])), b.mul(kidx[d], c32(dl[d])))
                        ok = b.and_(ok, b.icmp_unsigned("<", coord, c32(sp[d])))
                        xi = b.add(xi, b.mul(coord, c32(sx[2 + d])))
                    x = sext64(b, load(b, args[0], b.select(ok, xi, c32(0))))
                    x = b.select(ok, x, c64(0))
                    w = sext64(b, load(b, args[1], b.add(wbase, linear_index(b, kidx, sw[2:]))))
                    b.store(b.add(b.load(acc, typ=I64), b.mul(x, w)), acc)
            res = saturate32(b, shr_round(b, b.load(acc, typ=I64), prod_frac - out_type.frac))
            o = b.add(b.add(b.mul(ni, c32(so[0])), b.mul(mi, c32(so[1]))), linear_index(b, oidx, so[2:]))
            store(b, res, out, o)


__all__ = ["emit", "prod"]
