"""Kernel of opmlc/ir/ops/reduce.py: an outer nest over the kept positions, an inner nest over
the reduced ones in row-major order (the order `prod` and the arg kinds depend on), one i64
accumulator (and an index for argmax/argmin). A node part (kernels/_ir.py `part_range`) runs
the outer nest over its own flat output elements only."""

from __future__ import annotations

from math import prod

from llvmlite import ir

from opmlc.backend.kernels import kernel
from opmlc.backend.kernels._fx import ld, round_div, smax, smin, st, to_fx
from opmlc.backend.kernels._ir import (
    I1,
    I64,
    c32,
    c64,
    count,
    counting,
    entry_alloca,
    linear_index,
    nest,
    out_nest,
    out_of_int32,
    saturate32,
    shr_round,
    uncounted,
)
from opmlc.ir import fixedpoint as fp
from opmlc.ir.types import DType, TensorType


@kernel("reduce")
def emit(b: ir.IRBuilder, out: ir.Value, args: list[ir.Value], types: list[TensorType], attrs: dict,
         out_type: TensorType) -> None:
    (t,) = types
    kind, axes = attrs["kind"], list(attrs["axes"])
    shape = t.shape
    st_in = [prod(shape[k + 1:]) for k in range(len(shape))]
    kept = [k for k in range(len(shape)) if k not in axes]
    n = prod(shape[a] for a in axes)
    dt = t.dtype
    acc = entry_alloca(b, I64, name="acc")
    best = entry_alloca(b, I64, name="best")
    pos = entry_alloca(b, I64, name="pos")
    is_fx = dt is DType.FX32
    raw = bool(attrs.get("accumulate"))  # the i64 sum itself: a chunk of a long reduction
    # fx prod: whether any step of this output element saturated (counted once per element)
    hit = entry_alloca(b, I1, name="hit") if kind == "prod" and is_fx and counting(b) else None
    with out_nest(b, tuple(shape[k] for k in kept), "o") as oidx:  # a part: its flat elements only
        base = linear_index(b, oidx, [st_in[k] for k in kept])
        out_i = linear_index(b, oidx, [prod(shape[j] for j in kept[i + 1:]) for i in range(len(kept))])
        if kind in ("sum", "mean"):
            b.store(c64(0), acc)
        elif kind == "prod":
            b.store(c64(1 << out_type.frac if is_fx else 1), acc)
            if hit is not None:
                b.store(ir.Constant(I1, 0), hit)
        else:
            b.store(ld(b, args[0], base, dt), best)
            b.store(c64(0), pos)
        with nest(b, tuple(shape[a] for a in axes), "r") as ridx:
            i = b.add(base, linear_index(b, ridx, [st_in[a] for a in axes]))
            x = ld(b, args[0], i, dt)
            if kind in ("sum", "mean"):
                b.store(b.add(b.load(acc, typ=I64), x), acc)
            elif kind == "prod":
                p = b.mul(b.load(acc, typ=I64), x)
                if is_fx:
                    wide = shr_round(b, p, t.frac)
                    if hit is not None:
                        b.store(b.or_(b.load(hit, typ=I1), out_of_int32(b, wide)), hit)
                    with uncounted(b):
                        p = b.sext(saturate32(b, wide), I64)
                b.store(p, acc)
            elif kind in ("max", "min"):
                cur = b.load(best, typ=I64)
                b.store(smax(b, cur, x) if kind == "max" else smin(b, cur, x), best)
            else:
                cur = b.load(best, typ=I64)
                strict = ">" if kind == "argmax" else "<"
                pred = (strict + "=") if attrs.get("select_last") else strict
                better = b.icmp_signed(pred, x, cur)
                k = linear_index(b, ridx, [prod(shape[a] for a in axes[j + 1:]) for j in range(len(axes))])
                b.store(b.select(better, x, cur), best)
                b.store(b.select(better, b.sext(k, I64), b.load(pos, typ=I64)), pos)
        if hit is not None:
            count(b, b.load(hit, typ=I1))
        if kind in ("argmax", "argmin"):
            r = b.load(pos, typ=I64)
        elif kind in ("max", "min"):
            r = b.load(best, typ=I64)
        else:
            r = b.load(acc, typ=I64)
            if kind == "mean" and not raw:
                r = round_div(b, r, c64(max(n, 1)))
        if is_fx and kind not in ("argmax", "argmin") and not raw:
            r = r if kind == "prod" else b.sext(to_fx(b, r, t.frac, out_type.frac), I64)
        st(b, r, out, out_i, out_type.dtype)


__all__ = ["c32", "emit", "fp"]
