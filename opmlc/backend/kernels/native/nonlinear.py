"""Host kernels of opmlc/ir/ops/unary.py's fixed-point sigmoid, tanh and erf, and of
ops/softmax.py (`emit_softmax`): the interpreter's integer steps on explicit <8 x i64> lanes
(`Lanes`, which native/norm.py shares), with every product a 32 × 32-bit one.

Why: the portable kernel (kernels/unary.py) is vectorised by LLVM, but InstCombine folds each
Horner step's rounding shift into the next product ((p·t + 2^29) >> 30 becomes (p·4t + 2^31)
>> 32), so the multiplicands grow past 32 bits and every product becomes `vpmullq` (3 µops, 15
cycles of latency) instead of `vpmuldq` (1 µop, 5 cycles): GELU's erf took ~4 ns an element.
Here each product whose operands are proven to lie in [−2^31, 2^31) (`mul32`) or [0, 2^32)
(`umul32`) is one `vpmuldq` / `vpmuludq` written as inline assembly on an x86 host with
AVX-512 (an optimisation barrier LLVM cannot rewrite), or the plain i64 multiply elsewhere
(the same bits: the product is exact in i64 either way).

Each step below is the interpreter's (ops/unary.py, fixedpoint.exp_nonpositive_q30,
exp2_frac_q30, round_div) in the same order with the same roundings; the comments give the
operand bounds that make each product a 32-bit one. Two rewrites are exact by arithmetic, not
by order: a Horner step's shr_round(m, 30) + c is one add and one shift (`horner_step`), and
the one division per element, round_div(n, d) with 0 ≤ n ≤ 2^61 and 2^30 ≤ d < 2^32, is a
floating estimate of n/d + 1/2 (`vrcp14pd` and two Newton steps) taken low, the answer or one
less, then corrected exactly by one i64 comparison (`Lanes.round_div`: the argument is there).

Elements are taken eight at a time; the last (numel mod 8) go through the portable kernel's
scalar code (kernels/unary.py fx_scalar), the same function of the element. Parts (threads)
split the output on multiples of eight.
"""

from __future__ import annotations

from functools import cache

import llvmlite.binding as llvm
from llvmlite import ir

from opmlc.backend.kernels._fx import ld, st
from opmlc.backend.kernels._ir import I32, I64, c32, c64, counter_slot, counting, loop
from opmlc.backend.kernels.native import host_kernel
from opmlc.backend.kernels.native._vec import LANES, VI32, VI64, intrinsic, part_range, vload
from opmlc.backend.kernels.unary import fx_scalar
from opmlc.ir import fixedpoint as fp
from opmlc.ir.ops import unary as unary_op
from opmlc.ir.types import DType, TensorType

KINDS = ("sigmoid", "tanh", "erf")
DOUBLE = ir.DoubleType()
VF64 = ir.VectorType(DOUBLE, LANES)
VI1 = ir.VectorType(ir.IntType(1), LANES)


@cache
def _x86_avx512() -> bool:
    """Whether this host's vector multiplies can be pinned as AVX-512 `vpmuldq`/`vpmuludq`."""
    llvm.initialize_native_target()
    return llvm.get_process_triple().startswith("x86_64") and bool(llvm.get_host_cpu_features().get("avx512f"))


def accepts(types: list[TensorType], attrs: dict, out_type: TensorType) -> bool:
    return (attrs["kind"] in KINDS and types[0].dtype is DType.FX32 and out_type.dtype is DType.FX32
            and out_type.numel >= LANES and 0 <= types[0].frac <= fp.Q30 and 0 <= out_type.frac <= fp.Q30)


def work(types: list[TensorType], attrs: dict, out_type: TensorType) -> int:
    return out_type.numel * 16  # ~16 i64 multiply-adds' time an element: split from ~64k elements


