"""The native backend: the model's module compiled for this machine and called through ctypes.

Each value lives in a native-endian numpy buffer (the MIPS build sees the same numbers
big-endian in its regions); the kernels compute on them in place.

A `NativeSession` keeps a program's buffers across runs (what `opmlc.run` uses on a loaded
build): the initializers are used as they are (the build's memory-mapped weights,
opmlc/backend/native_build.py), the other buffers are allocated once, and a run copies in the
inputs, runs the task and copies out the outputs. No buffer needs clearing between runs: a
kernel only stores to its output (none loads from it) and writes every element of it, nodes run
in topological order, so every value a task reads was written by this run (or is an input,
copied in, or an initializer, never written); only the saturation counts are zeroed.

Threads: a session runs the graph on `threads` threads (default: $OPMLC_THREADS, else every
core this process may use). The host module (`host_module`) exports `task_span` (a run of nodes in one call) and
`task_part` (one part of a node that codegen split, kernels/native/__init__.py), and on x86-64
Linux the team's entry points (backend/team.py). A threaded run there is one native call on the
calling thread, which opens each split node to the session's standing workers (threads started
once, waiting in native code: `team.Crew`) and runs the other nodes itself. Without the team it
walks the graph as spans of small nodes on the calling thread and, for each split node, hands
its parts to a thread pool (50–100 µs a node on this VM). The parts partition the node's output
and compute each element as one thread would, so the bits (and the saturation counts, added
atomically) do not depend on the number of threads, nor on which thread runs which part.

The native build counts saturated elements per node (codegen's `count_saturation`): the counts
are the interpreter's (fixedpoint.count_saturation), element for element, and cost a compare
and an add where a kernel saturates. The MIPS program is generated without them.
"""

from __future__ import annotations

import ctypes
import os
import threading
import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from opmlc.backend.buffer_plan import shared_slots
from opmlc.backend.codegen import WHOLE_GRAPH, generate_module
from opmlc.backend.kernels.native import derived_buffers, split_worth
from opmlc.backend.target import NativeProgram, load_native, region_table
from opmlc.backend.team import Crew
from opmlc.ir.graph import Graph
from opmlc.ir.initializers import PackedI4, held
from opmlc.ir.types import DType, TensorType, native_buffer, unpack_i4

_modules: dict[int, str] = {}


def host_module(graph: Graph) -> str:
    """The native build's module text: saturation counters and the host kernels
    (opmlc/backend/kernels/native/); the MIPS module is `generate_module(graph)`."""
    return generate_module(graph, count_saturation=True, host_kernels=True)


def native_program(graph: Graph, module_ir: str | None = None) -> NativeProgram:
    """The compiled program of `graph` (cached per process and on disk by its IR's hash): the
    host module unless `module_ir` (e.g. the MIPS module's text) is given."""
    return load_native(module_ir if module_ir is not None else host_module(graph))


def plain_layout(t: TensorType) -> bool:
    """Whether a value's native buffer is simply its array as numpy holds it (the interpreter's
    array), i.e. its encoding has numpy's size: every type but a packed one (e.g. 4-bit)."""
    return np.dtype(t.dtype.numpy).itemsize * t.numel == t.nbytes


def value_buffers(graph: Graph, known: dict[int, np.ndarray]) -> list[np.ndarray]:
    """A native buffer per value: the known arrays copied in, the rest zero (an i4 value's buffer
    holds its packed bytes, as its MIPS region does). The graph's own initializers of a plain
    layout are passed as they are (no kernel writes an operand): never copied per run."""
    bufs = []
    for v in graph.values:
        arr = known.get(v.id)
        t = v.type
        if arr is None:
            arr = np.zeros(t.shape, dtype=t.dtype.numpy)
        if arr is graph.initializers.get(v.id) and plain_layout(t):
            bufs.append(np.asarray(arr, dtype=t.dtype.numpy, order="C"))
        else:
            bufs.append(native_buffer(arr, t))
    return bufs


