"""Host kernel of the attention's activation × activation products (opmlc/ir/ops/matmul.py with
batch dimensions, a plain b [.., K, N], no bias): Q·Kᵀ and P·V of every head, as the decoders
compute them ([1, H, T, d] × [1, H, d, T], [1, H, T, T] × [1, H, T, d]).

kernels/native/matmul.py dispatches these nodes here (`takes`). Its plain-b tiles finish every
output in scalars (a lane extracted, rounded, saturated and stored one by one), which for the
attention's short reductions (K = 16–64) costs about as much as the products. Here a tile of
R rows × V vectors of 8 columns (R·V = 16 accumulators: 32 zmm registers hold them, the V
vectors of b's row k and a broadcast of a) walks K one step at a time, then finishes 8
outputs at once: the rounding shift, saturate32 and its count (the lanes the clamp changed);
two finished vectors' low halves go out as one 16-lane store (a `vpmovsqd` store is 4 µops).
a's element is broadcast as an i32 to all 16 halves (`vpbroadcastd` from memory: a load, no
shuffle) and read as sext(a) from each lane's low half, which is what `vpmuldq` reads.

Bound: every product is sext(i32) · sext(i32), |p| ≤ 2^62, exactly an i64 (x86 `vpmuldq`);
the sums wrap around in i64 as the interpreter's uint64 matmul does (a ring: any order gives
the same bits). Rows left over (M mod R) take a 1-row tile, vectors left over (N/8 mod V) a
1-vector tile. Parts (threads) are ranges of the batch's matrices.
"""

from __future__ import annotations

from math import prod

from llvmlite import ir

from opmlc.backend.kernels._ir import (
    I32,
    c32,
    counter_slot,
    counting,
    entry_alloca,
    load,
    loop,
)
from opmlc.backend.kernels.native import matmul_act16
from opmlc.backend.kernels.native._vec import LANES, V16, VI32, VI64, part_range, tile_grid, vload
from opmlc.ir import fixedpoint as fp
from opmlc.ir.types import DType, TensorType

ACCS = 16  # accumulators a tile keeps in registers


def takes(types: list[TensorType], attrs: dict, out_type: TensorType) -> bool:
    """Whether a matmul node is one of these: fx32 operands of the same batch shape (≥ 1 batch
    dimension, no broadcast), b not transposed, N a multiple of 8, no bias."""
    if len(types) != 2 or attrs.get("transpose_b") or attrs.get("accumulate"):
        return False
    ta, tb = types
    if not all(t.dtype is DType.FX32 for t in (ta, tb, out_type)):
        return False
    batch = out_type.shape[:-2]
    n = out_type.shape[-1] if out_type.shape else 0
    return (len(batch) >= 1 and ta.shape[:-2] == batch and tb.shape[:-2] == batch and n >= LANES
            and n % LANES == 0 and ta.shape[-1] >= 1 and 0 <= ta.frac + tb.frac - out_type.frac <= 62)


def _c(v: int) -> ir.Constant:
    return ir.Constant(VI64, [v] * LANES)


# the low (little-endian first) i32 of each i64 lane of two vectors: 8 results, then 8 more
LOW_HALVES = ir.Constant(V16, [2 * i for i in range(2 * LANES)])


def _low_halves(b: ir.IRBuilder, a32: ir.Value) -> ir.Value:
    """The i32 a in every i64 lane, sign-extended from the lane's low half: a broadcast of the
    i32 itself (one load, no shuffle) that `vpmuldq` reads as sext(a)."""
    one = b.insert_element(ir.Constant(V16, ir.Undefined), a32, c32(0))
    x = b.bitcast(b.shuffle_vector(one, ir.Constant(V16, ir.Undefined), ir.Constant(V16, [0] * 2 * LANES)), VI64)
    return b.ashr(b.shl(x, _c(32)), _c(32))