class Lanes:
    """<8 x i64> arithmetic on one builder, over `u` independent vectors at once: a value is a list
    of u vectors (or one constant, shared), and each step is emitted for all u in turn, so the
    long dependency chain of one vector overlaps the others' (the loop is latency-bound)."""

    def __init__(self, b: ir.IRBuilder, u: int) -> None:
        self.b, self.u = b, u

    @staticmethod
    def c(v: int) -> ir.Constant:
        return ir.Constant(VI64, [v] * LANES)

    def map(self, fn, *args):
        return [fn(*(a[k] if isinstance(a, list) else a for a in args)) for k in range(self.u)]

    def _asm_mul(self, op: str, x, y):
        ty = ir.FunctionType(VI64, [VI64, VI64])
        return self.map(lambda p, q: self.b.asm(ty, f"{op} $2, $1, $0", "=v,v,v", [p, q], False), x, y)

    def mul32(self, x, y):
        """x · y for lanes proven in [−2^31, 2^31): vpmuldq (exact: the low halves are the values)."""
        return self._asm_mul("vpmuldq", x, y) if _x86_avx512() else self.map(self.b.mul, x, y)

    def umul32(self, x, y):
        """x · y for lanes proven in [0, 2^32): vpmuludq."""
        return self._asm_mul("vpmuludq", x, y) if _x86_avx512() else self.map(self.b.mul, x, y)

    def add(self, x, y):
        return self.map(self.b.add, x, y)

    def sub(self, x, y):
        return self.map(self.b.sub, x, y)

    def shl(self, x, s: int):
        return self.map(self.b.shl, x, self.c(s))

    def shr_round(self, x, s: int):
        """fixedpoint.shr_round by a constant 0..62."""
        assert 0 <= s <= 62
        return x if s == 0 else self.map(self.b.ashr, self.add(x, self.c(1 << (s - 1))), self.c(s))

    def horner_step(self, prod, c: int):
        """shr_round(prod, 30) + c as one add and one shift: (prod + 2^29 + c·2^30) >> 30, the
        same integer since c·2^30 is a multiple of 2^30 (floor((m + c·2^30) / 2^30) = floor(m /
        2^30) + c), for |prod| < 2^61 and |c| < 2^31 (no wrap: the sum stays below 2^62)."""
        return self.map(self.b.ashr, self.add(prod, self.c((1 << (fp.Q30 - 1)) + (c << fp.Q30))), self.c(fp.Q30))

    def shr_round_var(self, x, s):
        """fixedpoint.shr_round by lanes s already in 0..32: the half (2^s) >> 1 is 2^(s − 1),
        or 0 for s = 0."""
        half = self.map(self.b.lshr, self.map(self.b.shl, self.c(1), s), self.c(1))
        return self.map(self.b.ashr, self.add(x, half), s)

    def select(self, m, x, y):
        return self.map(self.b.select, m, x, y)

    def lt(self, x, y):
        return self.map(lambda p, q: self.b.icmp_signed("<", p, q), x, y)

    def eq(self, x, y):
        return self.map(lambda p, q: self.b.icmp_signed("==", p, q), x, y)

    def smin(self, x, y):
        return self.select(self.lt(x, y), x, y)

    def neg(self, x):
        return self.sub(self.c(0), x)

    def round_div(self, n, d):
        """fixedpoint.round_div(n, d) = floor(n/d + 1/2) for 0 ≤ n ≤ 2^61 and 2^30 ≤ d < 2^32,
        n exact as a double (a power of two times a value below 2^53: module docstring).

        The estimate is taken low on purpose, so that one test corrects it: v = fl(n·r̃ + c) with
        c = 1/2 − 2^-18 (one fused multiply-add; `_reciprocal`'s r̃ is within n/d · 2^-51 < 2^-20
        of n/d, and v's one rounding, at most half an ulp of a value below 2^32, adds ≤ 2^-22)
        lies in (n/d + 1/2 − 2^-17, n/d + 1/2): q̃ = trunc(v) (floor: v > 0) is q = floor(n/d +
        1/2) or q − 1. q̃ + 1 ≤ q iff 2(q̃ + 1)d ≤ 2n + d, i.e. 2n − d ≥ 2q̃d (each side below
        2^63: 2q̃d ≤ 2n + d; q̃ ≤ 2^31 + 1 makes q̃d one `vpmuludq`). Without AVX-512 the
        estimate is fl(fl(n/d) + c), within 2^-21 of n/d + c: the same argument."""
        b = self.b
        nf, df = self.map(lambda z: b.sitofp(z, VF64), n), self.map(lambda z: b.sitofp(z, VF64), d)
        low_half = ir.Constant(VF64, [0.5 - 2.0**-18] * LANES)
        if _x86_avx512():
            fma = intrinsic(b, "llvm.fma.v8f64", VF64, [VF64] * 3)
            v = self.map(lambda x, r: b.call(fma, [x, r, low_half]), nf, self._reciprocal(df))
        else:
            v = self.map(lambda x, y: b.fadd(b.fdiv(x, y), low_half), nf, df)
        q = self.map(lambda z: b.fptosi(z, VI64), v)
        short = self.map(lambda x, y: b.icmp_signed(">=", x, y),
                         self.sub(self.shl(n, 1), d), self.shl(self.umul32(q, d), 1))
        return self.map(lambda z, m: b.add(z, b.zext(m, VI64)), q, short)

    def _reciprocal(self, df):
        """1/d within a relative 2^-51 (d = df ∈ [2^30, 2^32), exact in a double), for
        round_div's estimate: `vrcp14pd` (relative error ε < 2^-14), then two Newton steps by
        fused multiply-adds, e = 1 − d·r and r' = r + r·e: with r = (1 − ε)/d, e = ε rounded
        once, and r' = (1 − ε²)/d up to two roundings of 2^-53: ε² + 2^-52 after each step,
        < 2^-51 after two. (`vdivpd` takes 16 cycles a vector on port 0, which the rest of the
        loop needs.)"""
        b = self.b
        name = "llvm.x86.avx512.rcp14.pd.512"
        fn = b.module.globals.get(name) or ir.Function(
            b.module, ir.FunctionType(VF64, [VF64, VF64, ir.IntType(8)]), name)
        fma = intrinsic(b, "llvm.fma.v8f64", VF64, [VF64] * 3)
        one = ir.Constant(VF64, [1.0] * LANES)
        r = self.map(lambda z: b.call(fn, [z, ir.Constant(VF64, [0.0] * LANES), ir.Constant(ir.IntType(8), -1)]), df)
        for _ in range(2):
            e = self.map(lambda z, w: b.call(fma, [b.fneg(z), w, one]), df, r)
            r = self.map(lambda w, x: b.call(fma, [w, x, w]), r, e)
        return r

    def exp_q30_of_product(self, mag_l, frac: int):
        """fixedpoint.exp_nonpositive_q30(d, frac) given mag_l = −d · LOG2E_Q30 ≥ 0 (< 2^63):
        t = shr_round(d · LOG2E_Q30, frac), then 2^k · 2^r as the interpreter splits it.

        The last step, shr_round(p, s) with s = min(−k, 32) and p ∈ [2^30, 2^31), is taken as
        ((p << (32 − s)) + 2^31) >> 32 (the same floor((p + 2^(s−1)) / 2^s) scaled by 2^(32 − s);
        p itself for s = 0), so the shift is max(k + 32, 0): one variable shift and no half to
        make. k + 32 is read off t + 32·2^30, formed inside t's rounding shift where that fits
        (frac ≤ 27: 2^(35 + frac) + 2^(frac − 1) − mag_l lies in (−2^63, 2^62 + 2^26] for
        0 ≤ mag_l < 2^63). k ≤ 0 (t ≤ 0), so the shift is at most 32 and p << 32 < 2^63."""
        fused = frac <= 27
        t = self.shr_round(self.neg(mag_l), frac) if not fused else self.map(
            self.b.ashr, self.sub(self.c((1 << (35 + frac)) + (1 << (frac - 1) if frac else 0)), mag_l), self.c(frac))
        # r = t − k·2^30 = t mod 2^30: in two's complement, t's low 30 bits (the added 32·2^30 too)
        r = self.map(self.b.and_, t, self.c((1 << fp.Q30) - 1))  # [0, 2^30)
        p = self.c(fp.EXP2_Q30[-1])
        for c in fp.EXP2_Q30[-2::-1]:  # p ∈ [0, 2^31), r < 2^30 (fixedpoint.exp2_frac_q30)
            p = self.horner_step(self.mul32(p, r), c)
        k32 = self.map(self.b.ashr, t, self.c(fp.Q30))
        if not fused:
            k32 = self.add(k32, self.c(32))
        k32 = self.select(self.lt(k32, self.c(0)), self.c(0), k32)  # 32 − s
        return self.map(self.b.ashr, self.add(self.map(self.b.shl, p, k32), self.c(1 << 31)), self.c(32))  # [0, 2^30]

