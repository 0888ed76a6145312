"""Host kernel of opmlc/ir/ops/matmul.py for operands of bounded range: dot products summed
exactly in double lanes (one FMA per eight multiply-adds, against `vpmuldq` + `vpaddq` for the
i64 lanes of matmul.py), chosen at run time by a range check, matmul.py's kernel otherwise.

Taken by matmul.py's kernel for `transpose_b` products whose weights have no batch dimensions
(a's leading batch dimensions folded into rows), of at least MIN_ROWS rows and LANES reduction
elements (a dense layer on a batch: weights [N, K]); a part first measures its operands: every
row of x, and its own weight rows unless the weight is an initializer, whose bits the module
was generated with (matmul.py's facts).

Range check and bound. For an int32 v, v ^ (v >> 31) is v when v ≥ 0 and −v − 1 otherwise, so
|v| ≤ 2^e for e the bit length of the OR of these over a tensor (e ≤ 31). With e_a, e_b for x
and the part's weights, every product has |x·w| ≤ 2^(e_a + e_b), and a lane sums
L = K div 8 of them (K mod 8 are added in i64): each partial sum is an integer with |s| ≤
L · 2^(e_a + e_b). When e_a + e_b + ceil(log2 L) ≤ 53 every one of these integers is a double
(|s| ≤ 2^53), so every FMA's exact result is representable and no rounding happens: the lanes
hold the exact sums, which convert to i64 exactly. The lanes are then added in wrap-around
i64 as the op's semantics. Otherwise the part runs matmul.py's i64 kernel, exact for every
int32 (the check costs reading the operands once, against M reads of the weights).

Activations are converted to doubles once per row group into a stack scratch; weights on the
fly, one conversion serving ROWS rows of x.
"""

from __future__ import annotations

from llvmlite import ir

from opmlc.backend.kernels._ir import I32, I64, c32, entry_alloca, load, loop, sext64
from opmlc.backend.kernels.native._vec import LANES, VI32, VI64, hsum

MIN_ROWS = 4  # below this the range check is too large a share of the work
ROWS, COLS = 8, 3  # 24 accumulators + 3 weight vectors in 32 zmm
SCRATCH = 128 << 10  # bytes of stack for a row group's doubles
DOUBLE = ir.DoubleType()
VF64 = ir.VectorType(DOUBLE, LANES)


def usable(rows: int, k: int, trans: bool) -> bool:
    """For x [rows, k] against weights [N, k] (leading batch dimensions folded into rows)."""
    return trans and rows >= MIN_ROWS and k >= LANES


def _fn(b: ir.IRBuilder, name: str, ret: ir.Type, args: list[ir.Type]) -> ir.Function:
    return b.module.globals.get(name) or ir.Function(b.module, ir.FunctionType(ret, args), name)


def magnitude_bits(b: ir.IRBuilder, base: ir.Value, first: ir.Value, count: ir.Value) -> ir.Value:
    """e (i32) with |v| ≤ 2^e for the i32 elements base[first .. first + count) (module docstring)."""
    acc = entry_alloca(b, VI32, name="orv")
    b.store(ir.Constant(VI32, None), acc)
    vecs = b.udiv(count, c32(LANES))
    with loop(b, vecs, "rv") as i:
        v = b.load(b.gep(base, [b.add(first, b.mul(i, c32(LANES)))], source_etype=I32), typ=VI32, align=4)
        v = b.xor(v, b.ashr(v, ir.Constant(VI32, [31] * LANES)))
        b.store(b.or_(b.load(acc, typ=VI32), v), acc)
    red = _fn(b, "llvm.vector.reduce.or.v8i32", I32, [VI32])
    tail = entry_alloca(b, I32, name="ors")
    b.store(b.call(red, [b.load(acc, typ=VI32)]), tail)
    with loop(b, b.sub(count, b.mul(vecs, c32(LANES))), "rs") as i:
        v = load(b, base, b.add(first, b.add(b.mul(vecs, c32(LANES)), i)))
        b.store(b.or_(b.load(tail, typ=I32), b.xor(v, b.ashr(v, c32(31)))), tail)
    ctlz = _fn(b, "llvm.ctlz.i32", I32, [I32, ir.IntType(1)])
    return b.sub(c32(32), b.call(ctlz, [b.load(tail, typ=I32), ir.Constant(ir.IntType(1), 0)]))


