"""Exact int64 partial sums: the rewrite of a reduction too long for one VM task.

Place in the pipeline: `opmlc.artifact.compile_model` calls `split_reductions(graph, log2_budget)`
once the build's step budget is known, before the program is planned (backend/parts.py) and
generated; the rewritten graph is the build's graph (graph.json, the manifest's `ir`), so the
interpreter, the native build, the VM, the trace and the game all see plain nodes.

A node whose smallest part (32 bytes of output) still exceeds the budget is one whose single
output element is a long reduction: a matmul or qmatmul over a long K, a conv (group 1) over
many input channels and taps, a reduce sum or mean over many elements. It becomes
- c chunk nodes, each the same op over an aligned range of the reduction (`accumulate`: its
  output is the exact i64 accumulator of that range, the bias term in the first chunk only);
  operands are sliced along the reduction axis: initializers at compile time (a quantized
  weight's q, scale and zero point on block boundaries), other values by `view` nodes;
- `psum` nodes: the wrap-around int64 sum of the chunks (a tree when there are more chunks than
  one psum task may sum), the last one applying the original node's finish (rounding shift and
  saturation, a mean's division), so that its output has the original node's bits: wrap-around
  int64 addition is associative.
The chunk count is the smallest whose chunk element fits the budget by parts' cost model; each
chunk node may then itself be split into output parts as any node.
"""

from __future__ import annotations

from math import prod

import numpy as np

from opmlc.backend import parts as P
from opmlc.errors import BuildError
from opmlc.ir.graph import Graph, GraphBuilder
from opmlc.ir.ops._qweight import split_inputs
from opmlc.ir.types import DType, TensorType

CHUNKED = ("matmul", "qmatmul", "reduce", "conv")
LEAST_I64 = 4  # elements of the smallest part of an i64 output (32 bytes)