def _sigmoid(v: Lanes, x, f: int, fo: int):
    """ops/unary.py sigmoid_fx; returns the i64 before saturate32."""
    neg = v.lt(x, v.c(0))
    ax = v.select(neg, v.neg(x), x)  # ≤ 2^31
    e = v.exp_q30_of_product(v.umul32(ax, v.c(fp.LOG2E_Q30)), f)  # ax·L < 2^62
    num = v.select(neg, v.shl(e, fo), v.c(1 << (30 + fo)))  # ≤ 2^60
    return v.round_div(num, v.add(v.c(fp.ONE_Q30), e))  # d ∈ [2^30, 2^31]; q ≤ 2^fo < 2^32


def _tanh(v: Lanes, x, f: int, fo: int):
    neg = v.lt(x, v.c(0))
    ax = v.select(neg, v.neg(x), x)
    # d = −2|x| may be −2^32: (2|x|)·L is formed as 2·(|x|·L), the same i64 (< 2^63)
    e = v.exp_q30_of_product(v.shl(v.umul32(ax, v.c(fp.LOG2E_Q30)), 1), f)
    mag = v.round_div(v.shl(v.sub(v.c(fp.ONE_Q30), e), fo), v.add(v.c(fp.ONE_Q30), e))
    return v.select(neg, v.neg(mag), mag)