def emit(b: ir.IRBuilder, out: ir.Value, args: list[ir.Value], types: list[TensorType], attrs: dict,
         out_type: TensorType, part: ir.Value, parts: ir.Value) -> None:
    ta, tb = types
    m, k = ta.shape[-2], ta.shape[-1]
    n = tb.shape[-1]
    shift = ta.frac + tb.frac - out_type.frac
    a_arg, b_arg = args
    vecs_n = n // LANES
    vmax = min(4, vecs_n)
    rmax = max(1, min(ACCS // vmax, m))
    accs = [entry_alloca(b, VI64, name=f"acc{t}") for t in range(rmax * vmax)]
    slot = counter_slot(b) if counting(b) else None
    pop = None
    if slot is not None:
        pop = b.module.globals.get("llvm.ctpop.i8") or ir.Function(
            b.module, ir.FunctionType(ir.IntType(8), [ir.IntType(8)]), "llvm.ctpop.i8")

    def tile(rows: int, vecs: int, a_base: ir.Value, b_base: ir.Value, o_base: ir.Value, i0: ir.Value,
             j0: ir.Value) -> None:
        for t in range(rows * vecs):
            b.store(_c(0), accs[t])
        a_rows = [b.add(a_base, b.mul(b.add(i0, c32(r)), c32(k))) for r in range(rows)]
        with loop(b, k, "k") as kk:
            b_row = b.add(b_base, b.add(b.mul(kk, c32(n)), j0))
            bv = [vload(b, b_arg, b.add(b_row, c32(LANES * v))) for v in range(vecs)]
            for r in range(rows):
                x = _low_halves(b, load(b, a_arg, b.add(a_rows[r], kk)))
                for v in range(vecs):
                    acc = accs[r * vecs + v]
                    b.store(b.add(b.load(acc, typ=VI64), b.mul(x, bv[v])), acc)
        for r in range(rows):
            row_out = b.add(o_base, b.add(b.mul(b.add(i0, c32(r)), c32(n)), j0))
            finished = []
            for v in range(vecs):
                total = b.load(accs[r * vecs + v], typ=VI64)
                wide = b.ashr(b.add(total, _c(1 << (shift - 1))), _c(shift)) if shift else total
                o = b.select(b.icmp_signed(">", wide, _c(fp.INT32_MAX)), _c(fp.INT32_MAX), wide)
                o = b.select(b.icmp_signed("<", o, _c(fp.INT32_MIN)), _c(fp.INT32_MIN), o)
                finished.append(o)
                if slot is not None:  # saturate32's count: the lanes the clamp changed
                    changed = b.bitcast(b.icmp_signed("!=", o, wide), ir.IntType(LANES))
                    b.store(b.add(b.load(slot, typ=I32), b.zext(b.call(pop, [changed]), I32)), slot)
            for v in range(0, vecs - 1, 2):  # two clamped vectors' low halves, one 16-lane store
                pair = b.shuffle_vector(b.bitcast(finished[v], V16), b.bitcast(finished[v + 1], V16), LOW_HALVES)
                b.store(pair, b.gep(out, [b.add(row_out, c32(LANES * v))], source_etype=I32), align=4)
            if vecs % 2:
                b.store(b.trunc(finished[-1], VI32),
                        b.gep(out, [b.add(row_out, c32(LANES * (vecs - 1)))], source_etype=I32), align=4)

    def i64_tiles(lo: ir.Value, hi: ir.Value) -> None:
        """Batch matrices [lo, hi) in the i64 tiles above (every int32 operand)."""
        with loop(b, b.sub(hi, lo), "batch") as t:
            bi = b.add(lo, t)
            a_base, b_base, o_base = (b.mul(bi, c32(size)) for size in (m * k, k * n, m * n))
            tile_grid(b, m, vecs_n, rmax, vmax, lambda rows, vecs, i0, jv0: tile(
                rows, vecs, a_base, b_base, o_base, i0, b.mul(jv0, c32(LANES))))

    lo, hi = part_range(b, prod(out_type.shape[:-2]), 1, part, parts)
    if matmul_act16.available() and matmul_act16.takes(m, k, n):  # s16 planes when exact, else these tiles
        matmul_act16.emit_part(b, out, a_arg, b_arg, m, k, n, shift, lo, hi, lambda: i64_tiles(lo, hi))
    else:
        i64_tiles(lo, hi)


__all__ = ["ACCS", "emit", "takes"]
