"""Host-only kernels: the native build's faster twins of some portable kernels, and the split of
a large node's work over threads.

Place in the pipeline: `codegen.generate_module(graph, host_kernels=True)` (the native build
only: `native.host_module`) gives a node whose op has a host kernel here that `accepts` it that
kernel instead of the portable one of opmlc/backend/kernels/<op>.py. The MIPS module never sees
these: its text, the program image and every root are what they were.

A host kernel computes a part of its node: its function takes two more i32 arguments, `part`
and `parts`, and writes the output elements of that part only (e.g. a range of output
columns); `parts` = 1 is the whole node. The parts of a node partition its output, and each
element is computed by the same exact integer arithmetic whichever part holds it, so any number
of threads gives the bits of one. A node is worth splitting (`split_worth`) when its work
(multiply-adds) is large enough to pay a thread hand-over (tens of µs).

A host kernel must give exactly the bits, and the saturation counts, of the op's `evaluate`:
the portable kernels and these are both tested against the interpreter (tests/kernels). They
may use explicit LLVM vector types: integer sums are exact in wrap-around int64 whatever the
order or width, so only the products' widths need a proof (each kernel states its bound).

Constant operands. A host kernel may declare `facts(graph, index)`: what it learns from the
node's initializers when the module is generated (e.g. the range of a constant weight, a JSON-able
dict; {} for nothing). Its kernel is then specialised on them (they are part of the kernel's
signature, and `emit` gets them as the keyword `facts`). With `facts["derived"]` true the node
also has a derived buffer, `derive(facts, operands)` (a C-contiguous array computed from the
node's initializer operands' buffers, e.g. the weights in another layout; a kernel only reads
it): `derived_buffers` gives them to each region table (a NativeSession's, at load; never per
run), in node order, and the table holds them after the saturation counts, at
regions[n_values + 1 + d] for the d-th such node; the kernel gets its buffer's pointer as one
more entry of `args`, after the operands. Tables over the same read-only weights share one
buffer (`_shared`). A loaded build running its own object maps them from native/derived.bin
instead (backend/native_build.py `derived_views`), computing neither facts nor buffers.
"""

from __future__ import annotations

import json
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
from llvmlite import ir

from opmlc.ir.graph import Graph
from opmlc.ir.types import TensorType

# emit(b, out, args, types, attrs, out_type, part, parts): the body, for the part `part` of `parts`
HostEmit = Callable[[ir.IRBuilder, ir.Value, list[ir.Value], list[TensorType], dict, TensorType, ir.Value, ir.Value],
                    None]
Accepts = Callable[[list[TensorType], dict, TensorType], bool]
Work = Callable[[list[TensorType], dict, TensorType], int]
Facts = Callable[[Graph, int], dict]
Derive = Callable[[dict, list[np.ndarray | None]], np.ndarray]

# Multiply-adds below which a node runs on one thread: the team (backend/team.py) opens a split
# node to a spinning worker in under a microsecond; 64K multiply-adds take a few µs on one core.
# (2^20 while each split paid the thread pool's 20–50 µs hand-over.)
SPLIT_MIN_WORK = 1 << 16


@dataclass(frozen=True)
class HostKernel:
    emit: HostEmit
    accepts: Accepts
    work: Work
    facts: Facts | None = None  # module docstring, "Constant operands"
    derive: Derive | None = None


HOST_KERNELS: dict[str, HostKernel] = {}


def host_kernel(op: str, accepts: Accepts, work: Work, facts: Facts | None = None,
                derive: Derive | None = None) -> Callable[[HostEmit], HostEmit]:
    def register(fn: HostEmit) -> HostEmit:
        HOST_KERNELS[op] = HostKernel(fn, accepts, work, facts, derive)
        return fn

    return register


def host_kernel_for(graph: Graph, index: int) -> HostKernel | None:
    """The host kernel that takes node `index`, if any."""
    node = graph.nodes[index]
    hk = HOST_KERNELS.get(node.op)
    if node.attrs.get("accumulate"):  # a long reduction's i64 chunk (backend/psums.py): the portable kernel
        return None
    if hk is None or not hk.accepts(graph.input_types(node), node.attrs, graph.values[node.output].type):
        return None
    return hk


def node_facts(graph: Graph, index: int) -> dict:
    """What node `index`'s host kernel learns from its initializers ({} if nothing)."""
    hk = host_kernel_for(graph, index)
    return hk.facts(graph, index) if hk is not None and hk.facts is not None else {}


def derived_buffers(graph: Graph, weights: Mapping[int, np.ndarray]) -> list[np.ndarray]:
    """The derived buffers of the graph's nodes (module docstring), in node order, from
    `weights`: the initializers' buffers as the region table holds them, by value id (a derive
    gets its node's operands, None for those that are not initializers). Every region table of
    the host module puts them at regions[n_values + 1 ...] (backend/native.py task_table,
    dispute/native_trace.py). Tables over the same read-only weights share them (`_shared`)."""
    out = []
    for index, node in enumerate(graph.nodes):
        facts = node_facts(graph, index)
        if facts.get("derived"):
            out.append(_shared(node.op, facts, [weights.get(v) for v in node.inputs]))
    return out


# A derived buffer is a function of its kernel, its facts and its operands' contents, and no kernel
# writes it. A loaded build's weights are read-only maps, and one process can hold two region
# tables over them (`Build.native`'s session, generating, and a dispute's NativeTracer): without
# native/derived.bin to map (backend/native_build.py), each derived its own copy, 0.6 GB more for
# the 1.1B decoder's 4-bit weights (qmatvec4.py). So a buffer derived from read-only operands is
# kept here, weakly (freed with the last table that holds it), and handed to the next table over
# the same operand objects. Writable operands (a caller's own arrays, which it may change) are
# derived anew for each table, as before.
_SHARED_DERIVED: dict[tuple, tuple[list[weakref.ref], weakref.ref]] = {}


def _shared(op: str, facts: dict, operands: list[np.ndarray | None]) -> np.ndarray:
    derive = HOST_KERNELS[op].derive
    arrays = [a for a in operands if a is not None]
    if any(a.flags.writeable for a in arrays):
        return derive(facts, operands)
    key = (op, json.dumps(facts, sort_keys=True), tuple(id(a) for a in arrays))
    entry = _SHARED_DERIVED.get(key)
    if entry is not None:
        refs, buf_ref = entry
        buf = buf_ref()
        # ids are reused once an array is freed: the entry holds only while the very same
        # operand objects are alive
        if buf is not None and all(r() is a for r, a in zip(refs, arrays, strict=True)):
            return buf
    for k in [k for k, (refs, b) in _SHARED_DERIVED.items() if b() is None or any(r() is None for r in refs)]:
        del _SHARED_DERIVED[k]
    buf = derive(facts, operands)
    buf.flags.writeable = False
    _SHARED_DERIVED[key] = ([weakref.ref(a) for a in arrays], weakref.ref(buf))
    return buf


def split_worth(graph: Graph, index: int) -> bool:
    """Whether node `index` runs as parts on several threads (the host module exports its parts
    through `task_part`; the native session schedules them)."""
    hk = host_kernel_for(graph, index)
    if hk is None:
        return False
    node = graph.nodes[index]
    return hk.work(graph.input_types(node), node.attrs, graph.values[node.output].type) >= SPLIT_MIN_WORK


from opmlc.backend.kernels.native import conv, copy, matmul, mul, nonlinear, norm, qmatmul  # noqa: E402,F401
