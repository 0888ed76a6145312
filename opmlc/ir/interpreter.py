"""The golden interpreter: runs an IR graph with each op's exact numpy semantics.

This is the reference every backend is compared with, bit for bit: the native build, the MIPS
ELF under unicorn and under the VM, and (through the VM) the on-chain stepper.

It also counts, per node, the elements that saturated (fixedpoint.count_saturation): the
native build counts the same elements, and `opmlc run` reports them.
"""

from __future__ import annotations

import numpy as np

from opmlc.ir import fixedpoint as fp
from opmlc.ir.graph import Graph
from opmlc.ir.ops import get_op


def run_node(graph: Graph, index: int, values: list[np.ndarray | None],
             saturated: dict[int, int] | None = None) -> np.ndarray:
    """Evaluate node `index` given the arrays of (at least) its inputs; returns its output.

    `saturated`, if given, gets `index: count` when the node saturated `count` > 0 elements.
    """
    node = graph.nodes[index]
    out_type = graph.values[node.output].type
    with fp.count_saturation() if saturated is not None else fp.uncounted() as sat:
        result = get_op(node.op).evaluate(
            [values[i] for i in node.inputs], graph.input_types(node), node.attrs, out_type
        )
    if saturated is not None and sat.n:
        saturated[index] = sat.n
    result = np.array(result, dtype=out_type.dtype.numpy, order="C")  # 0-d stays 0-d
    assert result.shape == out_type.shape, (node.op, result.shape, out_type.shape)
    return result


def run_graph(graph: Graph, inputs: list[np.ndarray],
              saturated: dict[int, int] | None = None) -> list[np.ndarray]:
    """Every value of the graph (inputs, initializers, node outputs), in value order.

    `saturated`, if given, receives {node index: elements saturated} for every node that
    saturated any (run_node)."""
    if len(inputs) != len(graph.inputs):
        raise ValueError(f"graph takes {len(graph.inputs)} inputs, got {len(inputs)}")
    values: list[np.ndarray | None] = [None] * len(graph.values)
    for v_id, arr in zip(graph.inputs, inputs, strict=True):
        t = graph.values[v_id].type
        arr = np.asarray(arr)
        if arr.shape != t.shape:
            raise ValueError(f"input %{v_id} must have shape {t.shape}, got {arr.shape}")
        values[v_id] = arr.astype(t.dtype.numpy)
    for v_id, arr in graph.initializers.items():
        values[v_id] = arr
    for i, node in enumerate(graph.nodes):
        values[node.output] = run_node(graph, i, values, saturated)
    return values  # type: ignore[return-value]


def run_outputs(graph: Graph, inputs: list[np.ndarray],
                saturated: dict[int, int] | None = None) -> list[np.ndarray]:
    values = run_graph(graph, inputs, saturated)
    return [values[i] for i in graph.outputs]
