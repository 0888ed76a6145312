"""Kernel of opmlc/ir/ops/qconv.py: conv's kernel (kernels/conv.py) with the weight read as
q − zp: per output element an exact i64 sum of x · (q − zp) over the group's channels and the
window, times the output channel's scale once (the ring identity of wrap-around int64, as in
kernels/qmatmul.py), plus the bias; one rounding shift, saturation."""

from __future__ import annotations

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
from opmlc.backend.kernels._qweight import load_q
from opmlc.ir.ops._qweight import split_inputs
from opmlc.ir.types import TensorType


@kernel("qconv")
def emit(b: ir.IRBuilder, out: ir.Value, args: list[ir.Value], types: list[TensorType], attrs: dict,
         out_type: TensorType) -> None:
    xt, qt, st = types[:3]
    zp_t, bias_t = split_inputs(types, 1)
    x, q, scale = args[:3]
    zp = args[3] if zp_t is not None else None
    bias = args[-1] if bias_t is not None else None
    r = len(xt.shape) - 2
    n, c = xt.shape[:2]
    m = qt.shape[0]
    g = attrs["group"]
    cg, mg = c // g, m // g
    sp, ks, osp = xt.shape[2:], qt.shape[2:], out_type.shape[2:]
    st_, dl, pads = attrs["strides"], attrs["dilations"], attrs["pads"]
    sx, sw, so = strides(xt.shape), strides(qt.shape), strides(out_type.shape)
    prod_frac = xt.frac + st.frac
    inner = entry_alloca(b, I64, name="inner")
    with nest(b, (n, m), "nm") as (ni, mi):
        grp = b.udiv(mi, c32(mg))  # mg ≥ 1 is a constant: never a division by zero
        bv = shl(b, sext64(b, load(b, bias, mi)), prod_frac - bias_t.frac) if bias is not None else c64(0)
        zpv = load_q(b, zp, mi, qt.dtype) if zp is not None else c32(0)
        sv = sext64(b, load(b, scale, mi))
        with nest(b, osp, "o") as oidx:
            b.store(c64(0), inner)
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
                    xv = sext64(b, load(b, x, b.select(ok, xi, c32(0))))
                    xv = b.select(ok, xv, c64(0))
                    w = b.sub(load_q(b, q, b.add(wbase, linear_index(b, kidx, sw[2:])), qt.dtype), zpv)
                    b.store(b.add(b.load(inner, typ=I64), b.mul(xv, sext64(b, w))), inner)
            acc = b.add(bv, b.mul(b.load(inner, typ=I64), sv))
            res = saturate32(b, shr_round(b, acc, prod_frac - out_type.frac))
            o = b.add(b.add(b.mul(ni, c32(so[0])), b.mul(mi, c32(so[1]))), linear_index(b, oidx, so[2:]))
            store(b, res, out, o)
