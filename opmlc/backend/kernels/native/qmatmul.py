"""Host kernel of opmlc/ir/ops/qmatmul.py (8- and 4-bit weights): per block of the reduction,
exact 8-lane partial sums of x · (q − zp), times the block's scale lane by lane.

Each weight byte is read once per tile of rows of x: for one token (M = 1, an LLM decoding) once
per run, so the matrix-vector product streams the packed weights at memory speed. The tile is
ROWS rows of x × COLS weight rows; per block, `inner` (eight lanes per output) collects
x_k · (q_k − zp) over the block, then `total` += inner · scale (lane by lane: the scale is the
same for every lane of a block, and Σ_lanes inner_lane · s = s · Σ_lanes inner_lane in the ring
of wrap-around int64, the op's own rearrangement; the lanes are added up once at the end).

- i8: eight weights a step, the zero point subtracted in i32; `inner` in <8 x double> (`_Lanes`).
- i4: sixteen weights (eight bytes) a step: the high nibbles are the even elements, the low ones
  the odd, so x's sixteen elements are split into even and odd lanes once per row and step,
  shared by the COLS weight rows; `inner` in <8 x i64>.

Bounds: x is an i32 and q − zp lies in [−255, 255] (i8) or [−15, 15] (i4). In i64 lanes each
product is sext(i32) · sext(i32), exact (`vpmuldq`). In double lanes every operand is an exact
integer, each product is below 2^31 · 2^8 = 2^39, and a lane adds at most MAX_BLOCK / 8 = 2^13
of them: every partial sum is an integer below 2^52, so every FMA is exact (no rounding
happens) and the conversion to i64 at the block's end is exact. inner · scale and every later
sum are wrap-around i64 as in the op (`vpmullq`: the low 64 bits, which is what wrap-around
means).

On a host with AVX-512 VNNI, when q and scale are initializers (a derived buffer: `facts`),
qmatmul_rows.py takes 8-bit weights at M ≥ 8 rows (lanes along the rows of x) and qmatvec4.py
4-bit weights at M ≤ 4 (a decoding step: a block to a lane); qmatmul_vnni.py's byte-plane
kernel takes every other node it accepts (`vnni.accepts`), this one the rest. Taken when the blocks tile K in whole vector steps (block size a multiple of 8, of 16 for i4,
dividing K, at most MAX_BLOCK); otherwise the portable kernel. Parts (threads): ranges of output columns, i.e. of
weight rows, so each thread streams its own weights.
"""

from __future__ import annotations

from math import prod

import numpy as np
from llvmlite import ir

from opmlc.backend.kernels._ir import (
    I8,
    I32,
    c32,
    entry_alloca,
    load,
    loop,
    sext64,
)
from opmlc.backend.kernels._qweight import finish_output, load_q, operands
from opmlc.backend.kernels.native import host_kernel, qmatmul_rows, qmatvec4
from opmlc.backend.kernels.native import qmatmul_vnni as vnni
from opmlc.backend.kernels.native._vec import LANES, VI32, VI64, hsum, part_range, splat
from opmlc.ir.graph import Graph
from opmlc.ir.types import DType, TensorType

# (rows of x, weight rows) per tile: 2·rows·cols accumulators + operands fit in 32 zmm
TILES = {4: (2, 1), 1: (4, 1)}
GRAIN = 4  # part boundaries: a multiple of every tile's width
# Largest block summed in doubles: a lane adds ≤ MAX_BLOCK / 8 products of |x| ≤ 2^31 and
# |q − zp| ≤ 255 < 2^8, so its partial sums stay below 2^(16 − 3 + 39) = 2^52 < 2^53: exact.
MAX_BLOCK = 1 << 16
VI8 = ir.VectorType(I8, LANES)
VF64 = ir.VectorType(ir.DoubleType(), LANES)


def splat32(b: ir.IRBuilder, x: ir.Value) -> ir.Value:
    v = b.insert_element(ir.Constant(VI32, ir.Undefined), x, c32(0))
    return b.shuffle_vector(v, ir.Constant(VI32, ir.Undefined), ir.Constant(VI32, [0] * LANES))


