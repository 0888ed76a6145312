"""Host kernel of opmlc/ir/ops/matmul.py: register-tiled, explicitly vectorised int64 sums.

The portable kernel (kernels/matmul.py) keeps each dot product in one scalar i64; LLVM then
vectorises it as a reduction of 64-bit multiplies. Here each tile of outputs keeps its partial
sums in <8 x i64> registers, so every loaded operand serves several outputs:

- `transpose_b` (weights [N, K], rows of both operands contiguous): a tile of ROWS × COLS
  outputs, one <8 x i64> accumulator each, walks K eight elements at a time; the eight lanes
  are added up once at the end, the K mod 8 tail in scalars.
- plain b [K, N]: a tile of ROWS rows × VECS·8 columns; per k, one element of a (broadcast)
  times eight contiguous elements of b's row k. Columns left over (N mod 8) go one by one.

Bound: every product is sext(i32) · sext(i32), |p| ≤ 2^62, exactly an i64 (x86 `vpmuldq`:
it multiplies the low 32 bits of each lane, signed, into 64); the sums are wrap-around i64 as
the op's semantics (addition in a ring: any order, any lane split, the same bits). Bias, the
rounding shift and saturation (counted) are those of the portable kernel, per output element.

Faster paths, tried in this order, each exact by its own bound (in its docstring), for a
product whose b has no batch dimensions (a's leading batch dimensions fold into rows: a
(1, 32, 64) @ (256, 64)ᵀ is a 32-row dense layer):
- a folding into one row and b an initializer with narrow planes (`facts`: the high plane's
  width; `derive`: the planes laid out once per region table) on a host with VNNI:
  matvec16.py (2 or 3 bytes a weight read, not 4), when the run's x has a range it takes;
- b an initializer with s16 planes (`facts`: their number, learnt when the module is
  generated; `derive`: the planes and their bounds laid out once per region table) on a host
  with VNNI: matmul_vnni16.py, whose shared function also holds the exact fallback for an x its
  planes cannot take (such a node has none of the kernels below);
- transpose_b, ≥ 4 rows: matmul_fma.py, when every sum is exact in doubles (a weight with
  planes gives its bits from their header: only x is measured);
- else this kernel.

Parts (threads): a part is a range of output columns (of every row and batch matrix), on tile
boundaries (matmul_vnni16.GRAIN when that path is compiled in): with weights [N, K] each thread
streams its own rows of the weight matrix.
"""

from __future__ import annotations

from math import prod

import numpy as np
from llvmlite import ir

from opmlc.backend.kernels._ir import (
    I32,
    I64,
    broadcast_strides,
    c32,
    c64,
    counter_slot,
    counting,
    entry_alloca,
    linear_index,
    load,
    loop,
    nest,
    saturate32,
    sext64,
    shl,
    shr_round,
    store,
)
from opmlc.backend.kernels.native import (
    host_kernel,
    matmul_act,
    matmul_fma,
    matmul_vnni16,
    matvec16,
)
from opmlc.backend.kernels.native._vec import LANES, VI64, hsum, part_range, splat, vload
from opmlc.ir import fixedpoint as fp
from opmlc.ir.graph import Graph
from opmlc.ir.initializers import held
from opmlc.ir.types import TensorType

ROWS, COLS = 4, 4  # transpose_b tile: 16 accumulators + 8 operand vectors fit in 32 zmm
VECS = 2  # plain-b tile: ROWS × 2 vectors of 8 columns


def _dims(types: list[TensorType], attrs: dict) -> tuple[int, int, int]:
    ta, tb = types[0], types[1]
    trans = bool(attrs.get("transpose_b"))
    return ta.shape[-2], ta.shape[-1], (tb.shape[-2] if trans else tb.shape[-1])


def accepts(types: list[TensorType], attrs: dict, out_type: TensorType) -> bool:
    _m, k, n = _dims(types, attrs)
    return k >= LANES and (bool(attrs.get("transpose_b")) or n >= LANES)  # else the portable kernel


def work(types: list[TensorType], attrs: dict, out_type: TensorType) -> int:
    return prod(out_type.shape) * types[0].shape[-1]


