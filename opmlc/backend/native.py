"""The native backend: the model's module compiled for this machine and called through ctypes.

Each value lives in a native-endian numpy buffer (the MIPS build sees the same numbers
big-endian in its regions); the kernels compute on them in place.
"""

from __future__ import annotations

import numpy as np

from opmlc.backend.codegen import WHOLE_GRAPH, generate_module
from opmlc.backend.target import NativeProgram, load_native, region_table
from opmlc.ir.graph import Graph

_modules: dict[int, str] = {}


def native_program(graph: Graph, module_ir: str | None = None) -> NativeProgram:
    """The compiled program of `graph` (cached per process and on disk by its IR's hash)."""
    return load_native(module_ir if module_ir is not None else generate_module(graph))


def value_buffers(graph: Graph, known: dict[int, np.ndarray]) -> list[np.ndarray]:
    """A writable native buffer per value: the known arrays copied in, the rest zero."""
    bufs = []
    for v in graph.values:
        arr = known.get(v.id)
        t = v.type
        # np.array, not np.ascontiguousarray: the latter turns a 0-d value into shape [1]
        bufs.append(np.array(arr, dtype=t.dtype.numpy, order="C") if arr is not None
                    else np.zeros(t.shape, dtype=t.dtype.numpy))
    return bufs


def run_native(program: NativeProgram, graph: Graph, inputs: list[np.ndarray],
               node: int | None = None, values: list[np.ndarray | None] | None = None) -> list[np.ndarray]:
    """Run the whole graph (node None) or one node; returns every value's buffer.

    For one node, `values` supplies its operands (the other buffers stay zero).
    """
    known = dict(graph.initializers)
    known.update(zip(graph.inputs, inputs, strict=True))
    if values is not None:
        known.update({i: a for i, a in enumerate(values) if a is not None})
    bufs = value_buffers(graph, known)
    if node is not None and not 0 <= node < len(graph.nodes):
        raise ValueError(f"node {node} is not in 0..{len(graph.nodes) - 1}")
    table = region_table(bufs)
    program.task(table, WHOLE_GRAPH if node is None else node)
    return bufs
