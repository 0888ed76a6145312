"""Kernel of opmlc/ir/ops/pool.py: per output element a loop over the window's taps; taps
outside the input (unsigned compare per dimension) are skipped by select, never read."""

from __future__ import annotations

from llvmlite import ir

from opmlc.backend.kernels import kernel
from opmlc.backend.kernels._fx import round_div, smax
from opmlc.backend.kernels._ir import (
    I1,
    I64,
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
    store,
    strides,
)
from opmlc.ir import fixedpoint as fp
from opmlc.ir.types import TensorType


@kernel("pool")
def emit(b: ir.IRBuilder, out: ir.Value, args: list[ir.Value], types: list[TensorType], attrs: dict,
         out_type: TensorType) -> None:
    (xt,) = types
    r = len(xt.shape) - 2
    sp, osp = xt.shape[2:], out_type.shape[2:]
    k, st_, dl, pads = attrs["kernel"], attrs["strides"], attrs["dilations"], attrs["pads"]
    sx, so = strides(xt.shape), strides(out_type.shape)
    is_max = attrs["kind"] == "max"
    acc = entry_alloca(b, I64, name="acc")
    cnt = entry_alloca(b, I64, name="count")

    def position(xbase: ir.Value, obase: ir.Value, oidx: list[ir.Value]) -> None:
        """Output element oidx of the (batch, channel) plane at xbase/obase: its window folded."""
        b.store(c64(fp.INT32_MIN if is_max else 0), acc)
        b.store(c64(0), cnt)
        with nest(b, tuple(k), "k") as kidx:
            ok = ir.Constant(I1, 1)
            okp = ir.Constant(I1, 1)
            xi = xbase
            for d in range(r):
                coord = b.add(b.sub(b.mul(oidx[d], c32(st_[d])), c32(pads[d])), b.mul(kidx[d], c32(dl[d])))
                ok = b.and_(ok, b.icmp_unsigned("<", coord, c32(sp[d])))
                # inside the padded input: −pb ≤ coord < S + pe
                okp = b.and_(okp, b.icmp_unsigned("<", b.add(coord, c32(pads[d])), c32(sp[d] + pads[d] + pads[r + d])))
                xi = b.add(xi, b.mul(coord, c32(sx[2 + d])))
            x = sext64(b, load(b, args[0], b.select(ok, xi, c32(0))))
            cur = b.load(acc, typ=I64)
            new = smax(b, cur, x) if is_max else b.add(cur, x)
            b.store(b.select(ok, new, cur), acc)
            counted = okp if attrs.get("count_include_pad") else ok
            b.store(b.add(b.load(cnt, typ=I64), b.zext(counted, I64)), cnt)
        res = b.load(acc, typ=I64)
        if not is_max:
            count = b.load(cnt, typ=I64)
            count = b.select(b.icmp_signed("<", count, c64(1)), c64(1), count)
            res = round_div(b, res, count)
        store(b, saturate32(b, res), out, b.add(obase, linear_index(b, oidx, so[2:])))

    rng = part_range(b)
    if rng is not None:  # a node part: its flat output elements
        with loop(b, rng[1], "e", start=rng[0]) as e:
            nc, *oidx = flat_index(b, e, (xt.shape[0] * xt.shape[1], *osp))
            position(b.mul(nc, c32(sx[1])), b.mul(nc, c32(so[1])), oidx)
        return
    with nest(b, (xt.shape[0] * xt.shape[1],), "nc") as (nc,):
        xbase = b.mul(nc, c32(sx[1]))
        obase = b.mul(nc, c32(so[1]))
        with nest(b, osp, "o") as oidx:
            position(xbase, obase, oidx)