def folded_rows(types: list[TensorType], out_type: TensorType) -> int | None:
    """Rows of x [rows, K] when b has no batch dimensions (all of size 1) and a's leading
    dimensions are the output's (a is not broadcast): rows = their product · M; else None."""
    ta, tb = types[0], types[1]
    batch = out_type.shape[:-2]
    if prod(tb.shape[:-2]) != 1 or prod(ta.shape[:-2]) != prod(batch):
        return None
    return prod(batch) * ta.shape[-2]


def _weight(w: np.ndarray, types: list[TensorType], attrs: dict) -> np.ndarray:
    """A constant b as [N, K]."""
    tb = types[1]
    w = np.asarray(w).reshape(tb.shape[-2:])
    return w if attrs.get("transpose_b") else w.T


def facts(graph: Graph, index: int) -> dict:
    """A constant b's facts (matmul_vnni16.weight_facts, or matvec16.weight_facts when a folds
    into one row; and whether b is stored [N, K]); {} for another b."""
    node = graph.nodes[index]
    types = graph.input_types(node)
    rows = folded_rows(types, graph.values[node.output].type)
    if node.inputs[1] not in graph.initializers or rows is None:
        return {}
    w2 = _weight(held(graph.initializers, node.inputs[1]), types, node.attrs)
    # one row: the matrix-vector planes or nothing (the VNNI kernel takes ≥ MIN_ROWS rows)
    f = matvec16.weight_facts(w2) if rows == 1 else matmul_vnni16.weight_facts(w2)
    return {**f, "trans": bool(node.attrs.get("transpose_b"))} if f else f


def derive(facts: dict, operands: list[np.ndarray | None]) -> np.ndarray:
    """The weight's planes (matmul_vnni16.derive, or matvec16.derive for one row) from the
    region table's b."""
    w = operands[1]
    w2 = w.reshape(w.shape[-2], w.shape[-1])
    return (matvec16 if "matvec" in facts else matmul_vnni16).derive(facts, w2 if facts["trans"] else w2.T)