class _Lanes:
    """How a block's partial sums are kept: exact <8 x i64> (`vpmuldq` + `vpaddq`), or exact
    <8 x double> (one FMA per eight products, on both FMA ports: measured 1.3–1.9× faster for
    i8 weights; for i4 blocks of 32 the conversions cost what the FMAs save, so i4 keeps i64)."""

    def __init__(self, b: ir.IRBuilder, double: bool) -> None:
        self.b, self.double = b, double
        self.ty = VF64 if double else VI64
        if double:
            name = "llvm.fma.v8f64"
            self.fma = b.module.globals.get(name) or ir.Function(b.module, ir.FunctionType(VF64, [VF64] * 3), name)

    def of(self, v: ir.Value) -> ir.Value:
        """An exact <8 x i32> as a lane value (every i32 is exact in a double)."""
        return self.b.sitofp(v, VF64) if self.double else self.b.sext(v, VI64)

    def mac(self, acc: ir.Value, x: ir.Value, w: ir.Value) -> ir.Value:
        return self.b.call(self.fma, [x, w, acc]) if self.double else self.b.add(acc, self.b.mul(x, w))

    def exact(self, acc: ir.Value) -> ir.Value:
        """The block's sums as <8 x i64> (a double holding an integer below 2^53 converts exactly)."""
        return self.b.fptosi(acc, VI64) if self.double else acc


V16I32 = ir.VectorType(I32, 2 * LANES)


def _step(dtype: DType) -> int:
    return 2 * LANES if dtype is DType.I4 else LANES


def accepts_lanes(types: list[TensorType], attrs: dict, out_type: TensorType) -> bool:
    """Whether this module's own (double / i64 lane) kernel takes the node."""
    xt, qt = types[0], types[1]
    k, bs = xt.shape[-1], attrs["block_size"]
    return (qt.dtype in (DType.I8, DType.I4) and bs % _step(qt.dtype) == 0 and k % bs == 0 and k > 0
            and bs <= MAX_BLOCK)


def accepts(types: list[TensorType], attrs: dict, out_type: TensorType) -> bool:
    return (qmatmul_rows.accepts(types, attrs, out_type) or vnni.accepts(types, attrs, out_type)
            or accepts_lanes(types, attrs, out_type))


def work(types: list[TensorType], attrs: dict, out_type: TensorType) -> int:
    return prod(out_type.shape) * types[0].shape[-1]


def facts(graph: Graph, index: int) -> dict:
    """The facts of the kernel with a derived buffer that takes the node, if one does: qmatmul_rows
    (8-bit weights, M ≥ 8) or qmatvec4 (4-bit weights, M ≤ 4); {} otherwise."""
    return qmatmul_rows.facts(graph, index) or qmatvec4.facts(graph, index)


def _derived_kernel(facts: dict):
    """The module whose `facts` these are (it derives the buffer and emits the kernel)."""
    return qmatvec4 if facts.get("layout") == "blocks" else qmatmul_rows


def derive(facts: dict, operands: list[np.ndarray | None]) -> np.ndarray:
    return _derived_kernel(facts).derive(facts, operands)


