"""Host kernel of opmlc/ir/ops/norm.py for rows of n = 8·m: the rows' scalar chains run eight
rows at a time, one row a lane.

The portable kernel (kernels/norm.py) computes each row's μ, variance, isqrt64 and R in scalars,
one row after another: ~50 ns a row of chain (two FPU divisions with their corrections, the 32
steps of isqrt64) that the processor does not overlap between rows. Here a block of 8 rows
gathers its sums into lanes, runs every step of the chain once for all 8 (exact in each lane,
as argued at each step), and then writes each row's outputs on <8 x i64> lanes.

Per lane (ops/norm.py; T = Σ x, S = Σ sq, both exact in i64):
- μ = round_div(T, n), |T| < 2^31·n < 2^52: T and n are exact doubles; the estimate
  floor(T · fl(1/n)) is within one of floor(T/n) (relative error ≤ 2^-52 of |T/n| < 2^31), and
  the remainder T − q·n (exact in i64) corrects it, one step each way;
- round_div(S, n), 0 ≤ S < 2^63: the same estimate is within |S/n|·2^-51 ≤ 2^10 of floor(S/n)
  (S rounds to a double too); the remainder r = S − q·n is then |r| < 2^11·n, exact in i64 and
  as a double, so a second estimate floor(r · fl(1/n)) is within one of floor(r/n), and one
  correction step each way leaves r in [0, n);
- the shift e and W by `ctlz` (vplzcntq) and shifts, as the portable kernel;
- isqrt64(W) for W ∈ [2^60, 2^62): the double root of fl(W) is within 2^-21 of √W, so its
  truncation s is isqrt(W) − 1, + 0 or + 1; s² and (s + 1)² (s ≤ 2^31: `vpmuludq`, exact)
  correct it, one step each way;
- R = round_div(2^61, s), s ∈ [2^30, 2^31): nonlinear.py's `Lanes.round_div` (its argument);
- the shift 37 + r/2 − e, clamped to 0..62 as shr_round_var clamps it.

Remainder rows (rows mod 8) fill the block's other lanes with copies of its last row, whose
results are not stored. The outputs: as the portable kernel per element, with c·R and z·scale
full i64 products (|c| < 2^32, R ≤ 2^31, |z| ≤ 2^31: below 2^63), and the count of an element
once whichever clamp acted. Parts (threads) are ranges of rows.
"""

from __future__ import annotations

from llvmlite import ir

from opmlc.backend.kernels._ir import I1, I32, c32, counter_slot, counting, entry_alloca, loop
from opmlc.backend.kernels.native import host_kernel
from opmlc.backend.kernels.native._vec import LANES, VI32, VI64, hsum, part_range, splat, vload
from opmlc.backend.kernels.native.nonlinear import VF64, Lanes
from opmlc.ir import fixedpoint as fp
from opmlc.ir.ops.norm import Z_FRAC, Z_LIMIT, shift_bits
from opmlc.ir.types import DType, TensorType


def accepts(types: list[TensorType], attrs: dict, out_type: TensorType) -> bool:
    n = out_type.shape[-1] if out_type.shape else 0
    return all(t.dtype is DType.FX32 for t in types) and n >= LANES and n % LANES == 0


def work(types: list[TensorType], attrs: dict, out_type: TensorType) -> int:
    return out_type.numel * 8


def _c(v: int) -> ir.Constant:
    return ir.Constant(VI64, [v] * LANES)


def _fc(v: float) -> ir.Constant:
    return ir.Constant(VF64, [v] * LANES)


def _fn(b: ir.IRBuilder, name: str, ret: ir.Type, args: list[ir.Type]) -> ir.Function:
    return b.module.globals.get(name) or ir.Function(b.module, ir.FunctionType(ret, args), name)


def _floor_div_const(b: ir.IRBuilder, x: ir.Value, n: int, recip: ir.Value) -> tuple[ir.Value, ir.Value]:
    """(q, r) with q = floor(x / n) + δ and r = x − q·n, for an estimate off by δ (module
    docstring: callers bound it); then one correction step each way."""
    floor = _fn(b, "llvm.floor.v8f64", VF64, [VF64])
    q = b.fptosi(b.call(floor, [b.fmul(b.sitofp(x, VF64), recip)]), VI64)
    r = b.sub(x, b.mul(q, _c(n)))
    under = b.icmp_signed("<", r, _c(0))
    q = b.sub(q, b.zext(under, VI64))
    r = b.add(r, b.select(under, _c(n), _c(0)))
    over = b.icmp_signed(">=", r, _c(n))
    return b.add(q, b.zext(over, VI64)), b.sub(r, b.select(over, _c(n), _c(0)))