@host_kernel("matmul", accepts, work, facts, derive)
def emit(b: ir.IRBuilder, out: ir.Value, args: list[ir.Value], types: list[TensorType], attrs: dict,
         out_type: TensorType, part: ir.Value, parts: ir.Value, facts: dict | None = None) -> None:
    if matmul_act.takes(types, attrs, out_type):  # the attention's activation products: matmul_act.py
        return matmul_act.emit(b, out, args, types, attrs, out_type, part, parts)
    ta, tb = types[0], types[1]
    trans = bool(attrs.get("transpose_b"))
    m, k, n = _dims(types, attrs)
    batch = out_type.shape[:-2]
    bsa = broadcast_strides(ta.shape[:-2], batch) if batch else []
    bsb = broadcast_strides(tb.shape[:-2], batch) if batch else []
    bso = [int(s) for s in np.cumprod((1,) + batch[::-1])[-2::-1]] if batch else []
    prod_frac = ta.frac + tb.frac
    shift = prod_frac - out_type.frac
    a_arg, b_arg = args[0], args[1]
    bias_arg = args[2] if len(types) == 3 else None
    facts = facts or {}
    rows = folded_rows(types, out_type)
    matvec = "matvec" in facts and matvec16.available() and rows == 1
    vnni = (bool(facts.get("derived")) and "matvec" not in facts and matmul_vnni16.available() and rows is not None
            and rows >= matmul_vnni16.MIN_ROWS)
    grain = matvec16.GRAIN if matvec else matmul_vnni16.GRAIN if vnni else COLS if trans else VECS * LANES
    lo, hi = part_range(b, n, grain, part, parts)
    width = b.sub(hi, lo)

    def finish(total: ir.Value, o_base: ir.Value, i: ir.Value, j: ir.Value) -> None:
        if bias_arg is not None:
            total = b.add(total, shl(b, sext64(b, load(b, bias_arg, j)), prod_frac - types[2].frac))
        store(b, saturate32(b, shr_round(b, total, shift)), out, b.add(o_base, b.add(b.mul(i, c32(n)), j)))

    def vfinish(total: ir.Value, i: ir.Value, j: ir.Value) -> None:
        """finish of the 16 outputs (i, j..j+15) at once (totals <16 x i64>)."""
        wide = total.type
        lanes = wide.count
        v32 = ir.VectorType(I32, lanes)

        def splat64(v: int) -> ir.Constant:
            return ir.Constant(wide, [v] * lanes)

        if bias_arg is not None:
            bias = b.load(b.gep(bias_arg, [j], source_etype=I32), typ=v32, align=4)
            total = b.add(total, b.shl(b.sext(bias, wide), splat64(prod_frac - types[2].frac)))
        if shift:
            total = b.ashr(b.add(total, splat64(1 << (shift - 1))), splat64(shift))
        clamped = b.select(b.icmp_signed("<", total, splat64(fp.INT32_MIN)), splat64(fp.INT32_MIN), total)
        clamped = b.select(b.icmp_signed(">", clamped, splat64(fp.INT32_MAX)), splat64(fp.INT32_MAX), clamped)
        if counting(b):  # as saturate32: the elements the clamp changed
            flags = b.bitcast(b.icmp_signed("!=", clamped, total), ir.IntType(lanes))
            pop = b.module.globals.get(f"llvm.ctpop.i{lanes}") or ir.Function(
                b.module, ir.FunctionType(ir.IntType(lanes), [ir.IntType(lanes)]), f"llvm.ctpop.i{lanes}")
            slot = counter_slot(b)
            b.store(b.add(b.load(slot, typ=I32), b.zext(b.call(pop, [flags]), I32)), slot)
        b.store(b.trunc(clamped, v32), b.gep(out, [b.add(b.mul(i, c32(n)), j)], source_etype=I32), align=4)

    if vnni:  # a constant weight's s16 planes; their kernel has its own exact fallback (i64 lanes)
        matmul_vnni16.emit(b, a_arg, args[len(types)], out, bias_arg, rows, k, n, facts, lo, hi, shift,
                           prod_frac - types[2].frac if bias_arg is not None else 0)
        return
    done = None
    if matvec:  # one row, the weight's narrow planes, when x's range allows (else on to the i64 kernel)
        done = matvec16.emit(b, a_arg, args[len(types)], k, n, facts, lo, hi, finish, vfinish)
        if matvec16.ONLY:
            b.branch(done)
            b.position_at_end(done)
            return
    if rows is not None and matmul_fma.usable(rows, k, trans):  # operands of bounded range: exact double lanes
        fast, slow = b.append_basic_block("mm.fma"), b.append_basic_block("mm.i64")
        done = done or b.append_basic_block("mm.done")
        wbits = facts.get("wbits")
        if facts.get("derived"):  # the planes' header holds the weight's bits (matmul_vnni16.derive)
            wbits = b.load(b.gep(args[len(types)], [c32(2)], source_etype=I32), typ=I32)
        b.cbranch(matmul_fma.in_range(b, a_arg, b_arg, rows, k, lo, hi, wbits), fast, slow)
        b.position_at_end(fast)
        matmul_fma.emit(b, a_arg, b_arg, rows, k, lo, hi, finish)
        b.branch(done)
        b.position_at_end(slow)

    accs = [entry_alloca(b, VI64, name=f"vacc{t}") for t in range(ROWS * max(COLS, VECS))]
    scal = [entry_alloca(b, I64, name=f"sacc{t}") for t in range(ROWS)]

    def dot_tile(rows: int, cols: int, a_base, b_base, o_base, i0, j0) -> None:
        """transpose_b: outputs [i0, i0+rows) × [j0, j0+cols), dot products along K."""
        for t in range(rows * cols):
            b.store(ir.Constant(VI64, None), accs[t])
        a_rows = [b.add(a_base, b.mul(b.add(i0, c32(r)), c32(k))) for r in range(rows)]
        b_rows = [b.add(b_base, b.mul(b.add(j0, c32(c)), c32(k))) for c in range(cols)]
        with loop(b, k // LANES, "kv") as kv:
            k0 = b.mul(kv, c32(LANES))
            av = [vload(b, a_arg, b.add(a_rows[r], k0)) for r in range(rows)]
            bv = [vload(b, b_arg, b.add(b_rows[c], k0)) for c in range(cols)]
            for r in range(rows):
                for c in range(cols):
                    slot = accs[r * cols + c]
                    b.store(b.add(b.load(slot, typ=VI64), b.mul(av[r], bv[c])), slot)
        for r in range(rows):
            for c in range(cols):
                total = hsum(b, b.load(accs[r * cols + c], typ=VI64))
                for kk in range(k - k % LANES, k):  # the tail, unrolled (< 8 elements)
                    x = sext64(b, load(b, a_arg, b.add(a_rows[r], c32(kk))))
                    y = sext64(b, load(b, b_arg, b.add(b_rows[c], c32(kk))))
                    total = b.add(total, b.mul(x, y))
                finish(total, o_base, b.add(i0, c32(r)), b.add(j0, c32(c)))

    def bcast_tile(rows: int, vecs: int, a_base, b_base, o_base, i0, j0) -> None:
        """plain b: outputs [i0, i0+rows) × [j0, j0+8·vecs), one k at a time."""
        for t in range(rows * vecs):
            b.store(ir.Constant(VI64, None), accs[t])
        a_rows = [b.add(a_base, b.mul(b.add(i0, c32(r)), c32(k))) for r in range(rows)]
        with loop(b, k, "kb") as kk:
            b_row = b.add(b_base, b.add(b.mul(kk, c32(n)), j0))
            bv = [vload(b, b_arg, b.add(b_row, c32(LANES * v))) for v in range(vecs)]
            for r in range(rows):
                x = splat(b, sext64(b, load(b, a_arg, b.add(a_rows[r], kk))))
                for v in range(vecs):
                    slot = accs[r * vecs + v]
                    b.store(b.add(b.load(slot, typ=VI64), b.mul(x, bv[v])), slot)
        for r in range(rows):
            for v in range(vecs):
                acc = b.load(accs[r * vecs + v], typ=VI64)
                for lane in range(LANES):
                    finish(b.extract_element(acc, c32(lane)), o_base, b.add(i0, c32(r)),
                           b.add(j0, c32(LANES * v + lane)))

    def column(rows: int, a_base, b_base, o_base, i0, j) -> None:
        """plain b, one leftover column j: scalar dot products."""
        for r in range(rows):
            b.store(c64(0), scal[r])
        with loop(b, k, "kc") as kk:
            y = sext64(b, load(b, b_arg, b.add(b_base, b.add(b.mul(kk, c32(n)), j))))
            for r in range(rows):
                x = sext64(b, load(b, a_arg, b.add(a_base, b.add(b.mul(b.add(i0, c32(r)), c32(k)), kk))))
                b.store(b.add(b.load(scal[r], typ=I64), b.mul(x, y)), scal[r])
        for r in range(rows):
            finish(b.load(scal[r], typ=I64), o_base, b.add(i0, c32(r)), j)

    # column tiles of the part: (columns per tile, tile function); the last runs one column at a time
    if trans:
        kinds = [(COLS, lambda rows, *a: dot_tile(rows, COLS, *a)), (1, lambda rows, *a: dot_tile(rows, 1, *a))]
    else:
        kinds = [(VECS * LANES, lambda rows, *a: bcast_tile(rows, VECS, *a)),
                 (LANES, lambda rows, *a: bcast_tile(rows, 1, *a)), (1, column)]
    with nest(b, batch, "batch") as bidx:
        a_base = b.mul(linear_index(b, bidx, bsa), c32(m * k)) if batch else c32(0)
        b_base = b.mul(linear_index(b, bidx, bsb), c32(k * n)) if batch else c32(0)
        o_base = b.mul(linear_index(b, bidx, bso), c32(m * n)) if batch else c32(0)
        first_row = 0
        for rows, row_tiles in ((ROWS, m // ROWS), (1, m % ROWS)):
            if row_tiles == 0:
                continue
            with loop(b, row_tiles, f"mt{rows}") as t:
                i0 = b.add(c32(first_row), b.mul(t, c32(rows)))
                first_col, left = lo, width
                for cols, tile in kinds:
                    count = b.udiv(left, c32(cols)) if cols > 1 else left
                    with loop(b, count, f"nt{cols}") as u:
                        tile(rows, a_base, b_base, o_base, i0, b.add(first_col, b.mul(u, c32(cols))))
                    first_col = b.add(first_col, b.mul(count, c32(cols)))
                    left = b.sub(left, b.mul(count, c32(cols)))
            first_row += rows * row_tiles
    if done is not None:
        b.branch(done)
        b.position_at_end(done)
