"""The step budget: which nodes a build splits into parts, and the VM steps each task may take.

Place in the pipeline: opmlc/backend/program.py plans a graph's parts before codegen (a split
node's MIPS code is its ranged kernel), and the manifest records the budget and each split
node's parts (docs/DESIGN.md "Tasks: the step budget and node parts").

Every VM task runs at most 2^log2_budget steps. A node whose estimated steps exceed it is split
into 2^p parts over its output: part j computes the flat output elements [lo, hi) that fill the
j-th aligned 1/2^p of the output's padded region, so its output region is a subtree of the output
tensor's Merkle tree. The estimate is a conservative cost model per output element (the
constants below, checked against VM runs of every example model by tests/test_step_budget.py);
a node that cannot be split (its op has no ranged kernel, or one output element alone costs more
than the budget: a long reduction) and does not fit is refused at compile with a one-line error.
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

# Ops with a ranged kernel (kernels/_ir.py `part_range`), for outputs of 4-byte elements.
RANGED = frozenset({"matmul", "qmatmul", "unary", "binary", "relu", "reshape", "cast"})

TASK_STEPS = 4096  # _start, the node's dispatch and prologue, a part's bounds
NONLINEAR = 8000  # per element: software 64-bit division, exp/log/erf series (issue 13: ≤ 3,400)
MAC = 16  # per multiply-add of a dot product (issue 13: about 10)
COPY = 64  # per element of a copy or a cheap elementwise op
ROW = 2048  # per element of softmax and norm (measured: ≤ 250), their per-row division included


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
    """A conservative bound on the VM steps per output element of node k."""
    node = graph.nodes[k]
    red = _reduction(graph, k)
    if node.op in ("matmul", "conv"):
        return 4 * COPY + MAC * red
    if node.op in ("qmatmul", "qconv"):  # plus a zero point per weight, a scale per block
        blocks = graph.input_types(node)[2].numel // max(1, graph.input_types(node)[2].shape[0])
        return 4 * COPY + (MAC + 4) * red + COPY * blocks
    if node.op in ("relu", "reshape", "cast", "view", "concat", "gather", "qgather", "where", "quantize"):
        return COPY * (1 + red)
    if node.op == "pool":  # a window per output element
        return COPY * (1 + prod(node.attrs["kernel"]))
    if node.op == "tree_ensemble":  # per sample, each tree walked to its depth; per target a sum
        a = node.attrs
        return COPY * (1 + int(a["n_trees"]) * (1 + int(a["depth"])))
    if node.op in ("unary", "binary"):  # one evaluation per element (64-bit division at worst)
        return NONLINEAR
    if node.op in ("softmax", "norm"):  # per element an exp or a rescale; per row one division
        return ROW + COPY * red
    # softmax, norms, reductions and the rest: a nonlinear
    # evaluation per input element folded into each output element
    return NONLINEAR * (1 + red)


def node_steps(graph: Graph, k: int, numel: int | None = None) -> int:
    """Estimated steps of a task computing `numel` of node k's output elements (all by default)."""
    out = graph.values[graph.nodes[k].output].type
    return TASK_STEPS + element_steps(graph, k) * (out.numel if numel is None else numel)


def _rangeable(graph: Graph, k: int) -> bool:
    node = graph.nodes[k]
    out = graph.values[node.output].type
    if node.op not in RANGED or out.dtype not in (DType.FX32, DType.I32) or out.numel == 0:
        return False
    return not (node.op == "matmul" and len(out.shape) > 2)


@dataclass(frozen=True)
class NodeParts:
    """Node k split into 2^log2 parts: each part's map and flat output element range."""

    node: int
    log2: int
    map: TaskMap  # the part's map: the node's operands and a part-sized output region
    numel: int  # the output's elements
    n_values: int
    output_value: int

    @property
    def count(self) -> int:
        return 1 << self.log2

    @property
    def part_bytes(self) -> int:
        return self.map.region(self.output_value).size

    def element_range(self, j: int) -> tuple[int, int]:
        """Part j's flat output elements [lo, hi) (empty for a part of padding only)."""
        per = self.part_bytes // 4
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
        if node_steps(graph, k, 8) > budget:  # the smallest part: 32 bytes, 8 elements
            raise BuildError(
                f"{where}: one output element takes about {element_steps(graph, k):,} VM steps, and the smallest "
                f"part (8 elements) more than the step budget 2^{log2_budget}; splitting a long reduction into partial sums is not implemented: "
                "compile with a larger --step-budget")
        ov = graph.values[node.output]
        size = region_size(ov.type)
        numel = ov.type.numel
        p = 1
        while node_steps(graph, k, -(-size // (4 << p))) > budget:
            p += 1
        m = part_map(graph, k, size >> p)
        out.append(NodeParts(k, p, m, numel, len(graph.values), ov.id))
    return out


def fitting_log2_budget(graph: Graph, least: int = DEFAULT_LOG2_BUDGET) -> int:
    """The smallest log2 budget ≥ `least` that every node fits, split where it can be: the
    default when the caller names no budget, so that a model with an op that cannot be split yet
    (softmax, norm, a batched matmul… at LLM width) still compiles, under a budget the manifest
    and the model commitment record and the compile announces."""
    for b in range(least, MAX_LOG2_BUDGET + 1):
        try:
            plan(graph, b)
        except BuildError:
            continue
        return b
    plan(graph, MAX_LOG2_BUDGET)  # raises the BuildError naming the node
    return MAX_LOG2_BUDGET


def parts_of(plans: list[NodeParts | None]) -> frozenset[int]:
    return frozenset(k for k, p in enumerate(plans) if p is not None)
