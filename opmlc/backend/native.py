"""The native backend: the model's module compiled for this machine and called through ctypes.

Each value lives in a native-endian numpy buffer (the MIPS build sees the same numbers
big-endian in its regions); the kernels compute on them in place.

The native build counts saturated elements per node (codegen's `count_saturation`): the counts
are the interpreter's (fixedpoint.count_saturation), element for element, and cost a compare
and an add where a kernel saturates. The MIPS program is generated without them.
"""

from __future__ import annotations

import ctypes

import numpy as np

from opmlc.backend.codegen import WHOLE_GRAPH, generate_module
from opmlc.backend.target import NativeProgram, load_native, region_table
from opmlc.ir.graph import Graph
from opmlc.ir.types import DType, native_buffer, unpack_i4

_modules: dict[int, str] = {}


def native_program(graph: Graph, module_ir: str | None = None) -> NativeProgram:
    """The compiled program of `graph` (cached per process and on disk by its IR's hash), with
    saturation counters unless `module_ir` (e.g. the MIPS module's text) is given."""
    return load_native(module_ir if module_ir is not None else generate_module(graph, count_saturation=True))


def value_buffers(graph: Graph, known: dict[int, np.ndarray]) -> list[np.ndarray]:
    """A writable native buffer per value: the known arrays copied in, the rest zero (an i4
    value's buffer holds its packed bytes, as its MIPS region does)."""
    bufs = []
    for v in graph.values:
        arr = known.get(v.id)
        t = v.type
        if arr is None:
            arr = np.zeros(t.shape, dtype=t.dtype.numpy)
        bufs.append(native_buffer(arr, t))
    return bufs


def task_table(graph: Graph, bufs: list[np.ndarray]) -> tuple[ctypes.Array, np.ndarray]:
    """The region table of `bufs` plus the saturation counts array (one i64 per node) that a
    counting program adds to; the caller keeps both alive while the table is used."""
    counts = np.zeros(max(1, len(graph.nodes)), dtype=np.int64)
    return region_table([*bufs, counts]), counts


def run_native(program: NativeProgram, graph: Graph, inputs: list[np.ndarray],
               node: int | None = None, values: list[np.ndarray | None] | None = None,
               saturated: dict[int, int] | None = None) -> list[np.ndarray]:
    """Run the whole graph (node None) or one node; returns every value's buffer.

    For one node, `values` supplies its operands (the other buffers stay zero). `saturated`, if
    given, receives {node index: elements saturated} for the nodes that saturated any; a
    program built without counters (program.counts_saturation false) leaves it empty.
    """
    known = dict(graph.initializers)
    known.update(zip(graph.inputs, inputs, strict=True))
    if values is not None:
        known.update({i: a for i, a in enumerate(values) if a is not None})
    bufs = value_buffers(graph, known)
    if node is not None and not 0 <= node < len(graph.nodes):
        raise ValueError(f"node {node} is not in 0..{len(graph.nodes) - 1}")
    table, counts = task_table(graph, bufs)
    program.task(table, WHOLE_GRAPH if node is None else node)
    if saturated is not None and program.counts_saturation:
        saturated.update({int(k): int(counts[k]) for k in np.flatnonzero(counts)})
    return [unpack_i4(buf, v.type.numel).reshape(v.type.shape) if v.type.dtype is DType.I4 else buf
            for v, buf in zip(graph.values, bufs, strict=True)]
