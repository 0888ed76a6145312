"""Host-only path of an fx32 division by one non-zero scalar (kernels/binary.py calls it inside
its `_fast_scalar_division` block): each quotient in double lanes, corrected exactly.

binary.py's fast loop divides in i64 lanes (a multiply by the reciprocal, then floor, a 64-bit
`vpmullq`, and two integer correction steps: ~30 µops a vector). Here, for a of the output's
shape, d = |y·2^(−s)| (s = div_shift ≥ −20, so 0 < d ≤ 2^51) and n = ±a·2^max(s, 0):

- every operand is exact as a double: a (31 bits), n (a scaled by a power of two, the sign of
  y folded in), d (< 2^53), and R = fl(±2^s / d) is one rounding;
- q̃ = floor(fma(a, R, 1/8)), an estimate of q = floor(n/d + 1/2) (the interpreter's round_div)
  taken low on purpose: the fast block's test proved |n/d| < 2^50, so the exact a·R is within
  |n/d|·2^-53 ≤ 1/8 of n/d and the fused add's one rounding adds ≤ 1/8: the argument lies within
  1/4 of n/d + 1/2 − 3/8, below n/d + 1/2 and above q − 1, so q̃ is q or q − 1;
- r = fma(−q̃, d, n) is n − q̃·d exactly (one rounding of an integer of magnitude < 3d/2 ≤
  1.5·2^51, which is exact), and q = q̃ + 1 iff r ≥ d/2 (d/2 exact): one test;
- the quotient (|q| ≤ 2^50 + 1, an exact double) is clamped to int32 and converted, counted when
  it lies outside, as saturate32 counts the interpreter's i64 quotient.

About 14 µops a vector of 8. The last numel mod 8 elements take the same steps on scalars.

When no quotient can leave int32 whatever a is (|a| ≤ 2^31, so |n/d| ≤ 2^(31 + max(s, 0)) / d;
when that bound, computed as a double (relative error 2^-53, against a margin of 4), is at most
2^31 − 4, every q — within one of n/d + 1/2 — lies in [−2^31 + 2, 2^31 − 2]), the vector loop runs
without the clamp and its count: GELU's x / √2 and attention's scores / √d (~8 of the ~22
instructions a vector).

A divisor whose d is a power of two, 2^e (attention's √d for a head of 16, 64 or 256; a 1.0 or a
0.5), takes shifts instead (`_power_of_two_loop`): the interpreter's round_div(n, 2^e) is
floor(n / 2^e + 1/2), a rounding right shift, and n = ±a·2^max(s, 0) — about 8 instructions a
vector, saturation counted as above (tiny_gpt2, scores / 4: ~1 µs a layer less, in one process).
"""

from __future__ import annotations

from llvmlite import ir

from opmlc.backend.kernels._fx import ld
from opmlc.backend.kernels._ir import I32, I64, c32, c64, counter_slot, counting, entry_alloca, loop
from opmlc.backend.kernels.native._vec import LANES, VI32, VI64, intrinsic, splat, vload
from opmlc.ir import fixedpoint as fp
from opmlc.ir.ops.binary import div_shift
from opmlc.ir.types import DType, TensorType

DOUBLE = ir.DoubleType()
MIN_SHIFT = -20  # d = |y|·2^(−s) ≤ 2^51: exact, and the remainder's double exact


def applies(types: list[TensorType], out_type: TensorType) -> bool:
    """Whether binary.py's fast scalar division may take this path (the caller has checked the
    op: fx32 `div` by a one-element divisor, in the host module)."""
    s = div_shift(types[0].frac, types[1].frac, out_type.frac)
    return types[0].shape == out_type.shape and MIN_SHIFT <= s <= 30


def _intrinsic(b: ir.IRBuilder, name: str, ty: ir.Type, n_args: int) -> ir.Function:
    suffix = f"v{ty.count}f64" if isinstance(ty, ir.VectorType) else "f64"
    full = f"llvm.{name}.{suffix}"
    return b.module.globals.get(full) or ir.Function(b.module, ir.FunctionType(ty, [ty] * n_args), full)