@host_kernel("qmatmul", accepts, work, facts, derive)
def emit(b: ir.IRBuilder, out: ir.Value, args: list[ir.Value], types: list[TensorType], attrs: dict,
         out_type: TensorType, part: ir.Value, parts: ir.Value, facts: dict | None = None) -> None:
    if facts and facts.get("derived"):  # a kernel took the node and has its derived buffer (`facts`)
        _derived_kernel(facts).emit(b, out, args, types, attrs, out_type, part, parts, facts)
        return
    if vnni.accepts(types, attrs, out_type):  # it takes every node qmatmul_rows takes (a constant q or not)
        vnni.emit(b, out, args, types, attrs, out_type, part, parts)
        return
    xt, qt, st = types[:3]
    x, q, scale, zp, bias, bias_t = operands(args, types)
    k = xt.shape[-1]
    m = prod(xt.shape[:-1])
    n = qt.shape[0]
    bs = attrs["block_size"]
    nb = k // bs
    i4 = qt.dtype is DType.I4
    step = _step(qt.dtype)
    prod_frac = xt.frac + st.frac
    shift = prod_frac - out_type.frac
    lo, hi = part_range(b, n, GRAIN, part, parts)
    most = max(r * c for r, (c, _) in TILES.items())
    lanes = _Lanes(b, double=not i4)
    inner = [entry_alloca(b, lanes.ty, name=f"inner{t}") for t in range(most)]
    total = [entry_alloca(b, VI64, name=f"total{t}") for t in range(most)]
    zero = ir.Constant(VI64, None)

    def weights(j: ir.Value, kk: ir.Value, zpv: ir.Value) -> list[ir.Value]:
        """Weight row j's elements kk.. of one step, minus the zero point: [v] (i8) or [even, odd] (i4)."""
        if not i4:
            raw = b.load(b.gep(q, [b.add(b.mul(j, c32(k)), kk)], source_etype=I8), typ=VI8, align=1)
            return [lanes.of(b.sub(b.sext(raw, VI32), zpv))]
        byte = b.lshr(b.add(b.mul(j, c32(k)), kk), c32(1))
        raw = b.load(b.gep(q, [byte], source_etype=I8), typ=VI8, align=1)
        four = ir.Constant(VI8, [4] * LANES)
        even = b.ashr(raw, four)
        odd = b.ashr(b.shl(raw, four), four)
        return [lanes.of(b.sub(b.sext(even, VI32), zpv)), lanes.of(b.sub(b.sext(odd, VI32), zpv))]

    def activations(i: ir.Value, kk: ir.Value) -> list[ir.Value]:
        """Row i of x at kk.. of one step, as lane values: [v] (i8) or [even, odd] (i4)."""
        ptr = b.gep(x, [b.add(b.mul(i, c32(k)), kk)], source_etype=I32)
        if not i4:
            return [lanes.of(b.load(ptr, typ=VI32, align=4))]
        v = b.load(ptr, typ=V16I32, align=4)
        even = b.shuffle_vector(v, v, ir.Constant(VI32, list(range(0, 2 * LANES, 2))))
        odd = b.shuffle_vector(v, v, ir.Constant(VI32, list(range(1, 2 * LANES, 2))))
        return [lanes.of(even), lanes.of(odd)]

    def tile(rows: int, cols: int, i0: ir.Value, j0: ir.Value) -> None:
        for t in range(rows * cols):
            b.store(zero, total[t])
        js = [b.add(j0, c32(c)) for c in range(cols)]
        with loop(b, nb, "blk") as blk:
            for t in range(rows * cols):
                b.store(ir.Constant(lanes.ty, None), inner[t])
            cells = [b.add(b.mul(j, c32(nb)), blk) for j in js]
            zps = [splat32(b, load_q(b, zp, cell, qt.dtype)) if zp is not None else ir.Constant(VI32, None)
                   for cell in cells]
            with loop(b, bs // step, "kq") as s:
                kk = b.add(b.mul(blk, c32(bs)), b.mul(s, c32(step)))
                ws = [weights(js[c], kk, zps[c]) for c in range(cols)]
                for r in range(rows):
                    xs = activations(b.add(i0, c32(r)), kk)
                    for c in range(cols):
                        slot = inner[r * cols + c]
                        acc = b.load(slot, typ=lanes.ty)
                        for xv, wv in zip(xs, ws[c], strict=True):
                            acc = lanes.mac(acc, xv, wv)
                        b.store(acc, slot)
            for c in range(cols):
                sv = splat(b, sext64(b, load(b, scale, cells[c])))
                for r in range(rows):
                    t = r * cols + c
                    exact = lanes.exact(b.load(inner[t], typ=lanes.ty))
                    b.store(b.add(b.load(total[t], typ=VI64), b.mul(exact, sv)), total[t])
        for r in range(rows):
            for c in range(cols):
                acc = hsum(b, b.load(total[r * cols + c], typ=VI64))
                i = b.add(i0, c32(r))
                finish_output(b, acc, bias, bias_t, js[c], prod_frac, shift, out, b.add(b.mul(i, c32(n)), js[c]))

    first_row = 0
    for rows, row_tiles in ((4, m // 4), (1, m % 4)):
        if row_tiles == 0:
            continue
        with loop(b, row_tiles, f"mq{rows}") as t:
            i0 = b.add(c32(first_row), b.mul(t, c32(rows)))
            first_col, left = lo, b.sub(hi, lo)
            for cols in TILES[rows]:
                count = b.udiv(left, c32(cols)) if cols > 1 else left
                with loop(b, count, f"nq{cols}") as u:
                    tile(rows, cols, i0, b.add(first_col, b.mul(u, c32(cols))))
                first_col = b.add(first_col, b.mul(count, c32(cols)))
                left = b.sub(left, b.mul(count, c32(cols)))
        first_row += rows * row_tiles
