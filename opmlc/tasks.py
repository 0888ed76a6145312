"""Builds meet the VM: a task's initial state, from a build, its inputs and a node index.

A task is the whole graph (node None) or one node. Its memory is the program's base root with
the task's input tensors spliced into their regions (docs/DESIGN.md "Commitments"); the bytes
come from a store (the build's initializers, plus whatever values the caller computed), read
only for the pages the program touches.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from opmlc.artifact import Build
from opmlc.commit import from_bytes, padded_bytes, tensor_root
from opmlc.errors import BuildError, OpmlcError
from opmlc.ir.interpreter import run_graph
from vm.errors import ElfError
from vm.loader import WHOLE_GRAPH, Program, load_task, parse_elf
from vm.state import State


class LayeredStore:
    """Tensor bytes by root: values computed in this process first, then the build's store."""

    def __init__(self, build: Build) -> None:
        self.local: dict[bytes, bytes] = {}
        self.build_store = build.store

    def add(self, data: np.ndarray, t) -> bytes:
        root = tensor_root(data, t)
        self.local[root] = padded_bytes(data, t)
        return root

    def get(self, root: bytes) -> bytes | None:
        if root in self.local:
            return self.local[root]
        try:
            return self.build_store.get(root)
        except KeyError:
            return None


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


def task_index(build: Build, node: int | None) -> int:
    """The ELF task that `node` of `build` runs (a generation's node runs its step's task:
    opmlc/dispute/generation.py)."""
    if node is not None and hasattr(build, "task_index"):
        node = build.task_index(node)
    return WHOLE_GRAPH if node is None else node


def region(build: Build, node: int | None, v: int) -> tuple[int, int]:
    """(address, size) of value `v` in the memory map of `node`'s task."""
    if hasattr(build, "operand_region"):
        return build.operand_region(node, v)
    r = build.manifest["program"]["regions"][v]
    return r["addr"], r["size"]


def base_root(build: Build, node: int) -> str:
    """The 0x-hex base root of `node`'s task (the manifest's, or a generation's step's)."""
    if hasattr(build, "base_root"):
        return build.base_root(node)
    return build.manifest["program"]["base_roots"]["nodes"][node]


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


def initial_state(build: Build, values: list[np.ndarray | None], node: int | None,
                  program: Program | None = None) -> State:
    """The task's initial VM state; `values` must hold (at least) the task's input values."""
    check_node(build, node)
    task = Task(build, node)
    g = build.graph
    store = LayeredStore(build)
    spliced = []
    for v in task.input_values:
        arr = values[v]
        if arr is None:
            raise ValueError(f"value %{v} is needed by the task but was not computed")
        root = store.add(arr, g.values[v].type)
        spliced.append((*region(build, node, v), root))
    return load_task(program or program_of(build), task_index(build, node), spliced, store)


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


def read_outputs(build: Build, state: State, node: int | None) -> list[np.ndarray]:
    g = build.graph
    return [
        from_bytes(state.memory.read_region(*region(build, node, v)), g.values[v].type)
        for v in Task(build, node).output_values
    ]

