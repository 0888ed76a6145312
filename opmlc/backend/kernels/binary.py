"""Kernel of opmlc/ir/ops/binary.py: one broadcast loop nest, the scalar formula of the node's
kind inside it (every operand widened to i64, as the interpreter computes)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from llvmlite import ir

from opmlc.backend.kernels import kernel
from opmlc.backend.kernels._fx import div_round_q32, ld, positive, round_div, smax, smin, st, to_fx
from opmlc.backend.kernels._host import host, reciprocal
from opmlc.backend.kernels._ir import (
    I32,
    I64,
    broadcast_strides,
    c32,
    c64,
    count,
    counting,
    linear_index,
    loop,
    nest,
    out_of_int32,
    part_range,
    saturate32,
    strides,
    uncounted,
)
from opmlc.ir import fixedpoint as fp
from opmlc.ir.ops.binary import CMP, div_shift
from opmlc.ir.types import DType, TensorType

PRED = {"eq": "==", "ne": "!=", "lt": "<", "le": "<=", "gt": ">", "ge": ">="}


def _divisor(b: ir.IRBuilder, y: ir.Value, s: int) -> tuple[ir.Value, ir.Value]:
    """(den, neg) of an fx div: den = y · 2^(−s) (y itself for s ≥ 0), neg: den < 0."""
    den = b.shl(y, c64(-s)) if s < 0 else y
    return den, b.icmp_signed("<", den, c64(0))


def fx_scalar(b: ir.IRBuilder, kind: str, a: ir.Value, y: ir.Value, fa: int, fb: int, fo: int,
              div_in_fast_range: bool = False, div_recip: ir.Value | None = None) -> ir.Value:
    if kind == "mul":
        return to_fx(b, b.mul(a, y), fa + fb, fo)
    if kind == "div":
        s = div_shift(fa, fb, fo)
        num = b.shl(a, c64(max(s, 0))) if s > 0 else a
        den, neg = _divisor(b, y, s)
        num = b.select(neg, b.sub(c64(0), num), num)
        den = b.select(neg, b.sub(c64(0), den), den)
        if host(b):  # natively round_div divides through the FPU (kernels/_host.py)
            wide = round_div(b, num, positive(b, den), in_fast_range=div_in_fast_range, recip=div_recip)
        else:
            wide = _div_mips(b, num, positive(b, den), wide_den=s < 0)
        with uncounted(b):
            q = saturate32(b, wide)
        inf = b.select(b.icmp_signed(">", a, c64(0)), c64(fp.INT32_MAX),
                       b.select(b.icmp_signed("<", a, c64(0)), c64(fp.INT32_MIN), c64(0)))
        by_zero = b.icmp_signed("==", den, c64(0))
        if counting(b):  # ops/binary.py: a quotient outside int32, or a ≠ 0 divided by 0
            count(b, b.select(by_zero, b.icmp_signed("!=", a, c64(0)), out_of_int32(b, wide)))
        return b.select(by_zero, b.trunc(inf, q.type), q)
    if kind in ("add", "sub") and fa == fb == fo and host(b):
        return _saturating_i32(b, kind, a, y)
    if kind == "add" and fo == min(fa, fb) < max(fa, fb) and host(b):
        return _add_rescaled_i32(b, *((a, y, fb - fa) if fa < fb else (y, a, fa - fb)))
    top = max(fa, fb)
    x = b.shl(a, c64(top - fa)) if top > fa else a
    z = b.shl(y, c64(top - fb)) if top > fb else y
    if kind in CMP:
        return b.icmp_signed(PRED[kind], x, z)
    r = {"add": lambda: b.add(x, z), "sub": lambda: b.sub(x, z),
         "max": lambda: smax(b, x, z), "min": lambda: smin(b, x, z)}[kind]()
    return to_fx(b, r, top, fo)


def _saturating_i32(b: ir.IRBuilder, kind: str, a: ir.Value, y: ir.Value) -> ir.Value:
    """Host module: an fx add/sub of operands and output of one fraction is saturate32(a ± y)
    (to_fx with no shift), which LLVM's llvm.sadd.sat / llvm.ssub.sat on the i32 operands
    compute without widening (16 lanes a vector instead of 8). It clamped exactly when it
    differs from the wrapped i32 result (an overflow wraps to the other sign), which is what
    saturate32 counts."""
    a32, y32 = b.trunc(a, I32), b.trunc(y, I32)  # the loaded i32s (ld sign-extended them)
    name = {"add": "llvm.sadd.sat.i32", "sub": "llvm.ssub.sat.i32"}[kind]
    fn = b.module.globals.get(name) or ir.Function(b.module, ir.FunctionType(I32, [I32, I32]), name)
    r = b.call(fn, [a32, y32])
    if counting(b):
        wrapped = b.add(a32, y32) if kind == "add" else b.sub(a32, y32)
        count(b, b.icmp_signed("!=", r, wrapped))
    return r


def _add_rescaled_i32(b: ir.IRBuilder, x: ir.Value, z: ir.Value, k: int) -> ir.Value:
    """Host module: an fx add whose output has the smaller of the operands' fractions, x's
    (z has k ≥ 1 more bits): to_fx(x·2^k + z, f + k, f) = saturate32(x + shr_round(z, k)),
    since x·2^k is a multiple of 2^k (|x·2^k + z| < 2^62: no wrap in the interpreter's i64).
    shr_round(z, k) of an i32 is (z >> k) + bit k − 1 of z (with z = q·2^k + r, 0 ≤ r < 2^k:
    floor((z + 2^(k−1)) / 2^k) = q + [r ≥ 2^(k−1)]), an i32; the saturating i32 add then counts
    as `_saturating_i32`. 16 lanes a vector, no widening."""
    z32 = b.trunc(z, I32)
    half_bit = b.and_(b.lshr(z32, c32(k - 1)), c32(1))
    s = b.add(b.ashr(z32, c32(k)), half_bit)  # |s| ≤ 2^(31 − k) + 1: no wrap
    return _saturating_i32(b, "add", x, b.sext(s, I64))


def _div_mips(b: ir.IRBuilder, num: ir.Value, den: ir.Value, wide_den: bool) -> ir.Value:
    """round_div(num, den) for |num| ≤ 2^62 and 1 ≤ den ≤ 2^62 without i64 division (issue 13:
    `__divdi3` is a ≈ 700-step software loop on MIPS32), as far as saturation can tell: exact
    when |round_div| < 2^32, else a value of the same sign beyond int32 (div_round_q32's 2^32).

    A negative numerator is divided on its magnitude with ties down: round_div(n, d) =
    −round_div_down(−n, d). A divisor ≥ 2^32 (only `wide_den`: s < 0, where num = ±a with
    |a| ≤ 2^31 < den) leaves floor(|n| / d) = 0 and remainder |n|: the result is 1 when
    2|n| ≥ d (ties up) or 2|n| > d (ties down), else 0."""
    down = b.icmp_signed("<", num, c64(0))
    mag = b.select(down, b.sub(c64(0), num), num)
    down64 = b.zext(down, I64)
    if wide_den:
        big = b.icmp_signed(">=", den, c64(1 << 32))
        q = b.call(div_round_q32(b.module), [mag, b.select(big, c64(1), den), down64])
        half_up = b.zext(b.icmp_signed(">=", b.shl(mag, c64(1)), b.add(den, down64)), I64)
        q = b.select(big, half_up, q)
    else:
        q = b.call(div_round_q32(b.module), [mag, den, down64])
    return b.select(down, b.sub(c64(0), q), q)


def int_scalar(b: ir.IRBuilder, kind: str, a: ir.Value, y: ir.Value, dt: DType) -> ir.Value:
    if kind in CMP:
        return b.icmp_signed(PRED[kind], a, y)
    simple = {"add": b.add, "sub": b.sub, "mul": b.mul, "bitand": b.and_, "bitor": b.or_, "bitxor": b.xor}
    if kind in simple:
        return simple[kind](a, y)
    if kind == "max":
        return smax(b, a, y)
    if kind == "min":
        return smin(b, a, y)
    width_min = fp.INT32_MIN if dt is DType.I32 else -(1 << 63)
    zero = b.icmp_signed("==", y, c64(0))
    overflow = b.and_(b.icmp_signed("==", a, c64(width_min)), b.icmp_signed("==", y, c64(-1)))
    safe = b.select(b.or_(zero, overflow), c64(1), y)
    q = b.sdiv(a, safe)  # truncating, like the interpreter's adjusted floor division
    if kind == "div":
        r = b.select(overflow, a, q)
    else:
        rem = b.srem(a, safe)  # sign of the dividend (C's %)
        if kind == "mod":
            fix = b.and_(b.icmp_signed("!=", rem, c64(0)),
                         b.xor(b.icmp_signed("<", rem, c64(0)), b.icmp_signed("<", safe, c64(0))))
            rem = b.select(fix, b.add(rem, safe), rem)
        r = b.select(overflow, c64(0), rem)
    return b.select(zero, c64(0), r)


@kernel("binary")
def emit(b: ir.IRBuilder, out: ir.Value, args: list[ir.Value], types: list[TensorType], attrs: dict,
         out_type: TensorType) -> None:
    kind = attrs["kind"]
    shape = out_type.shape
    sa, sb = (broadcast_strides(t.shape, shape) for t in types)
    so = strides(shape)
    dt = types[0].dtype
    rng = part_range(b)
    if host(b) and rng is None:  # fewer, longer loops: the same elements in the same order
        shape, (sa, sb, so) = coalesce(shape, [sa, sb, so])

    def body(fast_div: bool, recip: ir.Value | None = None) -> None:
        with nest(b, shape) if rng is None else _flat(b, shape, rng) as idx:
            a = ld(b, args[0], linear_index(b, idx, sa), dt)
            y = ld(b, args[1], linear_index(b, idx, sb), dt)
            if dt is DType.BOOL:
                x1, y1 = b.icmp_signed("!=", a, c64(0)), b.icmp_signed("!=", y, c64(0))
                r = {"and": lambda: b.and_(x1, y1), "or": lambda: b.or_(x1, y1), "xor": lambda: b.xor(x1, y1),
                     "eq": lambda: b.icmp_signed("==", a, y), "ne": lambda: b.icmp_signed("!=", a, y)}[kind]()
            elif dt is DType.FX32:
                r = fx_scalar(b, kind, a, y, types[0].frac, types[1].frac, out_type.frac, fast_div, recip)
            else:
                r = int_scalar(b, kind, a, y, dt)
            st(b, r, out, linear_index(b, idx, so), out_type.dtype)

    fast = _fast_scalar_division(b, args, types, attrs, out_type)
    if fast is None:
        body(False)
        return
    fast_blk, slow_blk, done = (b.append_basic_block(n) for n in ("div.all_fast", "div.general", "div.end"))
    b.cbranch(fast, fast_blk, slow_blk)
    b.position_at_end(fast_blk)
    from opmlc.backend.kernels.native import divide  # host-only; native/ imports kernels' modules

    if divide.applies(types, out_type):  # a non-zero divisor: exact double lanes (native/divide.py)
        lanes_blk, recip_blk = b.append_basic_block("div.lanes"), b.append_basic_block("div.recip")
        b.cbranch(b.icmp_signed("!=", ld(b, args[1], c32(0), DType.FX32), c64(0)), lanes_blk, recip_blk)
        b.position_at_end(lanes_blk)
        divide.emit(b, out, args, types, out_type)
        b.branch(done)
        b.position_at_end(recip_blk)
    # the scalar divisor's reciprocal, once: each element's quotient is then a multiply
    # (kernels/_host.py floor_divmod_recip, under the bound the test above proved)
    den, neg = _divisor(b, ld(b, args[1], c32(0), DType.FX32), div_shift(types[0].frac, types[1].frac, out_type.frac))
    body(True, reciprocal(b, positive(b, b.select(neg, b.sub(c64(0), den), den))))
    b.branch(done)
    b.position_at_end(slow_blk)
    body(False)
    b.branch(done)
    b.position_at_end(done)


def _fast_scalar_division(b: ir.IRBuilder, args: list[ir.Value], types: list[TensorType], attrs: dict,
                          out_type: TensorType) -> ir.Value | None:
    """Host module only: for an fx32 division by one scalar, an i1 that holds when every
    element's quotient may take the FPU path alone (kernels/_host.py `in_fast_range`: |n| <
    2^62 and |n| < 2^50 · d), tested once before the loop; None when no such test applies.

    The numerator is n = ±a · 2^s with |a| ≤ 2^31 and s = div_shift(fa, fb, fo) (or a itself
    when s ≤ 0, the divisor then shifted), so |n| ≤ 2^(31 + max(s, 0)) < 2^62 for s ≤ 30, and
    |n| < 2^50 · d once d ≥ 2^(s − 19) (always for s ≤ 19). A zero divisor passes too: its
    quotient (taken with d = 1, |n| / 1 < 2^62, no poison) is discarded for the ±inf select.
    The constant divisors of attention scales and GELU's 1/√2 (s 28–30, d ≈ 2^28) pass."""
    if not host(b) or attrs["kind"] != "div" or types[0].dtype is not DType.FX32 or types[1].numel != 1:
        return None
    if part_range(b) is not None:
        return None
    s = div_shift(types[0].frac, types[1].frac, out_type.frac)
    if s > 30:
        return None
    if s <= 19:
        return ir.Constant(ir.IntType(1), 1)
    y = ld(b, args[1], c32(0), DType.FX32)
    mag = b.select(b.icmp_signed("<", y, c64(0)), b.sub(c64(0), y), y)  # |y| ≤ 2^31: no overflow in i64
    return b.or_(b.icmp_signed(">=", mag, c64(1 << (s - 19))), b.icmp_signed("==", y, c64(0)))


def coalesce(shape: tuple[int, ...], stride_lists: list[list[int]]) -> tuple[tuple[int, ...], list[list[int]]]:
    """The loop nest of `shape` with fewer dimensions, visiting the same elements in the same
    order: dimensions of size 1 dropped (their index is always 0), and dimension i merged
    into i + 1 wherever every operand's stride of i is its stride of i + 1 times that extent
    (index i·d + j then addresses exactly what (i, j) did, for every operand)."""
    dims = [(d, [st[k] for st in stride_lists]) for k, d in enumerate(shape) if d != 1]
    merged: list[tuple[int, list[int]]] = []
    for d, sts in dims:
        if merged and all(p == q * d for p, q in zip(merged[-1][1], sts, strict=True)):
            merged[-1] = (merged[-1][0] * d, sts)
        else:
            merged.append((d, sts))
    return tuple(d for d, _ in merged), [[sts[i] for _, sts in merged] for i in range(len(stride_lists))]


@contextmanager
def _flat(b: ir.IRBuilder, shape: tuple[int, ...], rng: tuple[ir.Value, ir.Value]) -> Iterator[list[ir.Value]]:
    """A node part's output elements [lo, hi), each as its multi-index (as `nest` yields)."""
    with loop(b, rng[1], "e", start=rng[0]) as e:
        idx = []
        for d in reversed(shape):
            idx.append(b.urem(e, c32(d)))
            e = b.udiv(e, c32(d))
        yield idx[::-1]


__all__ = ["I64", "emit"]
