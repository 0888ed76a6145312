"""The step budget: which nodes a build splits into parts, and the VM steps each task may take.

Place in the pipeline: opmlc/backend/program.py plans a graph's parts before codegen (a split
node's MIPS code is its ranged kernel), and the manifest records the budget and each split
node's parts (docs/DESIGN.md "Tasks: the step budget and node parts").

Every VM task runs at most 2^log2_budget steps. A node whose estimated steps exceed it is split
into 2^p parts over its output: part j computes the flat output elements [lo, hi) that fill the
j-th aligned 1/2^p of the output's padded region, so its output region is a subtree of the output
tensor's Merkle tree. The estimate is a conservative cost model per output element (the
constants below, checked against VM runs of every example model by tests/test_step_budget.py);
a node that cannot be split (its op has no ranged kernel) and does not fit is refused at compile
with a one-line error. A node one output element of which alone costs more than the budget (a
long reduction: matmul, qmatmul, reduce sum/mean) is first rewritten into exact int64 partial
sums (opmlc/backend/psums.py: chunk nodes and psum nodes), so that the default budget 2^24
holds for every model whose nodes have ranged kernels.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import prod

from opmlc.backend.regions import TaskMap, part_map
from opmlc.commit import region_size
from opmlc.errors import BuildError
from opmlc.ir.graph import Graph
from opmlc.ir.types import DType

DEFAULT_LOG2_BUDGET = 24
MIN_LOG2_BUDGET = 12
MAX_LOG2_BUDGET = 40

# Ops with a ranged kernel (kernels/_ir.py `part_range`): every op but the tree ensembles, for
# outputs of whole-byte elements (not packed i4).
RANGED = frozenset({"matmul", "qmatmul", "unary", "binary", "relu", "reshape", "cast", "softmax", "norm", "where",
                    "view", "concat", "gather", "qgather", "reduce", "pool", "conv", "qconv", "quantize_linear",
                    "psum"})

# The cost model: conservative bounds in VM steps, from the VM's counts of the MIPS kernels
# (docs/DESIGN.md "MIPS cost" and "Tasks: the step budget and node parts"; measured / bound):
TASK_STEPS = 1024  # _start, the node's dispatch and prologue, a part's bounds (measured ≈ 150)
MAC = 10  # per multiply-add of matmul (6.4–7 tiled, ≈ 6.5 in a part's 1×1 tiles)
CONV_MAC = 12  # of conv, whose parts go channel by channel (6–6.3 tiled, 8.6–10.5 in a part)
QMAC = 14  # of qmatmul and qconv, q − zp included (7.3–9.4 tiled; ≈ 10 in a part's 1×1 tiles)
WINDOW_ROW = 8  # per input channel and row of taps of a conv window (a border window's tap loop)
DOT = 256  # per output element of a dot product: bias, rounding, saturation, a part's indices
BLOCK = 64  # per block of a quantized weight row (its scale and zero point)
COPY = 48  # per element of a copy, a select or a cheap elementwise op (6–33 steps)
INDEX = 12  # per output dimension of those: a part's multi-index (an unsigned division by a constant)
NONLINEAR = 400  # per element of sigmoid, tanh, exp, erf, log (132–288)
# One i64 division (sdiv, srem, udiv: runtime/mips.py's shift-subtract loop, one iteration per
# significant bit of the dividend, ≈ 16 steps each): up to 64 iterations, whatever the data.
# A rounded division (round_div) is two; measured worst: 2,146 steps per element of a fx div
# with 62-bit dividends.
I64_DIVISION = 1600
SQRT = 1600  # per element of sqrt: 32 fixed steps of isqrt64 (1,073)
ROW_ELEMENT = 192  # per element of a softmax or norm row, every pass over the row (113–150)
ROW = {"softmax": 1024 + I64_DIVISION,  # per row: one 2^62 / sum (measured ≈ 2,100 in all)
       "norm": 2048 + 6 * I64_DIVISION}  # per row: up to three round_divs and one isqrt64 (≈ 3,200)
CHEAP_UNARY = frozenset({"neg", "abs", "floor", "ceil", "round", "sign", "bitnot", "not"})
DIVIDING_BINARY = frozenset({"div", "mod", "fmod"})
ROW_OPS = frozenset({"softmax", "norm"})


def _reduction(graph: Graph, k: int) -> int:
    """Multiply-adds (or inputs folded) per output element."""
    node = graph.nodes[k]
    ins = graph.input_types(node)
    out = graph.values[node.output].type
    if node.op in ("matmul", "qmatmul"):
        return ins[0].shape[-1]
    if node.op in ("conv", "qconv"):
        w = ins[1]
        return max(1, w.numel // max(1, w.shape[0]))
    return max(1, -(-sum(t.numel for t in ins) // max(1, out.numel)))


def element_steps(graph: Graph, k: int) -> int:
    """A conservative bound on the VM steps per output element of node k (for softmax and norm:
    per element of a row, each row's division apart: `node_steps`)."""
    node = graph.nodes[k]
    if node.op == "matmul":
        return DOT + MAC * _reduction(graph, k)
    if node.op == "qmatmul":  # plus a scale (and zero point) per block
        blocks = graph.input_types(node)[2].numel // max(1, graph.input_types(node)[2].shape[0])
        return DOT + QMAC * _reduction(graph, k) + BLOCK * blocks
    if node.op in ("conv", "qconv"):
        w = graph.input_types(node)[1]  # [M, C/group, k1, …, kr]
        rows = prod(w.shape[1:-1]) if len(w.shape) > 2 else 1
        return DOT + (CONV_MAC if node.op == "conv" else QMAC) * _reduction(graph, k) + WINDOW_ROW * rows
    copy = COPY + INDEX * len(graph.values[node.output].type.shape)
    if node.op in ("relu", "reshape", "cast", "view", "gather", "qgather", "where", "quantize_linear"):
        return copy  # one element read (a gather reads one row of its table, not the table)
    if node.op == "concat":  # a part tests each input's slab
        return copy + 16 * len(node.inputs)
    if node.op == "reduce":  # a mean: one rounded division per output element (none for a chunk)
        mean = node.attrs["kind"] == "mean" and not node.attrs.get("accumulate")
        return copy + COPY * _reduction(graph, k) + 2 * I64_DIVISION * mean
    if node.op == "psum":  # one i64 load and add per partial sum, a mean's rounded division
        return copy + COPY * len(node.inputs) + 2 * I64_DIVISION * (node.attrs.get("divisor", 1) > 1)
    if node.op == "pool":  # a window per output element, an average's rounded division
        return copy + COPY * prod(node.attrs["kernel"]) + 2 * I64_DIVISION * (node.attrs["kind"] != "max")
    if node.op == "tree_ensemble":  # per sample, each tree walked to its depth; per target a sum
        a = node.attrs
        return COPY * (1 + int(a["n_trees"]) * (1 + int(a["depth"])))
    if node.op == "unary":
        kind = node.attrs["kind"]
        return copy if kind in CHEAP_UNARY else SQRT if kind == "sqrt" else NONLINEAR
    if node.op == "binary":  # a division: a quotient and a remainder
        return copy + 2 * I64_DIVISION * (node.attrs["kind"] in DIVIDING_BINARY)
    if node.op in ROW_OPS:
        return ROW_ELEMENT
    # an op without a figure: a nonlinear evaluation per input element folded into each output
    return 2 * I64_DIVISION * (1 + _reduction(graph, k))


def node_steps(graph: Graph, k: int, numel: int | None = None) -> int:
    """Estimated steps of a task computing `numel` consecutive flat output elements of node k
    (all by default). Softmax and norm compute every row the elements touch in full (a part may
    cut its first and last row): at most ⌈numel / n⌉ + 1 rows of n."""
    node = graph.nodes[k]
    out = graph.values[node.output].type
    numel = out.numel if numel is None else numel
    if node.op in ROW_OPS:
        n = max(1, out.shape[-1] if out.shape else 1)
        rows = out.numel // n
        touched = rows if numel >= out.numel else min(rows, -(-numel // n) + 1)
        return TASK_STEPS + touched * (ROW[node.op] + ROW_ELEMENT * n)
    return TASK_STEPS + element_steps(graph, k) * numel


def _rangeable(graph: Graph, k: int) -> bool:
    node = graph.nodes[k]
    out = graph.values[node.output].type
    return node.op in RANGED and out.dtype is not DType.I4 and out.numel > 0


@dataclass(frozen=True)
class NodeParts:
    """Node k split into 2^log2 parts: each part's map and flat output element range."""

    node: int
    log2: int
    map: TaskMap  # the part's map: the node's operands and a part-sized output region
    numel: int  # the output's elements
    n_values: int
    output_value: int
    itemsize: int  # bytes per output element

    @property
    def count(self) -> int:
        return 1 << self.log2

    @property
    def part_bytes(self) -> int:
        return self.map.region(self.output_value).size

    @property
    def part_elements(self) -> int:
        """Output elements a part's slice holds (the last part may hold fewer, or padding only)."""
        return self.part_bytes // self.itemsize

    def element_range(self, j: int) -> tuple[int, int]:
        """Part j's flat output elements [lo, hi) (empty for a part of padding only)."""
        per = self.part_elements
        lo = min(j * per, self.numel)
        return lo, min(lo + per, self.numel) if lo < self.numel else lo

    def table(self, j: int) -> dict[int, int]:
        """Part j's descriptor table: the map, then lo and hi at entries n_values, n_values + 1."""
        lo, hi = self.element_range(j)
        # hi = 0 would mean "the whole output" to the node function; an empty part is [lo, lo)
        return {**self.map.table(), self.n_values: lo, self.n_values + 1: hi}


def plan(graph: Graph, log2_budget: int = DEFAULT_LOG2_BUDGET) -> list[NodeParts | None]:
    """Each node's parts (None: the node is one task). A BuildError names a node that does not
    fit the budget and cannot be split."""
    budget = 1 << log2_budget
    out: list[NodeParts | None] = []
    for k, node in enumerate(graph.nodes):
        steps = node_steps(graph, k)
        if steps <= budget:
            out.append(None)
            continue
        where = f"node {k} ({node.op} {node.name!r})"
        if not _rangeable(graph, k):
            raise BuildError(
                f"{where}: about {steps:,} VM steps, more than the step budget 2^{log2_budget}, and op {node.op!r} "
                "cannot be split into parts yet: compile with a larger --step-budget")
        ov = graph.values[node.output]
        item = ov.type.dtype.itemsize
        least = min(32 // item, ov.type.numel)  # the smallest part: 32 bytes
        if node_steps(graph, k, least) > budget:
            raise BuildError(
                f"{where}: its smallest part ({least} output elements) takes about {node_steps(graph, k, least):,} VM "
                f"steps, more than the step budget 2^{log2_budget}, and it is not split into partial sums "
                "(backend/psums.py split_reductions): compile with a larger --step-budget")
        size = region_size(ov.type)
        numel = ov.type.numel
        p = 1
        while node_steps(graph, k, (size >> p) // item) > budget:
            p += 1
        m = part_map(graph, k, size >> p)
        out.append(NodeParts(k, p, m, numel, len(graph.values), ov.id, item))
    return out


def fitting_log2_budget(graph: Graph, least: int = DEFAULT_LOG2_BUDGET) -> int:
    """The smallest log2 budget ≥ `least` that every node fits, split where it can be (into
    output parts, and a long reduction into partial sums: psums.split_reductions): the default
    when the caller names no budget, so that a model with a node that cannot be split (a tree
    ensemble over the budget) still compiles, under a budget the manifest and the model
    commitment record and the compile announces."""
    from opmlc.backend.psums import split_reductions

    for b in range(least, MAX_LOG2_BUDGET + 1):
        try:
            plan(split_reductions(graph, b), b)
        except BuildError:
            continue
        return b
    plan(graph, MAX_LOG2_BUDGET)  # raises the BuildError naming the node
    return MAX_LOG2_BUDGET


def parts_of(plans: list[NodeParts | None]) -> frozenset[int]:
    return frozenset(k for k, p in enumerate(plans) if p is not None)
