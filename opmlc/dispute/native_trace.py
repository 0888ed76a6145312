"""Phase 1 from the native build: a party's graph trace computed by the build's native program,
streaming (docs/DESIGN.md "Phase 1 from the native build; what each party holds").

Where it sits: between the native backend (opmlc/backend/native_build.load_program, the same
object `opmlc run --backend native` uses) and a party's roles (opmlc/dispute/roles.py). The
program runs node by node (`task(regions, k)`) on a region table of its own: the initializers
are the build's buffers (its memory-mapped weights, never copied), every other value gets a
buffer when its node produces it, is hashed at once (vm.merkle's native kernels, on every core),
and is freed after the last node that reads it. A party so holds the weights mapped plus the
values live across one point of the graph, and keeps only the roots. Two copies are not hashed
again: a reshape takes its operand's root (the same bytes), a view repeating whole blocks of its
operand is rooted from the operand's block roots (`repeat_root`).

A generation (opmlc/dispute/generation.py) has no program of its own: its trace runs this one of
the step build once per decoding step (opmlc/dispute/generation_trace.py).

For the node a game lands on, `task_operands` runs the nodes before it again, keeping only what
that node reads: the operands of its one VM task (opmlc/dispute/node_run.py).

The interpreter (graph_trace.compute_values) stays the golden model: `party_roots(...,
engine="interp")` is the same trace computed by it, and the tests hold the two equal, root for
root, on every example model.
"""

from __future__ import annotations

import ctypes
import math

import numpy as np

from opmlc.artifact import Build
from opmlc.backend.kernels.native import derived_buffers
from opmlc.backend.native import plain_layout
from opmlc.commit import padded_buffer, padded_root
from opmlc.dispute.graph_trace import GraphTrace, Tamper, compute_values
from opmlc.ir.graph import Node
from opmlc.ir.initializers import PackedI4, held
from opmlc.ir.types import DType, TensorType, native_buffer, unpack_i4
from vm.merkle import (
    LEAF_BYTES,
    ZERO_HASHES,
    chunk_roots,
    hash_pair,
    hash_pairs,
    height_of,
    padded_size,
)

ENGINES = ("native", "interp")


def last_uses(build: Build) -> list[int]:
    """Per value, the index of the last node that reads it (graph outputs: past the last node;
    a value no node reads: the node that produced it, or -1 for an input)."""
    g = build.graph
    n = len(g.nodes)
    last = [-1] * len(g.values)
    for k, node in enumerate(g.nodes):
        last[node.output] = max(last[node.output], k)
        for v in node.inputs:
            last[v] = k
    for v in g.outputs:
        last[v] = n
    return last