def _round_div_const(b: ir.IRBuilder, x: ir.Value, n: int, two_steps: bool) -> ir.Value:
    """fixedpoint.round_div(x, n) in each lane (module docstring: one estimate for |x| < 2^52,
    two for 0 ≤ x < 2^63)."""
    recip = _fc(1.0 / n)
    q, r = _floor_div_const(b, x, n, recip)
    if two_steps:  # r was only within 2^11·n: divide it again
        q2, r = _floor_div_const(b, r, n, recip)
        q = b.add(q, q2)
    return b.add(q, b.zext(b.icmp_signed(">=", r, b.sub(_c(n), r)), VI64))


def _isqrt(b: ir.IRBuilder, v: Lanes, w: ir.Value) -> ir.Value:
    """isqrt64(w) for w ∈ [2^60, 2^62) (module docstring)."""
    sqrt = _fn(b, "llvm.sqrt.v8f64", VF64, [VF64])
    s = b.fptosi(b.call(sqrt, [b.sitofp(w, VF64)]), VI64)
    s = b.sub(s, b.zext(b.icmp_signed(">", v.umul32([s], [s])[0], w), VI64))
    s1 = b.add(s, _c(1))
    return b.add(s, b.zext(b.icmp_signed("<=", v.umul32([s1], [s1])[0], w), VI64))


