"""Kernel of opmlc/ir/ops/conv.py: per output element an i64 dot product over the group's
channels and the kernel window, then matmul's rounding shift and saturation.

Output positions whose whole window lies inside the input (the interior: a range per spatial
dimension, known at compile time) take a path without checks. Both paths compute CH_TILE
output channels at a time, so each loaded input element serves CH_TILE multiply-adds (issue 13: ≤ 7 MIPS
instructions per multiply-add; LLVM's MIPS backend moves the accumulator through HI/LO around
every `madd`, so shared loads are what is left to save). Elsewhere (the border) the input
window is clipped to the input: per spatial dimension the range of taps inside it is computed
once, and the loops run over those taps only (a tap in the padding adds 0 to the sum, so
skipping it changes nothing). Wrap-around int64 sums: neither the order nor the path changes
the bits. A node part computes its flat output elements one channel at a time (`windows`).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from contextlib import contextmanager
from math import prod

from llvmlite import ir

from opmlc.backend.kernels import kernel
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
    shl,
    shr_round,
    store,
    strides,
)
from opmlc.ir.types import TensorType

# Output channels computed together (when a group's channel count allows).
CH_TILE = 4
# Kernel windows up to this many taps are written out straight-line on the interior path.
MAX_UNROLLED_TAPS = 64


def interior(size: int, k: int, st: int, dl: int, pad: int, osize: int) -> tuple[int, int]:
    """The output indices [lo, hi) of one spatial dimension whose taps all lie inside [0, size)."""
    lo = -(-pad // st)
    hi = (size - 1 - (k - 1) * dl + pad) // st + 1
    lo, hi = min(max(lo, 0), osize), min(max(hi, 0), osize)
    return lo, max(lo, hi)


def tap_range(b: ir.IRBuilder, start: ir.Value, k: int, dl: int, size: int) -> tuple[ir.Value, ir.Value]:
    """The taps [lo, hi) of one dimension whose coordinate start + t·dl lies in [0, size), for a
    window starting at `start` (i32, may be negative or beyond the input): lo = ceil(−start/dl)
    clamped to [0, k], hi = ceil((size − start)/dl) clamped to [lo, k]. The divisions are by
    the constant dl ≥ 1 of non-negative values."""
    def ceil_div(v: ir.Value) -> ir.Value:  # v ≥ 0
        return b.udiv(b.add(v, c32(dl - 1)), c32(dl)) if dl > 1 else v

    zero = c32(0)
    neg = b.sub(zero, start)
    lo = b.select(b.icmp_signed(">", neg, zero), ceil_div(neg), zero)
    lo = b.select(b.icmp_signed(">", lo, c32(k)), c32(k), lo)
    room = b.sub(c32(size), start)
    hi = b.select(b.icmp_signed(">", room, zero), ceil_div(room), zero)
    hi = b.select(b.icmp_signed(">", hi, c32(k)), c32(k), hi)
    hi = b.select(b.icmp_signed("<", hi, lo), lo, hi)
    return lo, hi


@contextmanager
def ranged_nest(b: ir.IRBuilder, ranges: list[tuple[ir.Value, ir.Value]]) -> Iterator[list[ir.Value]]:
    """Nested loops over lo_d ≤ t_d < hi_d (row-major); yields the index list."""
    if not ranges:
        yield []
        return
    lo, hi = ranges[0]
    with loop(b, b.sub(hi, lo), "kr") as i, ranged_nest(b, ranges[1:]) as rest:
        yield [b.add(lo, i), *rest]


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
    tile = CH_TILE if mg % CH_TILE == 0 and part_range(b) is None else 1  # a part: channel by channel
    inner = [interior(sp[d], ks[d], st_[d], dl[d], pads[d], osp[d]) for d in range(r)]
    accs = [entry_alloca(b, I64, name=f"acc{t}") for t in range(tile)]

    def bias_of(mi: ir.Value) -> ir.Value:
        return shl(b, sext64(b, load(b, args[2], mi)), prod_frac - types[2].frac) if len(args) == 3 else c64(0)

    def finish(acc: ir.Value, ni: ir.Value, mi: ir.Value, oidx: list[ir.Value]) -> None:
        res = b.load(acc, typ=I64)  # `accumulate`: the i64 accumulator itself
        res = res if attrs.get("accumulate") else saturate32(b, shr_round(b, res, prod_frac - out_type.frac))
        o = b.add(b.add(b.mul(ni, c32(so[0])), b.mul(mi, c32(so[1]))), linear_index(b, oidx, so[2:]))
        store(b, res, out, o)

    def window(ni: ir.Value, m0: ir.Value, oidx: list[ir.Value], checked: bool) -> None:
        """`tile` output channels from m0 at one output position. Checked: each tap's input
        coordinates are tested (a tap in the padding reads element 0 and multiplies by 0);
        otherwise (interior positions) none is."""
        grp = b.udiv(m0, c32(mg))  # mg ≥ 1 is a constant; a tile never straddles groups
        for t in range(tile):
            b.store(bias_of(b.add(m0, c32(t))), accs[t])
        starts = [b.sub(b.mul(oidx[d], c32(st_[d])), c32(pads[d])) for d in range(r)]
        ranges = [tap_range(b, starts[d], ks[d], dl[d], sp[d]) for d in range(r)] if checked else []
        with loop(b, cg, "c") as ci:
            ch = b.add(b.mul(grp, c32(cg)), ci)
            xbase = b.add(b.mul(ni, c32(sx[0])), b.mul(ch, c32(sx[1])))
            wbase = b.add(b.mul(m0, c32(sw[0])), b.mul(ci, c32(sw[1])))

            def tap(kidx: list[ir.Value]) -> None:
                coords = [b.add(starts[d], b.mul(kk, c32(dl[d]))) for d, kk in enumerate(kidx)]
                x = sext64(b, load(b, args[0], b.add(xbase, linear_index(b, coords, sx[2:]))))
                woff = b.add(wbase, linear_index(b, kidx, sw[2:]))
                for t in range(tile):
                    w = sext64(b, load(b, args[1], b.add(woff, c32(t * sw[0]))))
                    b.store(b.add(b.load(accs[t], typ=I64), b.mul(x, w)), accs[t])

            if checked:  # only the taps inside the input: a window's range per dimension
                with ranged_nest(b, ranges) as kidx:
                    tap(kidx)
            elif prod(ks) <= MAX_UNROLLED_TAPS:
                for kidx in itertools.product(*(range(k) for k in ks)):
                    tap([c32(kk) for kk in kidx])
            else:
                with nest(b, ks, "k") as kidx:
                    tap(kidx)
        for t in range(tile):
            finish(accs[t], ni, b.add(m0, c32(t)), oidx)

    windows(b, n, m, tile, osp, inner, window)


def windows(b: ir.IRBuilder, n: int, m: int, tile: int, osp, inner, window) -> None:
    """Every output position of `tile` output channels at a time: `window(ni, m0, oidx,
    checked=False)` where the whole window lies inside the input (`inner`: per spatial dim the
    [lo, hi) of such positions), `checked=True` on the border. Shared by conv and qconv.
    A node part (kernels/_ir.py `part_range`; tile 1) takes its flat output elements, each on
    the path its position takes."""

    def position(ni: ir.Value, m0: ir.Value, oidx: list[ir.Value]) -> None:
        inside = ir.Constant(I1, 1)
        for d in range(len(osp)):  # an unsigned compare covers both ends of [lo, hi)
            lo, hi = inner[d]
            inside = b.and_(inside, b.icmp_unsigned("<", b.sub(oidx[d], c32(lo)), c32(hi - lo)))
        with b.if_else(inside) as (then, otherwise):
            with then:
                window(ni, m0, oidx, checked=False)
            with otherwise:
                window(ni, m0, oidx, checked=True)

    rng = part_range(b)
    if rng is not None:
        assert tile == 1
        with loop(b, rng[1], "e", start=rng[0]) as e:
            ni, mi, *oidx = flat_index(b, e, (n, m, *osp))
            position(ni, mi, oidx)
        return
    with nest(b, (n, m // tile), "nm") as (ni, mt):
        m0 = b.mul(mt, c32(tile))
        with nest(b, osp, "o") as oidx:
            position(ni, m0, oidx)