def in_range(b: ir.IRBuilder, a_arg: ir.Value, b_arg: ir.Value, m: int, k: int, lo: ir.Value, hi: ir.Value,
             wbits: int | ir.Value | None = None) -> ir.Value:
    """i1: whether the double kernel is exact for x and weight rows [lo, hi) (module docstring);
    `wbits`: e_b of a constant weight (an int, or an i32 read from its derived buffer), known
    before the run (no pass over the weight)."""
    ea = magnitude_bits(b, a_arg, c32(0), c32(m * k))
    eb = (wbits if isinstance(wbits, ir.Value) else c32(wbits) if wbits is not None
          else magnitude_bits(b, b_arg, b.mul(lo, c32(k)), b.mul(b.sub(hi, lo), c32(k))))
    lanes_bits = max(0, (k // LANES - 1).bit_length())  # ceil(log2 L)
    return b.icmp_unsigned("<=", b.add(b.add(ea, eb), c32(lanes_bits)), c32(53))


def emit(b: ir.IRBuilder, a_arg: ir.Value, b_arg: ir.Value, m: int, k: int, lo: ir.Value, hi: ir.Value,
         finish) -> None:
    """Outputs [0, m) × [lo, hi) of x [m, k] @ w[n, k]ᵀ; `finish(total_i64, 0, i, j)` stores one."""
    group = max(1, min(m, SCRATCH // (8 * k)))
    if group >= ROWS:
        group -= group % ROWS
    scratch = entry_alloca(b, ir.ArrayType(DOUBLE, group * k), name="xd")
    scratch.align = 64
    fma = _fn(b, "llvm.fma.v8f64", VF64, [VF64] * 3)
    accs = [entry_alloca(b, VF64, name=f"dacc{t}") for t in range(ROWS * COLS)]
    steps = k // LANES

    def xd(index: ir.Value) -> ir.Value:
        return b.gep(scratch, [c32(0), index], source_etype=scratch.allocated_type)

    def tile(rows: int, cols: int, r0: ir.Value, g0: ir.Value, j0: ir.Value) -> None:
        for t in range(rows * cols):
            b.store(ir.Constant(VF64, None), accs[t])
        xrows = [b.mul(b.add(b.sub(r0, g0), c32(r)), c32(k)) for r in range(rows)]
        wrows = [b.mul(b.add(j0, c32(c)), c32(k)) for c in range(cols)]
        with loop(b, steps, "fk") as s:
            k0 = b.mul(s, c32(LANES))
            wv = [b.sitofp(b.load(b.gep(b_arg, [b.add(w, k0)], source_etype=I32), typ=VI32, align=4), VF64)
                  for w in wrows]
            for r in range(rows):
                xv = b.load(b.bitcast(xd(b.add(xrows[r], k0)), VF64.as_pointer()), typ=VF64, align=8)
                for c in range(cols):
                    slot = accs[r * cols + c]
                    b.store(b.call(fma, [xv, wv[c], b.load(slot, typ=VF64)]), slot)
        for r in range(rows):
            i = b.add(r0, c32(r))
            for c in range(cols):
                total = hsum(b, b.fptosi(b.load(accs[r * cols + c], typ=VF64), VI64))
                for kk in range(steps * LANES, k):  # the tail (< 8 elements), in i64
                    x = sext64(b, load(b, a_arg, b.add(b.mul(i, c32(k)), c32(kk))))
                    y = sext64(b, load(b, b_arg, b.add(wrows[c], c32(kk))))
                    total = b.add(total, b.mul(x, y))
                finish(total, c32(0), i, b.add(j0, c32(c)))

    with loop(b, -(-m // group), "fg") as gi:
        g0 = b.mul(gi, c32(group))
        rows_here = b.select(b.icmp_unsigned(">", b.add(g0, c32(group)), c32(m)), b.sub(c32(m), g0), c32(group))
        with loop(b, b.mul(rows_here, c32(k)), "fx") as e:  # x → doubles (exact: every i32 is a double)
            v = load(b, a_arg, b.add(b.mul(g0, c32(k)), e))
            b.store(b.sitofp(v, DOUBLE), b.bitcast(xd(e), DOUBLE.as_pointer()))
        first_row, left_rows = g0, rows_here
        for rows in (ROWS, 1):
            count_r = b.udiv(left_rows, c32(rows)) if rows > 1 else left_rows
            with loop(b, count_r, f"fr{rows}") as tr:
                r0 = b.add(first_row, b.mul(tr, c32(rows)))
                first_col, left = lo, b.sub(hi, lo)
                for cols in (COLS, 1):
                    count = b.udiv(left, c32(cols)) if cols > 1 else left
                    with loop(b, count, f"fc{rows}{cols}") as u:
                        tile(rows, cols, r0, g0, b.add(first_col, b.mul(u, c32(cols))))
                    first_col = b.add(first_col, b.mul(count, c32(cols)))
                    left = b.sub(left, b.mul(count, c32(cols)))
            first_row = b.add(first_row, b.mul(count_r, c32(rows)))
            left_rows = b.sub(left_rows, b.mul(count_r, c32(rows)))


__all__ = ["MIN_ROWS", "emit", "in_range", "usable", "I64"]
