"""Builds meet the VM: a task's initial state, from a build, its inputs and a node index.

A task is the whole graph (node None) or one node. Its memory is the program's base root for
the task's map (the descriptor carries the map: docs/DESIGN.md "Per-task memory maps") with the
task's input tensors spliced into their regions (docs/DESIGN.md "Commitments"); the bytes come
from a store (the build's initializers, plus whatever values the caller computed), read only
for the pages the program touches. A model whose values exceed 2 GiB has no whole-graph task.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from opmlc.artifact import Build
from opmlc.backend import regions
from opmlc.backend.parts import NodeParts
from opmlc.backend.regions import TaskMap, size_text, values_need
from opmlc.commit import from_bytes, padded_bytes, paged_root
from opmlc.errors import BuildError, OpmlcError
from opmlc.ir.interpreter import run_graph
from vm.errors import ElfError
from vm.loader import WHOLE_GRAPH, Program, load_task, parse_elf
from vm.loader import initial_state as base_state_of
from vm.state import State


class LayeredStore:
    """Tensor bytes by root: values computed in this process first, then the build's store.

    Pages as the build's store does (vm.memory's paging protocol): a task reads only the pages
    of a large operand it touches."""

    def __init__(self, build: Build) -> None:
        self.local: dict[bytes, tuple[bytes, bytes | None]] = {}  # root → (padded, page roots)
        self.build_store = build.store

    def add(self, data: np.ndarray, t) -> bytes:
        padded = padded_bytes(data, t)
        root, pages = paged_root(padded)
        self.local[root] = (padded, pages)
        return root

    def get(self, root: bytes) -> bytes | None:
        if root in self.local:
            return self.local[root][0]
        try:
            return self.build_store.get(root)
        except KeyError:
            return None

    def read(self, root: bytes, offset: int, size: int) -> bytes:
        if root in self.local:
            return self.local[root][0][offset : offset + size]
        return self.build_store.read(root, offset, size)

    def page_roots(self, root: bytes) -> bytes | None:
        if root in self.local:
            return self.local[root][1]
        return self.build_store.page_roots(root)


@dataclass
class Task:
    build: Build
    node: int | None

    @property
    def index(self) -> int:
        return WHOLE_GRAPH if self.node is None else self.node

    @property
    def input_values(self) -> list[int]:
        g = self.build.graph
        if self.node is None:
            return list(g.inputs) + list(g.initializers)
        return list(dict.fromkeys(g.nodes[self.node].inputs))

    @property
    def output_values(self) -> list[int]:
        g = self.build.graph
        return list(g.outputs) if self.node is None else [g.nodes[self.node].output]


def program_of(build: Build) -> Program:
    """The build's model.elf, checked against the sha256 its manifest records."""
    import hashlib

    path = build.directory / build.manifest["program"]["elf"]
    try:
        data = path.read_bytes()
    except OSError:
        raise BuildError(f"{path}: missing; compile the model again") from None
    if hashlib.sha256(data).hexdigest() != build.manifest["program"]["sha256"]:
        raise BuildError(f"{path}: does not match the sha256 in the manifest; compile the model again")
    try:
        return parse_elf(data)
    except ElfError as exc:
        raise BuildError(f"{path}: {exc}; compile the model again") from None


def check_node(build: Build, node: int | None) -> None:
    n = len(build.graph.nodes)
    if node is not None and not 0 <= node < n:
        raise OpmlcError(f"--node {node}: the model has nodes 0..{n - 1} (see `opmlc inspect`)")


def node_parts(build: Build, node: int) -> NodeParts | None:
    """Node `node`'s parts as the manifest records them (None: the node is one task)."""
    rec = build.manifest["program"]["tasks"]["nodes"][node].get("parts")
    if rec is None:
        return None
    g = build.graph
    out = g.nodes[node].output
    t = g.values[out].type
    return NodeParts(node, rec["log2"], TaskMap.from_text(node, rec["map"]), t.numel, len(g.values), out,
                     t.dtype.itemsize)


def check_part(build: Build, node: int | None, part: int | None, option: str = "--part") -> NodeParts | None:
    """Node `node`'s parts, when `part` names one of them (a one-line error otherwise)."""
    if part is None:
        return None
    parts = None if node is None else node_parts(build, node)
    if parts is None:
        raise OpmlcError(f"{option} {part}: node {node} is not split into parts (see the manifest's program.tasks)")
    if not 0 <= part < parts.count:
        raise OpmlcError(f"{option} {part}: node {node} has parts 0..{parts.count - 1}")
    return parts