def repeat_root(node: Node, operand: np.ndarray, t_in: TensorType, t_out: TensorType) -> bytes | None:
    """The root of a `view` that repeats whole contiguous blocks of its operand along one stride-0
    axis (the GQA's key/value heads for each query head), from the operand's block roots; None
    for any other view. Output block j of R copies of operand block o is an aligned subtree
    when the block's bytes are a power of two ≥ 32, so only the operand is hashed (1/R of the
    bytes), then log2(R) levels of a subtree paired with itself. Equal to hashing the view's
    bytes: tests/test_native_trace.py holds them equal."""
    a = node.attrs
    shape, strides = [int(d) for d in a["shape"]], [int(x) for x in a["strides"]]
    if a["offset"] != 0 or a.get("lo") or a.get("hi") or t_in.dtype is not t_out.dtype:
        return None
    if not (plain_layout(t_in) and plain_layout(t_out)):
        return None
    rep = [d for d, (n, st) in enumerate(zip(shape, strides, strict=True)) if st == 0 and n > 1]
    if len(rep) != 1:
        return None
    r = rep[0]
    copies = shape[r]
    # the other axes walk the whole operand in row-major order
    expect, step = {}, 1
    for d in reversed(range(len(shape))):
        if d != r:
            expect[d] = step
            step *= shape[d]
    if step != t_in.numel or any(strides[d] != expect[d] for d in expect if shape[d] > 1):
        return None
    item = t_in.nbytes // max(1, t_in.numel)
    block = math.prod(shape[r + 1:]) * item
    if copies & (copies - 1) or block < LEAF_BYTES or block & (block - 1):
        return None
    outer = math.prod(shape[:r])
    blocks = chunk_roots(memoryview(padded_buffer(operand, t_in))[: outer * block], block)
    tops = []
    for o in range(outer):
        root = blocks[32 * o : 32 * o + 32]
        for _ in range(copies.bit_length() - 1):
            root = hash_pair(root, root)
        tops.append(root)
    h = height_of(block * copies)
    level = b"".join(tops) + ZERO_HASHES[h] * (padded_size(t_out.nbytes) // (block * copies) - outer)
    while len(level) > 32:
        level = hash_pairs(level, h)
        h += 1
    return level


class NativeTracer:
    """The build's native program over a region table of live values only."""

    def __init__(self, build: Build) -> None:
        from opmlc.backend.native_build import derived_views, load_program

        self.build = build
        g = build.graph
        self.program = load_program(build)
        self.last = last_uses(build)
        self.roots = {r["value"]: bytes.fromhex(r["root"][2:]) for r in build.manifest["initializers"]}
        # The weights as the kernels read them: the graph's own arrays where they are already
        # native (the mapped weights of a loaded build; an i4 weight's mapped packed bytes, held
        # as they are, never unpacked), another layout converted once.
        self.weights: dict[int, np.ndarray] = {}
        for v in g.initializers:
            t = g.values[v].type
            arr = held(g.initializers, v)
            if isinstance(arr, PackedI4):
                self.weights[v] = arr.packed
                continue
            ok = plain_layout(t) and arr.dtype == t.dtype.numpy and arr.flags.c_contiguous and arr.shape == t.shape
            self.weights[v] = arr if ok else native_buffer(arr, t)
        self.counts = np.zeros(max(1, len(g.nodes)), dtype=np.int64)
        # the host kernels' buffers derived from the weights, after the counts (made once; the
        # build's mapped native/derived.bin when the program is its own object)
        views = derived_views(build, self.program)
        self.derived = views if views is not None else derived_buffers(g, self.weights)
        self.peak_live_bytes = 0  # the largest sum of live value buffers in the last run

    def _table(self) -> ctypes.Array:
        g = self.build.graph
        table = (ctypes.c_void_p * (len(g.values) + 1 + len(self.derived)))()
        for v, buf in self.weights.items():
            table[v] = buf.ctypes.data
        table[len(g.values)] = self.counts.ctypes.data
        for d, buf in enumerate(self.derived):
            table[len(g.values) + 1 + d] = buf.ctypes.data
        return table

    def _array(self, v: int, buf: np.ndarray) -> np.ndarray:
        """The interpreter's array of a value from its native buffer (a view when plain)."""
        t = self.build.graph.values[v].type
        return unpack_i4(buf, t.numel).reshape(t.shape) if t.dtype is DType.I4 else buf

    def run(self, inputs: list[np.ndarray], tamper: Tamper | None = None, upto: int | None = None,
            keep: frozenset[int] = frozenset(), saturated: dict[int, int] | None = None,
            hash_values: bool = True, hash_inputs: bool = True) -> tuple[list[bytes | None], dict[int, np.ndarray]]:
        """Run nodes 0..upto-1 (all by default) in order; returns (the root of every value, None
        for those not computed or not hashed) and {v: array} of the values in `keep` (copies,
        in the interpreter's form, as later nodes read them; an initializer is the build's own
        array).

        `tamper` changes one node's output as graph_trace.compute_values does (propagated to
        later nodes or not: a kept value is the lie only when it propagates). `saturated`
        receives {node: count} as the interpreter's does. `hash_inputs=False` leaves the graph
        inputs' roots None (a caller that knows them: a generation's decoding step)."""
        g = self.build.graph
        n = len(g.nodes) if upto is None else upto
        table = self._table()
        live: dict[int, np.ndarray] = {}
        roots: list[bytes | None] = [None] * len(g.values)
        kept: dict[int, np.ndarray] = {}
        self.counts.fill(0)
        self.peak_live_bytes = live_bytes = 0

        def produced(v: int, buf: np.ndarray, arr: np.ndarray, hashed: bool = True) -> None:
            if hash_values and hashed:
                roots[v] = padded_root(padded_buffer(arr, g.values[v].type))
            if v in keep:  # what later nodes read: the buffer, not a lie that does not propagate
                kept[v] = np.array(self._array(v, buf), copy=True)

        for v, arr in zip(g.inputs, inputs, strict=True):
            t = g.values[v].type
            buf = native_buffer(np.asarray(arr, dtype=t.dtype.numpy).reshape(t.shape), t)
            live[v] = buf
            table[v] = buf.ctypes.data
            live_bytes += buf.nbytes
            produced(v, buf, self._array(v, buf), hash_inputs)
        for v in g.initializers:
            roots[v] = self.roots[v]
            if v in keep:
                kept[v] = g.initializers[v]
        lie_node = -1 if tamper is None else tamper.node
        # the value whose root is a lie its buffer does not hold (a lie that does not propagate)
        unheld = (g.nodes[tamper.node].output if tamper is not None and not tamper.propagate
                  and 0 <= tamper.node < len(g.nodes) else -1)
        for k in range(n):
            node = g.nodes[k]
            v = node.output
            t = g.values[v].type
            buf = np.zeros(t.shape, t.dtype.numpy) if plain_layout(t) else native_buffer(np.zeros(t.shape, t.dtype.numpy), t)
            live[v] = buf
            table[v] = buf.ctypes.data
            live_bytes += buf.nbytes
            self.peak_live_bytes = max(self.peak_live_bytes, live_bytes)
            self.program.task(table, k)
            arr = self._array(v, buf)
            if tamper is not None and k == tamper.node:
                lied = tamper.apply(arr)
                if tamper.propagate:  # later nodes read the lie
                    buf[...] = native_buffer(lied, t).reshape(buf.shape)
                    arr = self._array(v, buf)
                else:
                    arr = lied
            same = node.op == "reshape" and k != lie_node and node.inputs[0] != unheld
            repeated = None
            if hash_values and node.op == "view" and k != lie_node:  # hashed from what it read
                u = node.inputs[0]
                operand = self._array(u, live[u]) if u in live else None
                if operand is not None:
                    repeated = repeat_root(node, operand, g.values[u].type, t)
            if repeated is not None:
                roots[v] = repeated
                produced(v, buf, arr, hashed=False)
            elif same and hash_values and roots[node.inputs[0]] is not None \
                    and g.values[node.inputs[0]].type.dtype is t.dtype:
                # a reshape's bytes are its operand's, row-major, padded alike: the same root
                roots[v] = roots[node.inputs[0]]
                produced(v, buf, arr, hashed=False)
            else:
                produced(v, buf, arr)
            for u in set(node.inputs) | {v}:  # free what no later node reads
                if u in live and self.last[u] <= k:
                    live_bytes -= live.pop(u).nbytes
                    table[u] = None
        if saturated is not None and self.program.counts_saturation:
            saturated.update({int(k): int(self.counts[k]) for k in np.flatnonzero(self.counts[:n])})
        return roots, kept


def tracer(build: Build) -> NativeTracer:
    """One NativeTracer per Build object, kept on it as Build.native keeps its session (the
    program is loaded and the weights bound once)."""
    t = build.__dict__.get("_native_tracer")
    if t is None:
        t = build.__dict__["_native_tracer"] = NativeTracer(build)
    return t


def check_engine(engine: str) -> None:
    if engine not in ENGINES:
        raise ValueError(f"trace engine must be one of {ENGINES}, not {engine!r}")


def _generation_tracer(build):
    """The GenerationTracer of a generation view, None for any other build."""
    if not hasattr(build, "generated_values"):
        return None
    from opmlc.dispute.generation_trace import generation_tracer

    return generation_tracer(build)


def party_roots(build: Build, inputs: list[np.ndarray], tamper: Tamper | None = None,
                engine: str = "native", saturated: dict[int, int] | None = None) -> list[bytes]:
    """Every value root of a party's trace (tampered as asked), by the native program
    (streaming) or by the interpreter (every value held, the golden model)."""
    check_engine(engine)
    if engine == "interp":
        values = compute_values(build, inputs, tamper)
        if saturated is not None:  # the honest run's counts, as the native engine reports
            from opmlc.ir.interpreter import run_graph

            run_graph(build.graph, inputs, saturated)
        return GraphTrace.of_values(build, values).roots
    roots, _ = (_generation_tracer(build) or tracer(build)).run(inputs, tamper, saturated=saturated)
    return roots  # type: ignore[return-value]


def task_operands(build: Build, inputs: list[np.ndarray], k: int,
                  engine: str = "native") -> list[np.ndarray | None]:
    """The honest values node k's VM task reads (None for every other value): the nodes before
    k run again, natively, keeping only k's operands."""
    check_engine(engine)
    g = build.graph
    need = frozenset(g.nodes[k].inputs)
    if engine == "interp":
        from opmlc.tasks import honest_values

        values = honest_values(build, inputs, upto=k)
        return [a if v in need else None for v, a in enumerate(values)]
    _, kept = (_generation_tracer(build) or tracer(build)).run(inputs, upto=k, keep=need, hash_values=False)
    return [kept.get(v) for v in range(len(g.values))]