def _erf(v: Lanes, x, f: int, fo: int):
    neg = v.lt(x, v.c(0))
    ax = v.select(neg, v.neg(x), x)
    ef = unary_op.ERF_FRAC
    a = v.shr_round(ax, f - ef) if f >= ef else v.shl(ax, ef - f)
    a = v.smin(a, v.c(unary_op.ERF_CLAMP))  # a ≤ 6·2^26 < 2^29 (a ≥ 0)
    # d = 2^30 + shr_round(a·P, 26) (P < 2^29) as one rounding shift: < 2^30 + 6·0.33·2^30 < 2^32
    d = v.map(v.b.ashr, v.add(v.mul32(a, v.c(unary_op.ERF_P_Q30)), v.c((1 << (ef - 1)) + (fp.ONE_Q30 << ef))), v.c(ef))
    t = v.round_div(v.c(1 << 60), d)  # t ≤ 2^30
    p = v.c(unary_op.ERF_A_Q30[-1])
    for c in unary_op.ERF_A_Q30[-2::-1]:  # |p| < 1.5·2^30 at every step (kernels/unary.py erf_fx)
        p = v.horner_step(v.mul32(p, t), c)
    p = v.shr_round(v.mul32(p, t), fp.Q30)
    a2 = v.shr_round(v.mul32(a, a), ef)  # ≤ 36·2^26 < 2^32: umul32 by LOG2E_Q30 < 2^31 next
    e = v.exp_q30_of_product(v.umul32(a2, v.c(fp.LOG2E_Q30)), ef)
    m = v.sub(v.c(fp.ONE_Q30), v.shr_round(v.mul32(p, e), fp.Q30))  # e ≤ 2^30
    y = v.shr_round(m, max(fp.Q30 - fo, 0))
    return v.select(neg, v.neg(y), y)