def task_table(graph: Graph, bufs: list[np.ndarray], derived: list[np.ndarray] | None = None
               ) -> tuple[ctypes.Array, np.ndarray]:
    """The region table of `bufs` plus the saturation counts array (one i64 per node) that a
    counting program adds to, then the host kernels' derived buffers (`derived`, those of the
    program's own build: native_build.derived_views; else computed here, from `bufs`:
    kernels/native/__init__.py, "Constant operands"; the table keeps them alive); the caller
    keeps `bufs` and the counts alive while the table is used."""
    counts = np.zeros(max(1, len(graph.nodes)), dtype=np.int64)
    if derived is None:
        derived = derived_buffers(graph, {v: bufs[v] for v in graph.initializers})
    table = region_table([*bufs, counts, *derived])
    table.derived = derived
    return table, counts


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


def _address(arr: np.ndarray) -> int:
    """The data address of a C-contiguous array: through the buffer protocol when it is writable
    (about a third of the cost of `arr.ctypes.data`), else by numpy's interface."""
    try:
        return ctypes.addressof(ctypes.c_char.from_buffer(arr))
    except (TypeError, ValueError):  # read-only, or empty
        return arr.ctypes.data


def _aligned_bytes(n: int, align: int = 64) -> np.ndarray:
    """n zero bytes starting on an `align`-byte boundary (a cache line: no vector load of a
    slot's first elements straddles two)."""
    raw = np.zeros(n + align, dtype=np.uint8)
    skip = -raw.ctypes.data % align
    return raw[skip:skip + n]


def alias_of(graph: Graph) -> dict[int, int]:
    """{value: value whose buffer it shares} for the outputs of reshape nodes of a plain layout:
    a reshape keeps the row-major order, so its output's bytes are its input's. The host
    module's reshape kernel copies nothing when given the same memory (kernels/reshape.py); no
    kernel writes an operand, and each value is written once per run, by its node, so sharing is
    safe."""
    out = {}
    for node in graph.nodes:
        t, src = graph.values[node.output].type, graph.values[node.inputs[0]].type if node.inputs else None
        if node.op == "reshape" and src is not None and src.dtype is t.dtype and plain_layout(t) and plain_layout(src):
            out[node.output] = node.inputs[0]
    return out


THREADS_ENV = "OPMLC_THREADS"


def default_threads() -> int:
    """$OPMLC_THREADS when it is set (like OMP_NUM_THREADS: e.g. 1 for each of several processes
    sharing the cores, as the test suite's xdist workers do), else every core this process may
    run on."""
    from opmlc.errors import InputError

    value = os.environ.get(THREADS_ENV, "").strip()
    if value:
        if not value.isdigit() or int(value) < 1:
            raise InputError(f"{THREADS_ENV}={value!r}: must be a positive integer (or unset: every core)")
        return int(value)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def check_threads(threads: int | None) -> int:
    """`threads`, or default_threads() for None; anything but a positive int is an InputError."""
    if type(threads) is int and threads > 0:  # every run checks it: no import on this path
        return threads
    from opmlc.errors import InputError

    if threads is None:
        return default_threads()
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise InputError(f"threads must be a positive integer, got {threads!r}")
    return threads


def thread_plan(graph: Graph) -> list[tuple[int, int, bool]]:
    """The graph as steps (first, end, split): a span of nodes run in one call, or (split) one
    node run as parts on every thread."""
    steps: list[tuple[int, int, bool]] = []
    first = 0
    for index in range(len(graph.nodes)):
        if split_worth(graph, index):
            if first < index:
                steps.append((first, index, False))
            steps.append((index, index + 1, True))
            first = index + 1
    if first < len(graph.nodes):
        steps.append((first, len(graph.nodes), False))
    return steps


