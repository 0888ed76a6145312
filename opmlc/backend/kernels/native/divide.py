"""Host-only path of an fx32 division by one non-zero scalar (kernels/binary.py calls it inside
its `_fast_scalar_division` block): each quotient in double lanes, corrected exactly.

binary.py's fast loop divides in i64 lanes (a multiply by the reciprocal, then floor, a 64-bit
`vpmullq`, and two integer correction steps: ~30 µops a vector). Here, for a of the output's
shape, d = |y·2^(−s)| (s = div_shift ≥ −20, so 0 < d ≤ 2^51) and n = ±a·2^max(s, 0):

- every operand is exact as a double: a (31 bits), n (a scaled by a power of two, the sign of
  y folded in), d (< 2^53), and R = fl(±2^s / d) is one rounding;
- q̃ = floor(fl(fl(a·R) + 1/2)): the fast block's test proved |n/d| < 2^50, so fl(a·R) is within
  |n/d|·2^-52 ≤ 1/4 of n/d and the + 1/2 rounds by at most 1/8 more: q̃ is floor(n/d + 1/2),
  the interpreter's round_div, or one off either way;
- r = fma(−q̃, d, n) is n − q̃·d exactly (fused: one rounding of an integer of magnitude < 2d ≤
  2^52, which is exact), and q̃ is right iff −d ≤ 2r < d; otherwise one step down (2r < −d)
  or up (2r ≥ d) makes it so;
- the quotient (|q| ≤ 2^50 + 1, an exact double) is clamped to int32 and converted, counted when
  it lies outside, as saturate32 counts the interpreter's i64 quotient.

About 17 µops a vector of 8. The last numel mod 8 elements take the same steps on scalars.

When no quotient can leave int32 whatever a is (|a| ≤ 2^31, so |n/d| ≤ 2^(31 + max(s, 0)) / d;
when that bound, computed as a double (relative error 2^-53, against a margin of 4), is at most
2^31 − 4, every q — within one of n/d + 1/2 — lies in [−2^31 + 2, 2^31 − 2]), the vector loop runs
without the clamp and its count: GELU's x / √2 and attention's scores / √d (~8 of the ~22
instructions a vector).
"""

from __future__ import annotations

from llvmlite import ir

from opmlc.backend.kernels._fx import ld
from opmlc.backend.kernels._ir import I32, c32, c64, counter_slot, counting, loop
from opmlc.backend.kernels.native._vec import LANES
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
        q = b.call(_intrinsic(b, "floor", fty, 1), [b.fadd(b.fmul(af, c(recip)), c(0.5))])
        r = b.call(_intrinsic(b, "fma", fty, 3), [b.fneg(q), c(d), nf])  # n − q·d, exact
        r2 = b.fadd(r, r)
        q = b.fsub(q, b.select(b.fcmp_ordered("<", r2, b.fneg(c(d))), c(1.0), c(0.0)))
        q = b.fadd(q, b.select(b.fcmp_ordered(">=", r2, c(d)), c(1.0), c(0.0)))
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


__all__ = ["MIN_SHIFT", "applies", "emit"]