def task_table(build: Build, node: int | None, part: int | None = None) -> dict[int, int]:
    """The task's descriptor table: its map, and for a part its output element range."""
    parts = check_part(build, node, part)
    return task_map(build, node).table() if parts is None else parts.table(part)


def task_map(build: Build, node: int | None, part: int | None = None) -> TaskMap:
    """The task's map as the manifest records it (checked against the graph by Build.load); a
    generation's node maps its step node's regions (opmlc/dispute/generation.py), never a part."""
    if hasattr(build, "task_map"):
        if part is not None:
            raise OpmlcError(f"--part {part}: a generation's nodes are whole tasks (no parts)")
        return build.task_map(node)
    tasks = build.manifest["program"]["tasks"]
    if part is not None:
        return check_part(build, node, part).map
    if node is not None:
        return TaskMap.from_text(node, tasks["nodes"][node]["map"])
    if tasks["whole"] is None:
        n = len(build.graph.nodes)
        raise OpmlcError(
            f"{build.directory}: the model's values need {size_text(values_need(build.graph))} of regions, more "
            f"than the {size_text(regions.REGION_SPACE)} one VM task maps, so it has no whole-graph task; run "
            f"its nodes as tasks with --node K (0..{n - 1})")
    return TaskMap.from_text(WHOLE_GRAPH, tasks["whole"]["map"])


def value_root(build: Build, v: int, arr: np.ndarray) -> bytes | None:
    """The root the manifest records for initializer `v`, when `arr` is the build's own array
    (no need to hash it again); else None."""
    if build.graph.initializers.get(v) is not arr:
        return None
    for rec in build.manifest["initializers"]:
        if rec["value"] == v:
            return bytes.fromhex(rec["root"][2:])
    return None


def task_inputs(build: Build, values: list[np.ndarray | None], node: int | None,
                store: LayeredStore, part: int | None = None) -> list[tuple[int, int, bytes]]:
    """(addr, size, root) of each input of the task in its map; computed values go to `store`."""
    m = task_map(build, node, part)
    g = build.graph
    spliced = []
    for v in Task(build, node).input_values:
        arr = values[v]
        if arr is None:
            raise ValueError(f"value %{v} is needed by the task but was not computed")
        root = value_root(build, v, arr) or store.add(arr, g.values[v].type)
        r = m.region(v)
        spliced.append((r.addr, r.size, root))
    return spliced


def base_state(build: Build, node: int | None, program: Program | None = None, part: int | None = None) -> State:
    """The task's base state: image and descriptor (its map), regions empty."""
    m = task_map(build, node, part)
    return base_state_of(program or program_of(build), m.node, task_table(build, node, part))


def initial_state(build: Build, values: list[np.ndarray | None], node: int | None,
                  program: Program | None = None, part: int | None = None) -> State:
    """The task's initial VM state; `values` must hold (at least) the task's input values.
    `part`: part j of a split node (its output region holds the part's slice)."""
    check_node(build, node)
    m = task_map(build, node, part)
    store = LayeredStore(build)
    spliced = task_inputs(build, values, node, store, part)
    return load_task(program or program_of(build), m.node, spliced, store, task_table(build, node, part))


def honest_values(build: Build, inputs: list[np.ndarray], upto: int | None = None) -> list[np.ndarray | None]:
    """Every value the interpreter computes (all of them, or those needed to run node `upto`)."""
    g = build.graph
    if upto is None:
        return run_graph(g, inputs)
    from opmlc.ir.interpreter import run_node

    values: list[np.ndarray | None] = [None] * len(g.values)
    for v, arr in zip(g.inputs, inputs, strict=True):
        values[v] = np.asarray(arr, dtype=g.values[v].type.dtype.numpy)
    for v, arr in g.initializers.items():
        values[v] = arr
    for i in range(upto):
        values[g.nodes[i].output] = run_node(g, i, values)
    return values


def read_part(build: Build, state: State, node: int, part: int) -> bytes:
    """The bytes of part `part`'s output region (its slice of the output's padded encoding)."""
    parts = check_part(build, node, part)
    r = parts.map.region(parts.output_value)
    return state.memory.read_region(r.addr, r.size)


def read_outputs(build: Build, state: State, node: int | None) -> list[np.ndarray]:
    g = build.graph
    m = task_map(build, node)
    return [
        from_bytes(state.memory.read_region(m.region(v).addr, m.region(v).size), g.values[v].type)
        for v in Task(build, node).output_values
    ]