class NativeSession:
    """A program with its buffers, kept across runs: each run costs the input copy, the kernels
    and the output copy. The initializers' buffers are the graph's arrays themselves when they
    already are native, C-contiguous arrays (a loaded build's mapped weights: read-only, which
    the kernels never write; an i4 weight's packed bytes as the build holds them), else a copy
    made once. Activations whose lifetimes do not overlap share memory (backend/buffer_plan.py),
    so after a run only the graph's inputs and outputs hold their values. Runs are serialised by
    a lock; `threads` (default: every core) is the number of threads a run uses (module
    docstring)."""

    def __init__(self, program: NativeProgram, graph: Graph, threads: int | None = None,
                 derived: list[np.ndarray] | None = None) -> None:
        """`derived`: the host kernels' derived buffers when the caller has them (task_table)."""
        self.program, self.graph = program, graph
        self.threads = check_threads(threads)
        # no split node (or a module without the entry points): one call runs the whole graph
        self._plan = thread_plan(graph) if program.task_part is not None else []
        if not any(split for _f, _e, split in self._plan):
            self._plan = []
        self._pool: ThreadPoolExecutor | None = None
        self._pool_size = 0
        self._crew: Crew | None = None  # standing workers (backend/team.py), started by a first threaded run
        self._crew_finalizer: weakref.finalize | None = None
        self.bufs = []
        aliases = alias_of(graph)
        # activations whose lifetimes do not overlap share memory (backend/buffer_plan.py)
        slot_of, sizes = shared_slots(graph, aliases, [v.type.nbytes if plain_layout(v.type) else None
                                                       for v in graph.values])
        slots = [_aligned_bytes(n) for n in sizes]
        for v in graph.values:
            t = v.type
            arr = held(graph.initializers, v.id) if v.id in graph.initializers else None
            if v.id in aliases:  # a reshape's output: its input's memory (the kernel skips the copy)
                self.bufs.append(self.bufs[aliases[v.id]].reshape(t.shape))
            elif v.id in slot_of:
                self.bufs.append(np.ndarray(t.shape, dtype=t.dtype.numpy, buffer=slots[slot_of[v.id]]))
            elif arr is None:
                self.bufs.append(native_buffer(np.zeros(t.shape, dtype=t.dtype.numpy), t))
            elif isinstance(arr, PackedI4):  # a loaded build's i4 weight: its mapped packed bytes
                self.bufs.append(arr.packed)
            elif plain_layout(t) and arr.dtype == t.dtype.numpy and arr.flags.c_contiguous and arr.shape == t.shape:
                self.bufs.append(arr)
            else:
                self.bufs.append(native_buffer(arr, t))
        self.table, self.counts = task_table(graph, self.bufs, derived)
        self._table_address = ctypes.addressof(self.table)
        self._lock = threading.Lock()
        # what every whole-graph call needs, prepared once (run_edge): the inputs' types and
        # buffers (with the buffers' addresses), the outputs' buffers
        self._inputs = [(graph.values[v].type, self.bufs[v], self.bufs[v].ctypes.data) for v in graph.inputs]
        self._output_bufs = [self.bufs[v] for v in graph.outputs]
        self.output_types = [graph.values[v].type for v in graph.outputs]
        self._counts_bytes = memoryview(self.counts).cast("B")
        self._zero_counts = bytes(len(self._counts_bytes))

    def run(self, inputs: list[np.ndarray], node: int | None = None,
            values: list[np.ndarray | None] | None = None,
            saturated: dict[int, int] | None = None, threads: int | None = None) -> list[np.ndarray]:
        """Like run_native, but returns only the outputs (of the graph, or of `node`), as copies.

        For one node, `values` supplies its operands that are not initializers (those are the
        build's own). `threads` overrides the session's for this run."""
        g = self.graph
        threads = self.threads if threads is None else check_threads(threads)
        if node is not None and not 0 <= node < len(g.nodes):
            raise ValueError(f"node {node} is not in 0..{len(g.nodes) - 1}")
        with self._lock:
            for v, arr in zip(g.inputs, inputs, strict=True):
                np.copyto(self.bufs[v], arr, casting="unsafe")
            if values is not None:
                for v in g.nodes[node].inputs if node is not None else ():
                    if v not in g.initializers and values[v] is not None:
                        np.copyto(self.bufs[v], values[v], casting="unsafe")
            self.counts.fill(0)
            if node is None and threads > 1 and self._plan:
                self._run_threaded(threads)
            elif node is not None and threads > 1 and self._plan and split_worth(g, node):
                self._run_parts(node, threads)
            else:
                self.program.task(self.table, WHOLE_GRAPH if node is None else node)
            if saturated is not None and self.program.counts_saturation and self.counts.any():
                saturated.update({int(k): int(self.counts[k]) for k in np.flatnonzero(self.counts)})
            outs = g.outputs if node is None else [g.nodes[node].output]
            return [self.bufs[v].copy() for v in outs]


    def run_edge(self, arrays: list[np.ndarray], encode: Callable[[int, np.ndarray], tuple[np.ndarray, int]],
                 threads: int | None = None) -> tuple[list[np.ndarray], dict[int, int], list[int]]:
        """The whole graph on the graph inputs `arrays` as the caller holds them (floats for an
        fx32 input): the fast path of `opmlc.run`. Returns (outputs, as copies; saturated
        {node: count}; elements clipped per input).

        Each input goes into its buffer by one edge call (opmlc/backend/edge.py) when it is the
        common case — a C-contiguous ndarray of the input's exact shape, float32/float64 for an
        fx32 input, int64 for an i32 one, the buffer's own dtype otherwise — and the call found
        nothing to refuse; else `encode(k, array)` (the API's check and quantization: the one
        definition, which raises on a bad input) gives (value, clipped) and it is copied in.
        Nothing else is done per call: no allocation but the outputs', no Python per node."""
        with self._lock:
            clipped = [self._put_input(k, arr, encode) for k, arr in enumerate(arrays)]
            self._counts_bytes[:] = self._zero_counts  # a memoryview: cheaper than numpy's fill/any
            threads = self.threads if threads is None else threads
            if threads > 1 and self._plan:
                self._run_threaded(threads)
            else:
                self.program._task(self._table_address, WHOLE_GRAPH)
            saturated = {}
            if self._counts_bytes.tobytes() != self._zero_counts:
                saturated = {int(k): int(self.counts[k]) for k in np.flatnonzero(self.counts)}
            return [buf.copy() for buf in self._output_bufs], saturated, clipped

    def _put_input(self, k: int, arr: np.ndarray, encode: Callable[[int, np.ndarray], tuple[np.ndarray, int]]) -> int:
        t, buf, address = self._inputs[k]
        p = self.program
        if type(arr) is np.ndarray and arr.shape == t.shape and arr.flags.c_contiguous:
            dt = t.dtype
            if dt is DType.FX32:
                fn = p.quantize_f32 if arr.dtype == np.float32 else p.quantize_f64 if arr.dtype == np.float64 else None
                if fn is not None and (n := fn(_address(arr), address, arr.size, t.frac)) >= 0:
                    return n
            elif dt is DType.I32 and arr.dtype == np.int64 and p.narrow_i64 is not None:
                if p.narrow_i64(_address(arr), address, arr.size) == 0:
                    return 0
            elif arr.dtype == buf.dtype and dt is not DType.F32:
                np.copyto(buf, arr)
                return 0
        value, n = encode(k, arr)
        np.copyto(buf, value, casting="unsafe")
        return n

    def _run_threaded(self, threads: int) -> None:
        table = ctypes.addressof(self.table)
        if self.program.task_team_lead is not None:  # one native call; the standing workers take parts
            self._crew_of(threads).run(table, 0, len(self.graph.nodes))
            return
        span = self.program.task_span
        for first, end, split in self._plan:
            if split:
                self._run_parts(first, threads)
            else:
                span(table, first, end)

    def _crew_of(self, threads: int) -> Crew:
        """The standing workers for `threads` members, started on first use (again after a fork,
        or for another count); stopped when the session is collected or the interpreter exits."""
        crew = self._crew
        if crew is None or crew.members != threads or not crew.alive:
            if self._crew_finalizer is not None:
                self._crew_finalizer()  # stops the old crew (a no-op after a fork: its threads are gone)
            crew = self._crew = Crew(self.program, threads)
            self._crew_finalizer = weakref.finalize(self, crew.stop)
        return crew

    def _workers(self, threads: int) -> ThreadPoolExecutor:
        """The pool of threads − 1 workers (the calling thread is the first)."""
        if self._pool is None or self._pool_size < threads - 1:
            if self._pool is not None:
                self._pool.shutdown()
            self._pool = ThreadPoolExecutor(threads - 1, thread_name_prefix="opmlc-native")
            self._pool_size = threads - 1
        return self._pool

    def _run_parts(self, node: int, threads: int) -> None:
        """Node `node`'s parts: 1..threads-1 on the pool, part 0 here, then wait for all."""
        part = self.program.task_part
        table = ctypes.addressof(self.table)
        futures = [self._workers(threads).submit(part, table, node, p, threads) for p in range(1, threads)]
        part(table, node, 0, threads)
        for f in futures:
            f.result()