FORMULA = {"sigmoid": _sigmoid, "tanh": _tanh, "erf": _erf}


# vectors in flight per iteration of the main loop, by kind: 8 against 4 made tiny_gpt2 ~2 µs and
# tiny_llama ~1 µs faster; erf's longer chains gain from 12 (GELU's erf [32, 256]: 7.45 → 6.95 µs),
# where sigmoid (tiny_llama's SiLU) lost ~1 µs a call
UNROLL = {"sigmoid": 8, "tanh": 8, "erf": 12}
# Kinds whose result is always an int32 (saturate32 is the identity, counts nothing): sigmoid's
# round_div(num, 2^30 + e) with num ≤ 2^(30 + fo) is in [0, 2^fo], tanh's magnitude likewise
# (its numerator (2^30 − e)·2^fo ≤ 2^(30 + fo)), and fo ≤ 30 (`accepts`). erf keeps the clamp:
# its m = 2^30 − (p·e >> 30) is bounded only through the polynomial's sign.
IN_RANGE = frozenset({"sigmoid", "tanh"})


@host_kernel("unary", accepts, work)
def emit(b: ir.IRBuilder, out: ir.Value, args: list[ir.Value], types: list[TensorType], attrs: dict,
         out_type: TensorType, part: ir.Value, parts: ir.Value) -> None:
    kind, f, fo, n = attrs["kind"], types[0].frac, out_type.frac, out_type.numel
    lo, hi = part_range(b, n, LANES, part, parts)
    slot = counter_slot(b) if counting(b) else None
    start = lo
    for u in (UNROLL[kind], 1):  # blocks of UNROLL[kind] vectors, then single vectors
        step = u * LANES
        blocks = b.udiv(b.sub(hi, start), c32(step))
        with loop(b, blocks, f"v{u}") as j:
            i0 = b.add(start, b.mul(j, c32(step)))
            idx = [b.add(i0, c32(k * LANES)) for k in range(u)]
            v = Lanes(b, u)
            wide = FORMULA[kind](v, [vload(b, args[0], i) for i in idx], f, fo)
            if kind in IN_RANGE:  # saturate32 never clamps: no clamp, nothing to count
                clamped = wide
            else:
                clamped = v.smin(wide, v.c(fp.INT32_MAX))
                clamped = v.select(v.lt(clamped, v.c(fp.INT32_MIN)), v.c(fp.INT32_MIN), clamped)
            for i, c in zip(idx, clamped, strict=True):
                b.store(b.trunc(c, VI32), b.gep(out, [i], source_etype=I32), align=4)
            if slot is not None and kind not in IN_RANGE:  # saturate32's count: lanes the clamp changed
                pop = b.module.globals.get("llvm.ctpop.i8") or ir.Function(
                    b.module, ir.FunctionType(ir.IntType(8), [ir.IntType(8)]), "llvm.ctpop.i8")
                for c, w in zip(clamped, wide, strict=True):
                    changed = b.bitcast(b.icmp_signed("!=", c, w), ir.IntType(LANES))
                    b.store(b.add(b.load(slot, typ=I32), b.zext(b.call(pop, [changed]), I32)), slot)
        start = b.add(start, b.mul(blocks, c32(step)))
    with loop(b, hi, "t", start=start) as i:  # the last numel mod 8: the portable scalar code
        st(b, fx_scalar(b, kind, ld(b, args[0], i, DType.FX32), f, fo), out, i, DType.FX32)




def softmax_accepts(types: list[TensorType], attrs: dict, out_type: TensorType) -> bool:
    n = out_type.shape[-1] if out_type.shape else 0
    return (types[0].dtype is DType.FX32 and n >= LANES and n % LANES == 0 and 0 <= types[0].frac <= fp.Q30
            and 0 <= out_type.frac <= fp.Q30)