def emit(b: ir.IRBuilder, out: ir.Value, args: list[ir.Value], types: list[TensorType], out_type: TensorType
         ) -> None:
    """The quotients of every element (the divisor is not zero: the caller branched on it)."""
    s = div_shift(types[0].frac, types[1].frac, out_type.frac)
    y = ld(b, args[1], c32(0), DType.FX32)
    den = b.shl(y, c64(-s)) if s < 0 else y
    neg = b.icmp_signed("<", den, c64(0))
    dmag = b.select(neg, b.sub(c64(0), den), den)  # 0 < d ≤ 2^51
    d = b.sitofp(dmag, DOUBLE)
    sign = b.select(neg, ir.Constant(DOUBLE, -1.0), ir.Constant(DOUBLE, 1.0))
    scale = b.fmul(sign, ir.Constant(DOUBLE, float(2 ** max(s, 0))))  # ±2^s: exact
    recip = b.fdiv(scale, d)  # R: the one rounding before the loop
    half_d = b.fmul(d, ir.Constant(DOUBLE, 0.5))  # exact: d is an integer below 2^52
    slot = counter_slot(b) if counting(b) else None
    n = out_type.numel

    def quotients(a32: ir.Value, width: int, clamp: bool = True) -> tuple[ir.Value, ir.Value | None]:
        """(the int32 results, the i1 "saturated" flags) of `width` lanes (1: scalars); without
        `clamp` (every quotient is proven in range) no clamp and no flags."""
        fty = ir.VectorType(DOUBLE, width) if width > 1 else DOUBLE

        def c(v: float | ir.Value) -> ir.Value:
            if width == 1:
                return v if isinstance(v, ir.Value) else ir.Constant(DOUBLE, v)
            if isinstance(v, ir.Value):
                w = b.insert_element(ir.Constant(fty, ir.Undefined), v, c32(0))
                return b.shuffle_vector(w, ir.Constant(fty, ir.Undefined), ir.Constant(ir.VectorType(I32, width), [0] * width))
            return ir.Constant(fty, [v] * width)

        af = b.sitofp(a32, fty)
        nf = b.fmul(af, c(scale))  # ±a·2^max(s, 0): exact
        fma = _intrinsic(b, "fma", fty, 3)
        q = b.call(_intrinsic(b, "floor", fty, 1), [b.call(fma, [af, c(recip), c(0.125)])])  # q or q − 1
        r = b.call(fma, [b.fneg(q), c(d), nf])  # n − q̃·d, exact
        q = b.fadd(q, b.select(b.fcmp_ordered(">=", r, c(half_d)), c(1.0), c(0.0)))
        ity = ir.VectorType(I32, width) if width > 1 else I32
        if not clamp:
            return b.fptosi(q, ity), None
        low, high = b.fcmp_ordered("<", q, c(float(fp.INT32_MIN))), b.fcmp_ordered(">", q, c(float(fp.INT32_MAX)))
        q = b.select(low, c(float(fp.INT32_MIN)), b.select(high, c(float(fp.INT32_MAX)), q))
        return b.fptosi(q, ity), b.or_(low, high)

    vecs = n // LANES
    vty = ir.VectorType(I32, LANES)

    def vector_loop(clamp: bool) -> None:
        with loop(b, vecs, "dv") as k:
            i = b.mul(k, c32(LANES))
            a32 = b.load(b.gep(args[0], [i], source_etype=I32), typ=vty, align=4)
            res, sat = quotients(a32, LANES, clamp)
            b.store(res, b.gep(out, [i], source_etype=I32), align=4)
            if slot is not None and clamp:
                pop = b.module.globals.get("llvm.ctpop.i8") or ir.Function(
                    b.module, ir.FunctionType(ir.IntType(8), [ir.IntType(8)]), "llvm.ctpop.i8")
                b.store(b.add(b.load(slot, typ=I32), b.zext(b.call(pop, [b.bitcast(sat, ir.IntType(LANES))]), I32)),
                        slot)

    # every quotient in range, whatever a (module docstring): the loop without clamp or count
    bound = b.fdiv(ir.Constant(DOUBLE, float(2 ** (31 + max(s, 0)))), d)
    power = b.icmp_unsigned("==", b.and_(dmag, b.sub(dmag, c64(1))), c64(0))
    with b.if_else(power) as (shifted, divided):
        with shifted:
            _power_of_two_loop(b, out, args[0], vecs, neg, dmag, max(s, 0), slot)
        with divided:
            with b.if_else(b.fcmp_ordered("<=", bound, ir.Constant(DOUBLE, float(2 ** 31 - 4)))) as (in_range, other):
                with in_range:
                    vector_loop(False)
                with other:
                    vector_loop(True)
    with loop(b, c32(n), "dt", start=c32(vecs * LANES)) as i:
        a32 = b.load(b.gep(args[0], [i], source_etype=I32), typ=I32)
        res, sat = quotients(a32, 1)
        b.store(res, b.gep(out, [i], source_etype=I32))
        if slot is not None:
            b.store(b.add(b.load(slot, typ=I32), b.zext(sat, I32)), slot)