@host_kernel("norm", accepts, work)
def emit(b: ir.IRBuilder, out: ir.Value, args: list[ir.Value], types: list[TensorType], attrs: dict,
         out_type: TensorType, part: ir.Value, parts: ir.Value) -> None:
    n = out_type.shape[-1]
    m, rows = n // LANES, out_type.numel // n
    r = shift_bits(n)
    fg = types[1].frac
    acc_frac = Z_FRAC + fg
    fo = out_type.frac
    layer = attrs["kind"] == "layer"
    v = Lanes(b, 1)
    slot = counter_slot(b) if counting(b) else None
    lanes = [entry_alloca(b, VI64, name=x) for x in ("tot", "sq", "mu", "rr", "sh")]
    acc = entry_alloca(b, VI64, name="acc")
    lo, hi = part_range(b, rows, 1, part, parts)
    blocks = b.udiv(b.add(b.sub(hi, lo), c32(LANES - 1)), c32(LANES))

    def row_sum(base: ir.Value, term) -> ir.Value:
        b.store(_c(0), acc)
        with loop(b, m, "k") as k:
            j = b.mul(k, c32(LANES))
            b.store(b.add(b.load(acc, typ=VI64), term(vload(b, args[0], b.add(base, j)))), acc)
        return hsum(b, b.load(acc, typ=VI64))

    with loop(b, blocks, "blk") as blk:
        first = b.add(lo, b.mul(blk, c32(LANES)))
        left = b.sub(hi, first)
        count = b.select(b.icmp_unsigned("<", left, c32(LANES)), left, c32(LANES))
        last = b.sub(b.add(first, count), c32(1))

        def lane_rows(body) -> None:
            """body(lane, row) for the 8 lanes, lanes past the block's rows on its last row."""
            with loop(b, LANES, "lane") as q:
                row = b.add(first, q)
                body(q, b.select(b.icmp_unsigned(">", row, last), last, row))

        if layer:
            lane_rows(lambda q, row: b.store(b.insert_element(
                b.load(lanes[0], typ=VI64), row_sum(b.mul(row, c32(n)), lambda x: x), q), lanes[0]))
            mu = _round_div_const(b, b.load(lanes[0], typ=VI64), n, two_steps=False)
        else:
            mu = _c(0)
        b.store(mu, lanes[2])

        def sq_of_row(q: ir.Value, row: ir.Value) -> None:
            mu_q = splat(b, b.extract_element(b.load(lanes[2], typ=VI64), q))

            def sq(x: ir.Value) -> ir.Value:
                c = b.sub(x, mu_q)
                a = b.select(b.icmp_signed("<", c, _c(0)), b.sub(_c(0), c), c)  # < 2^32
                return b.lshr(b.add(v.umul32([a], [a])[0], _c(1 << (r - 1))), _c(r))

            b.store(b.insert_element(b.load(lanes[1], typ=VI64), row_sum(b.mul(row, c32(n)), sq), q), lanes[1])

        lane_rows(sq_of_row)
        var = b.add(_round_div_const(b, b.load(lanes[1], typ=VI64), n, two_steps=True), _c(int(attrs["eps"])))
        var = b.select(b.icmp_signed("<", var, _c(1)), _c(1), var)
        ctlz = _fn(b, "llvm.ctlz.v8i64", VI64, [VI64, I1])
        bl = b.sub(_c(64), b.call(ctlz, [var, ir.Constant(I1, 0)]))
        e = b.ashr(b.sub(_c(62), bl), _c(1))
        up = b.shl(var, b.shl(b.select(b.icmp_signed(">", e, _c(0)), e, _c(0)), _c(1)))
        w = b.select(b.icmp_signed(">=", e, _c(0)), up, b.ashr(var, _c(2)))
        s = _isqrt(b, v, w)
        b.store(v.round_div([_c(1 << 61)], [s])[0], lanes[3])
        sh = b.sub(_c(37 + r // 2), e)
        sh = b.select(b.icmp_signed("<", sh, _c(0)), _c(0), sh)
        b.store(b.select(b.icmp_signed(">", sh, _c(62)), _c(62), sh), lanes[4])

        with loop(b, count, "out") as q:
            base = b.mul(b.add(first, q), c32(n))
            mu_q, rr, shv = (splat(b, b.extract_element(b.load(lanes[i], typ=VI64), q)) for i in (2, 3, 4))
            zero = b.icmp_signed("==", shv, _c(0))
            half = b.select(zero, _c(0), b.shl(_c(1), b.select(zero, _c(0), b.sub(shv, _c(1)))))
            with loop(b, m, "o") as k:
                j = b.mul(k, c32(LANES))
                c = b.sub(vload(b, args[0], b.add(base, j)), mu_q)
                z_wide = b.ashr(b.add(b.mul(c, rr), half), shv)
                z = b.select(b.icmp_signed(">", z_wide, _c(Z_LIMIT)), _c(Z_LIMIT), z_wide)
                z = b.select(b.icmp_signed("<", z, _c(-Z_LIMIT)), _c(-Z_LIMIT), z)
                y = b.mul(z, vload(b, args[1], j))
                if len(args) == 3:
                    k_b = acc_frac - types[2].frac
                    bias = vload(b, args[2], j)
                    y = b.add(y, b.shl(bias, _c(k_b)) if k_b else bias)
                if fo >= acc_frac:  # fixedpoint.to_fx's exact left shift of a clamped value
                    wide = b.select(b.icmp_signed(">", y, _c(1 << 32)), _c(1 << 32), y)
                    wide = b.select(b.icmp_signed("<", wide, _c(-(1 << 32))), _c(-(1 << 32)), wide)
                    wide = b.shl(wide, _c(fo - acc_frac)) if fo > acc_frac else wide
                else:
                    wide = v.shr_round([y], acc_frac - fo)[0]
                o = b.select(b.icmp_signed(">", wide, _c(fp.INT32_MAX)), _c(fp.INT32_MAX), wide)
                o = b.select(b.icmp_signed("<", o, _c(fp.INT32_MIN)), _c(fp.INT32_MIN), o)
                b.store(b.trunc(o, VI32), b.gep(out, [b.add(base, j)], source_etype=I32), align=4)
                if slot is not None:  # ops/norm.py: once per element, whichever clamp acted
                    flags = b.or_(b.icmp_signed("!=", o, wide), b.icmp_signed("!=", z, z_wide))
                    pop = _fn(b, "llvm.ctpop.i8", ir.IntType(8), [ir.IntType(8)])
                    b.store(b.add(b.load(slot, typ=I32), b.zext(b.call(pop, [b.bitcast(flags, ir.IntType(LANES))]), I32)),
                            slot)


__all__ = ["accepts", "emit", "work"]