def needs_chunks(graph: Graph, k: int, log2_budget: int) -> bool:
    """Whether node k is a reduction this module splits, one output element of which exceeds the
    budget (what parts.plan cannot split; other ops over the budget are left to its error)."""
    node = graph.nodes[k]
    if node.op not in CHUNKED:
        return False
    if node.op == "reduce" and (node.attrs["kind"] not in ("sum", "mean")
                                or graph.input_types(node)[0].dtype not in (DType.FX32, DType.I32, DType.I64)):
        return False  # max, min, prod, arg…: no int64 accumulator to split
    if node.op == "conv" and node.attrs["group"] != 1:
        return False  # a group's channels are not one slice of the input
    out = graph.values[node.output].type
    least = min(max(1, 32 // out.dtype.itemsize), max(1, out.numel))
    return P.node_steps(graph, k, least) > 1 << log2_budget


def _chunk_steps(graph: Graph, k: int, length: int) -> int:
    """Steps of the smallest part of a chunk of node k over `length` reduction elements."""
    node = graph.nodes[k]
    out = graph.values[node.output].type
    if node.op == "matmul":
        per = P.DOT + P.MAC * length
    elif node.op == "qmatmul":
        bs = node.attrs["block_size"]
        per = P.DOT + P.QMAC * length + P.BLOCK * -(-length // min(bs, length))
    elif node.op == "conv":  # length = channels · taps; a row of taps per channel and kernel row
        w = graph.input_types(node)[1]
        taps = prod(w.shape[2:])
        per = P.DOT + P.CONV_MAC * length + P.WINDOW_ROW * (length // taps) * prod(w.shape[2:-1])
    else:  # reduce sum/mean: the i64 sum, no division
        per = P.COPY + P.INDEX * len(out.shape) + P.COPY * length
    return P.TASK_STEPS + min(LEAST_I64, max(1, out.numel)) * per


def _psum_fanin(out: TensorType, log2_budget: int, divisor: int) -> int:
    """The most partial sums one psum task may add within the budget (its smallest part)."""
    least = min(max(1, 32 // out.dtype.itemsize), max(1, out.numel))
    fixed = P.COPY + P.INDEX * len(out.shape) + 2 * P.I64_DIVISION * (divisor > 1)
    return max(2, (((1 << log2_budget) - P.TASK_STEPS) // least - fixed) // P.COPY)


def _reduction_axis(graph: Graph, k: int) -> tuple[int, int, int]:
    """(axis of the operand the chunks cut, its length, reduction elements per index of it)."""
    node = graph.nodes[k]
    x = graph.input_types(node)[0]
    if node.op in ("matmul", "qmatmul"):
        return len(x.shape) - 1, x.shape[-1], 1
    if node.op == "conv":  # the input channels (group 1), each a window of taps
        return 1, x.shape[1], prod(graph.input_types(node)[1].shape[2:])
    axes = list(node.attrs["axes"])
    ax = max(axes, key=lambda a: x.shape[a])  # sum and mean are order-free: cut the longest axis
    n = prod(x.shape[a] for a in axes)
    return ax, x.shape[ax], n // max(1, x.shape[ax])


def _ranges(graph: Graph, k: int, log2_budget: int) -> list[tuple[int, int]]:
    """The chunks' [lo, hi) along the cut axis: the fewest that fit, of equal length (a multiple
    of the block size for a blocked weight; the last one may be shorter)."""
    node = graph.nodes[k]
    where = f"node {k} ({node.op} {node.name!r})"
    _, length, per_index = _reduction_axis(graph, k)
    unit = 1
    if node.op == "qmatmul" and node.attrs["block_size"] < length:
        unit = node.attrs["block_size"]  # chunk boundaries on block boundaries
    budget = 1 << log2_budget
    units = -(-length // unit)

    def fits(size: int) -> bool:
        return _chunk_steps(graph, k, size * unit * per_index) <= budget

    if fits(1):
        lo, hi = 1, units  # the longest chunk (in units) that fits: steps grow with the length
        while lo < hi:
            mid = (lo + hi + 1) // 2
            lo, hi = (mid, hi) if fits(mid) else (lo, mid - 1)
        count = -(-units // lo)
        span = -(-units // count) * unit  # the chunks evened out
        return [(a, min(a + span, length)) for a in range(0, length, span)]
    raise BuildError(f"{where}: even a chunk of {unit * per_index} reduction elements per output exceeds the step "
                     f"budget 2^{log2_budget}: compile with a larger --step-budget")


def split_reductions(graph: Graph, log2_budget: int) -> Graph:
    """`graph` with every node whose single output element exceeds the budget rewritten into
    chunk nodes and psum nodes (module docstring); `graph` itself when there is none."""
    todo = {k: _ranges(graph, k, log2_budget) for k in range(len(graph.nodes)) if needs_chunks(graph, k, log2_budget)}
    if not todo:
        return graph
    gb = GraphBuilder(graph.name)
    ref: dict[int, int] = {}
    for v in graph.inputs:
        ref[v] = gb.add_input(graph.values[v].name, graph.values[v].type)
    for v, data in graph.initializers.items():
        ref[v] = gb.add_initializer(graph.values[v].name, data, graph.values[v].type)
    for k, node in enumerate(graph.nodes):
        out = graph.values[node.output]
        if k in todo:
            ref[node.output] = _rewrite(graph, gb, ref, k, todo[k], log2_budget)
        else:
            ref[node.output] = gb.add_node(node.op, [ref[v] for v in node.inputs], node.attrs, out.name)
    for v in graph.outputs:
        gb.mark_output(ref[v])
    return gb.build()


def _slice(graph: Graph, gb: GraphBuilder, ref: dict[int, int], v: int, axis: int, lo: int, hi: int,
           name: str) -> int:
    """Value v's elements [lo, hi) along `axis`: a sliced initializer, or a `view` node."""
    t = graph.values[v].type
    if lo == 0 and hi == t.shape[axis]:
        return ref[v]
    shape = (*t.shape[:axis], hi - lo, *t.shape[axis + 1:])
    if v in graph.initializers:
        data = np.asarray(graph.initializers[v])
        index = (slice(None),) * axis + (slice(lo, hi),)
        return gb.add_initializer(name, np.ascontiguousarray(data[index]), t.with_shape(shape))
    st = [prod(t.shape[a + 1:]) for a in range(len(t.shape))]
    return gb.add_node("view", [ref[v]], {"shape": list(shape), "offset": lo * st[axis], "strides": st}, name)


def _rewrite(graph: Graph, gb: GraphBuilder, ref: dict[int, int], k: int, ranges: list[tuple[int, int]],
             log2_budget: int) -> int:
    node = graph.nodes[k]
    types = graph.input_types(node)
    out = graph.values[node.output]
    name = node.name or out.name or f"node{k}"
    axis, _, _ = _reduction_axis(graph, k)
    chunks = []
    for c, (lo, hi) in enumerate(ranges):
        tag = f"{name}.chunk{c}"
        attrs = {**node.attrs, "accumulate": True}
        ins = [_slice(graph, gb, ref, node.inputs[0], axis, lo, hi, f"{tag}.x")]
        if node.op == "conv":
            ins.append(_slice(graph, gb, ref, node.inputs[1], 1, lo, hi, f"{tag}.w"))
            if c == 0 and len(node.inputs) == 3:
                ins.append(ref[node.inputs[2]])
        elif node.op == "matmul":
            tb = types[1]
            b_axis = len(tb.shape) - (1 if node.attrs.get("transpose_b") else 2)
            ins.append(_slice(graph, gb, ref, node.inputs[1], b_axis, lo, hi, f"{tag}.w"))
            if c == 0 and len(node.inputs) == 3:
                ins.append(ref[node.inputs[2]])
        elif node.op == "qmatmul":
            bs = node.attrs["block_size"]
            zp_t, bias_t = split_inputs(types, 1)
            ins.append(_slice(graph, gb, ref, node.inputs[1], 1, lo, hi, f"{tag}.q"))
            if bs >= types[0].shape[-1]:  # one block per output channel: each chunk one block, same scale
                attrs["block_size"] = hi - lo
                b_lo, b_hi = 0, 1
            else:
                b_lo, b_hi = lo // bs, -(-hi // bs)
            ins.append(_slice(graph, gb, ref, node.inputs[2], 1, b_lo, b_hi, f"{tag}.scale"))
            if zp_t is not None:
                ins.append(_slice(graph, gb, ref, node.inputs[3], 1, b_lo, b_hi, f"{tag}.zero_point"))
            if c == 0 and bias_t is not None:
                ins.append(ref[node.inputs[-1]])
        chunks.append(gb.add_node(node.op, ins, attrs, tag))
    if node.op in ("matmul", "qmatmul", "conv"):
        fin = {"dtype": "fx32", "from_frac": types[0].frac + types[2 if node.op == "qmatmul" else 1].frac,
               "frac": out.type.frac}
    elif types[0].dtype is DType.FX32:
        n = prod(types[0].shape[a] for a in node.attrs["axes"])
        fin = {"dtype": "fx32", "from_frac": types[0].frac, "frac": out.type.frac,
               **({"divisor": n} if node.attrs["kind"] == "mean" else {})}
    else:
        fin = {"dtype": types[0].dtype.value}
    fanin = _psum_fanin(out.type, log2_budget, fin.get("divisor", 1))
    level = 0
    while len(chunks) > fanin:  # a tree of raw sums first
        groups = [chunks[i:i + fanin] for i in range(0, len(chunks), fanin)]
        chunks = [grp[0] if len(grp) == 1 else gb.add_node("psum", grp, {"dtype": "i64"}, f"{name}.psum{level}.{j}")
                  for j, grp in enumerate(groups)]
        level += 1
    return gb.add_node("psum", chunks, fin, out.name or name)