@host_kernel("softmax", softmax_accepts, work)
def emit_softmax(b: ir.IRBuilder, out: ir.Value, args: list[ir.Value], types: list[TensorType], attrs: dict,
                 out_type: TensorType, part: ir.Value, parts: ir.Value) -> None:
    """ops/softmax.py by rows of n = 8·m, eight lanes at a time: the row's max, its exps
    (exp_q30_of_product: d = x − max ∈ (−2^32, 0], so −d · LOG2E_Q30 is one `vpmuludq`), kept
    in registers, their sum (exact: ≤ n·2^30), the row's 2^62 // s by kernels/_host.py's exact
    FPU division (as the portable kernel), then saturate32(shr_round(e · r, 62 − fo)) with
    e ≤ 2^30 and r ≤ 2^32 (a full i64 product: r may be 2^32). Rows go in blocks of up to 8
    vectors, every step emitted for the block's rows in turn (a row alone is latency-bound:
    max, exps, sum, division, products in one chain). Parts: ranges of rows."""
    from opmlc.backend.kernels._host import floor_divmod_host
    from opmlc.backend.kernels.native._vec import hsum, splat

    n = out_type.shape[-1]
    m, f, fo = n // LANES, types[0].frac, out_type.frac
    rows = out_type.numel // n
    r_lo, r_hi = part_range(b, rows, 1, part, parts)
    smax_fn = b.module.globals.get("llvm.vector.reduce.smax.v8i64") or ir.Function(
        b.module, ir.FunctionType(I64, [VI64]), "llvm.vector.reduce.smax.v8i64")

    def block(first: ir.Value, nr: int) -> None:
        """Rows first .. first + nr, each step emitted for all of them (their chains overlap)."""
        v = Lanes(b, nr * m)
        idx = [b.add(b.mul(b.add(first, c32(q)), c32(n)), c32(k * LANES)) for q in range(nr) for k in range(m)]
        x = [vload(b, args[0], i) for i in idx]
        tops = []
        for q in range(nr):
            top = x[q * m]
            for w in x[q * m + 1:(q + 1) * m]:
                top = b.select(b.icmp_signed(">", w, top), w, top)
            tops += [splat(b, b.call(smax_fn, [top]))] * m
        e = v.exp_q30_of_product(v.umul32(v.sub(tops, x), v.c(fp.LOG2E_Q30)), f)
        recips = []
        for q in range(nr):
            total = e[q * m]
            for w in e[q * m + 1:(q + 1) * m]:
                total = b.add(total, w)
            s = hsum(b, total)
            s = b.select(b.icmp_unsigned("==", s, c64(0)), c64(1), s)  # ≥ 2^30; as the portable kernel
            recip, _rem = floor_divmod_host(b, c64(1 << 62), s, in_fast_range=True)
            recips += [splat(b, recip)] * m
        # e ≤ s, so e·r ≤ s·floor(2^62 / s) ≤ 2^62 and the result is in [0, 2^fo]: saturate32
        # never acts, nothing to count
        y = v.shr_round(v.map(b.mul, e, recips), 62 - fo)
        for i, w in zip(idx, y, strict=True):
            b.store(b.trunc(w, VI32), b.gep(out, [i], source_etype=I32), align=4)

    group = max(1, 8 // m)  # rows a block: up to 8 vectors in flight
    start = r_lo
    for nr in (group, 1) if group > 1 else (1,):
        blocks = b.udiv(b.sub(r_hi, start), c32(nr))
        with loop(b, blocks, f"rows{nr}") as t:
            block(b.add(start, b.mul(t, c32(nr))), nr)
        start = b.add(start, b.mul(blocks, c32(nr)))


__all__ = ["KINDS", "Lanes", "accepts", "emit", "emit_softmax", "softmax_accepts", "work"]