def _power_of_two_loop(b: ir.IRBuilder, out: ir.Value, a_arg: ir.Value, vecs: int, neg: ir.Value, dmag: ir.Value,
                       shift: int, slot: ir.Value | None) -> None:
    """The first vecs·8 quotients when d = 2^e: round_div(±a·2^shift, 2^e) = floor(±a·2^(shift −
    e) + 1/2) is ±a·2^(shift − e) when shift ≥ e (an integer), else shr_round(±a, e − shift), so
    one left shift, one rounding add and one right shift in i64 lanes (|±a·2^shift| ≤ 2^61,
    e ≤ 51), then saturate32 and its count (summed in a vector, added once)."""
    e = b.call(intrinsic(b, "llvm.cttz.i64", I64, [I64, ir.IntType(1)]), [dmag, ir.Constant(ir.IntType(1), 1)])
    left = b.sub(c64(shift), e)
    up = b.icmp_signed(">", left, c64(0))
    right = b.select(up, c64(0), b.sub(c64(0), left))
    half = b.select(b.icmp_signed(">", right, c64(0)), b.shl(c64(1), b.sub(right, c64(1))), c64(0))
    flip = b.sext(neg, I64)  # −1 or 0: ±a = (a ^ flip) − flip

    left_v, right_v, half_v, flip_v = (splat(b, v) for v in (b.select(up, left, c64(0)), right, half, flip))
    counts = entry_alloca(b, VI32, name="div.sat")
    b.store(ir.Constant(VI32, None), counts)
    with loop(b, vecs, "dp") as k:
        i = b.mul(k, c32(LANES))
        q = b.ashr(b.add(b.shl(b.sub(b.xor(vload(b, a_arg, i), flip_v), flip_v), left_v), half_v), right_v)
        out_of_range = b.icmp_unsigned("!=", b.lshr(b.add(q, ir.Constant(VI64, [1 << 31] * LANES)),
                                                    ir.Constant(VI64, [32] * LANES)), ir.Constant(VI64, [0] * LANES))
        lo, hi = ir.Constant(VI64, [fp.INT32_MIN] * LANES), ir.Constant(VI64, [fp.INT32_MAX] * LANES)
        q = b.select(b.icmp_signed("<", q, lo), lo, b.select(b.icmp_signed(">", q, hi), hi, q))
        b.store(b.trunc(q, VI32), b.gep(out, [i], source_etype=I32), align=4)
        if slot is not None:
            b.store(b.add(b.load(counts, typ=VI32), b.zext(out_of_range, VI32)), counts)
    if slot is not None:
        red = intrinsic(b, "llvm.vector.reduce.add.v8i32", I32, [VI32])
        b.store(b.add(b.load(slot, typ=I32), b.call(red, [b.load(counts, typ=VI32)])), slot)

__all__ = ["MIN_SHIFT", "applies", "emit"]
