"""Kernel of opmlc/ir/ops/tree_ensemble.py: per row, per tree, a bounded walk over the nodes
table (an initializer region, read like any operand), then the leaf's weight entries into an i64
accumulator row on the stack, then the aggregate, the base values and one `to_fx` per target.

With f32 features, feature and threshold are both mapped to their keys (fixedpoint.f32_key:
select(b < 0, −(b & 0x7FFFFFFF), b) on i64) before the comparison.

Every index read from the table is checked before it addresses memory (row < M, feature < F,
weight entry in 0..W-1, target < T, all unsigned compares), so no table can make the program
read outside its operands; the walk is bounded by `depth` steps.
"""

from __future__ import annotations

from llvmlite import ir

from opmlc.backend.kernels import kernel
from opmlc.backend.kernels._fx import ld, round_div, smax, smin, to_fx
from opmlc.backend.kernels._ir import I1, I8, I32, I64, c32, c64, entry_alloca, load, loop, store
from opmlc.ir.ops.tree_ensemble import ROW
from opmlc.ir.types import DType, TensorType


def _field(b: ir.IRBuilder, nodes: ir.Value, row: ir.Value, col: int) -> ir.Value:
    return load(b, nodes, b.add(b.mul(row, c32(ROW)), c32(col)), I32)


def _compare(b: ir.IRBuilder, mode: ir.Value, x: ir.Value, t: ir.Value) -> ir.Value:
    """ops/tree_ensemble.compare: the predicate of `mode`, false for unknown modes."""
    cond = ir.Constant(I1, 0)
    for code, pred in ((6, "!="), (5, "=="), (4, ">"), (3, ">="), (2, "<"), (1, "<=")):
        cond = b.select(b.icmp_signed("==", mode, c32(code)), b.icmp_signed(pred, x, t), cond)
    return cond


def _key(b: ir.IRBuilder, bits: ir.Value) -> ir.Value:
    """fixedpoint.f32_key of sign-extended float32 bits (i64)."""
    neg = b.sub(c64(0), b.and_(bits, c64(0x7FFFFFFF)))
    return b.select(b.icmp_signed("<", bits, c64(0)), neg, bits)


@kernel("tree_ensemble")
def emit(b: ir.IRBuilder, out: ir.Value, args: list[ir.Value], types: list[TensorType], attrs: dict,
         out_type: TensorType) -> None:
    x, nodes, targets, weights = args[:4]
    n, f = types[0].shape
    m, w = types[1].shape[0], types[2].shape[0]
    t_count, n_trees, depth = int(attrs["n_targets"]), int(attrs["n_trees"]), int(attrs["depth"])
    agg = attrs["aggregate"]
    fw = types[3].frac
    acc = entry_alloca(b, I64, t_count, "acc")
    has = entry_alloca(b, I8, t_count, "has")
    idx_slot = entry_alloca(b, I32, name="idx")
    step_slot = entry_alloca(b, I32, name="step")
    fn = b.function
    with loop(b, n, "row") as r:
        with loop(b, t_count, "clr") as j:
            store(b, c64(0), acc, j)
            store(b, ir.Constant(I8, 0), has, j)
        x_base = b.mul(r, c32(f))
        with loop(b, n_trees, "tree") as tree:
            b.store(tree, idx_slot)
            b.store(c32(0), step_slot)
            head = fn.append_basic_block("walk.head")
            check = fn.append_basic_block("walk.check")
            step = fn.append_basic_block("walk.step")
            done = fn.append_basic_block("walk.done")
            leaf = fn.append_basic_block("walk.leaf")
            after = fn.append_basic_block("walk.after")
            b.branch(head)

            b.position_at_end(head)
            idx = b.load(idx_slot, typ=I32)
            going = b.and_(b.icmp_unsigned("<", b.load(step_slot, typ=I32), c32(depth)),
                           b.icmp_unsigned("<", idx, c32(m)))
            b.cbranch(going, check, done)

            b.position_at_end(check)
            mode = _field(b, nodes, idx, 0)
            b.cbranch(b.icmp_signed("==", mode, c32(0)), done, step)

            b.position_at_end(step)
            feat = _field(b, nodes, idx, 1)
            fok = b.icmp_unsigned("<", feat, c32(f))
            xv = ld(b, x, b.add(x_base, b.select(fok, feat, c32(0))), types[0].dtype)
            xv = b.select(fok, xv, c64(0))
            thr = b.sext(_field(b, nodes, idx, 2), I64)
            if types[0].dtype is DType.F32:
                xv, thr = _key(b, xv), _key(b, thr)
            cond = _compare(b, mode, xv, thr)
            b.store(b.select(cond, _field(b, nodes, idx, 3), _field(b, nodes, idx, 4)), idx_slot)
            b.store(b.add(b.load(step_slot, typ=I32), c32(1)), step_slot)
            b.branch(head)

            b.position_at_end(done)
            idx = b.load(idx_slot, typ=I32)
            inb = b.icmp_unsigned("<", idx, c32(m))
            safe = b.select(inb, idx, c32(0))
            is_leaf = b.and_(inb, b.icmp_signed("==", _field(b, nodes, safe, 0), c32(0)))
            b.cbranch(is_leaf, leaf, after)

            b.position_at_end(leaf)
            lo = smax(b, b.sext(_field(b, nodes, safe, 1), I64), c64(0))
            hi = smin(b, b.sext(_field(b, nodes, safe, 2), I64), c64(w))
            count = b.trunc(b.select(b.icmp_signed(">", hi, lo), b.sub(hi, lo), c64(0)), I32)
            with loop(b, count, "w") as kk:
                k = b.add(b.trunc(lo, I32), kk)
                tgt = load(b, targets, k, I32)
                tok = b.icmp_unsigned("<", tgt, c32(t_count))
                col = b.select(tok, tgt, c32(0))
                v = ld(b, weights, k, DType.FX32)
                cur = load(b, acc, col, I64)
                if agg in ("sum", "average"):
                    new = b.add(cur, v)
                else:
                    seen = b.icmp_unsigned("!=", load(b, has, col, I8), ir.Constant(I8, 0))
                    ext = smin(b, cur, v) if agg == "min" else smax(b, cur, v)
                    new = b.select(seen, ext, v)
                store(b, b.select(tok, new, cur), acc, col)
                hv = load(b, has, col, I8)
                store(b, b.select(tok, ir.Constant(I8, 1), hv), has, col)
            b.branch(after)

            b.position_at_end(after)
        with loop(b, t_count, "fin") as j:
            s = load(b, acc, j, I64)
            if agg == "average":
                s = round_div(b, s, c64(n_trees))
            elif agg in ("min", "max"):
                seen = b.icmp_unsigned("!=", load(b, has, j, I8), ir.Constant(I8, 0))
                s = b.select(seen, s, c64(0))
            if len(args) == 5:
                s = b.add(s, ld(b, args[4], j, DType.FX32))
            store(b, to_fx(b, s, fw, out_type.frac), out, b.add(b.mul(r, c32(t_count)), j))
