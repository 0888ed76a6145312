"""Kernel of opmlc/ir/ops/qconv.py: conv's kernel (kernels/conv.py) with the weight read as
q − zp: per output element an exact i64 sum of x · (q − zp) over the group's channels and the
window, times the output channel's scale once (the ring identity of wrap-around int64, as in
kernels/qmatmul.py), plus the bias; one rounding shift, saturation. Like conv's kernel, interior
output positions take a path without bound checks, border ones clip the window to the input,
and both compute CH_TILE output channels per loaded input element (issue 13's MIPS cost)."""

from __future__ import annotations

import itertools
from math import prod

from llvmlite import ir

from opmlc.backend.kernels import kernel
from opmlc.backend.kernels._ir import (
    I64,
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
    strides,
)
from opmlc.backend.kernels._qweight import load_q, operands
from opmlc.backend.kernels.conv import (
    CH_TILE,
    MAX_UNROLLED_TAPS,
    interior,
    ranged_nest,
    tap_range,
    windows,
)
from opmlc.ir.types import TensorType


@kernel("qconv")
def emit(b: ir.IRBuilder, out: ir.Value, args: list[ir.Value], types: list[TensorType], attrs: dict,
         out_type: TensorType) -> None:
    xt, qt, st = types[:3]
    x, q, scale, zp, bias, bias_t = operands(args, types)
    r = len(xt.shape) - 2
    n, c = xt.shape[:2]
    m = qt.shape[0]
    g = attrs["group"]
    cg, mg = c // g, m // g
    sp, ks, osp = xt.shape[2:], qt.shape[2:], out_type.shape[2:]
    st_, dl, pads = attrs["strides"], attrs["dilations"], attrs["pads"]
    sx, sw, so = strides(xt.shape), strides(qt.shape), strides(out_type.shape)
    prod_frac = xt.frac + st.frac
    tile = CH_TILE if mg % CH_TILE == 0 and part_range(b) is None else 1  # a part: channel by channel
    inner_range = [interior(sp[d], ks[d], st_[d], dl[d], pads[d], osp[d]) for d in range(r)]
    inner = [entry_alloca(b, I64, name=f"inner{t}") for t in range(tile)]

    def window(ni: ir.Value, m0: ir.Value, oidx: list[ir.Value], checked: bool) -> None:
        """`tile` output channels from m0 at one output position (conv's kernel, q − zp)."""
        grp = b.udiv(m0, c32(mg))  # mg ≥ 1 is a constant; a tile never straddles groups
        ms = [b.add(m0, c32(t)) for t in range(tile)]
        zpv = [load_q(b, zp, mi, qt.dtype) if zp is not None else c32(0) for mi in ms]
        for t in range(tile):
            b.store(c64(0), inner[t])
        starts = [b.sub(b.mul(oidx[d], c32(st_[d])), c32(pads[d])) for d in range(r)]
        with loop(b, cg, "c") as ci:
            ch = b.add(b.mul(grp, c32(cg)), ci)
            xbase = b.add(b.mul(ni, c32(sx[0])), b.mul(ch, c32(sx[1])))
            wbase = b.add(b.mul(m0, c32(sw[0])), b.mul(ci, c32(sw[1])))

            def tap(kidx: list[ir.Value]) -> None:
                coords = [b.add(starts[d], b.mul(kk, c32(dl[d]))) for d, kk in enumerate(kidx)]
                xv = sext64(b, load(b, x, b.add(xbase, linear_index(b, coords, sx[2:]))))
                woff = b.add(wbase, linear_index(b, kidx, sw[2:]))
                for t in range(tile):
                    w = b.sub(load_q(b, q, b.add(woff, c32(t * sw[0])), qt.dtype), zpv[t])
                    b.store(b.add(b.load(inner[t], typ=I64), b.mul(xv, sext64(b, w))), inner[t])

            if checked:  # only the taps inside the input
                ranges = [tap_range(b, starts[d], ks[d], dl[d], sp[d]) for d in range(r)]
                with ranged_nest(b, ranges) as kidx:
                    tap(kidx)
            elif prod(ks) <= MAX_UNROLLED_TAPS:
                for kidx in itertools.product(*(range(k) for k in ks)):
                    tap([c32(kk) for kk in kidx])
            else:
                with nest(b, ks, "k") as kidx:
                    tap(kidx)
        for t, mi in enumerate(ms):
            bv = shl(b, sext64(b, load(b, bias, mi)), prod_frac - bias_t.frac) if bias is not None else c64(0)
            acc = b.add(bv, b.mul(b.load(inner[t], typ=I64), sext64(b, load(b, scale, mi))))
            res = saturate32(b, shr_round(b, acc, prod_frac - out_type.frac))
            o = b.add(b.add(b.mul(ni, c32(so[0])), b.mul(mi, c32(so[1]))), linear_index(b, oidx, so[2:]))
            store(b, res, out, o)

    windows(b, n, m, tile, osp, inner_range, window)
