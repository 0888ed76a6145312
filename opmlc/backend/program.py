"""A model's compiled program: module IR, task maps, MIPS ELF — what `opmlc compile` adds to a
build directory, and what `compile --check` rebuilds and compares byte for byte.

The ELF is one image for every task; each task's map (opmlc/backend/regions.py) goes into its
descriptor, so the manifest records, per task, the map and the base root (image + descriptor).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from opmlc import progress
from opmlc.backend.codegen import generate_module
from opmlc.backend.mips_program import build_mips_elf
from opmlc.backend.regions import TaskMap, node_maps, whole_graph_map
from opmlc.ir.graph import Graph
from vm.loader import base_roots, parse_elf

ELF_NAME = "model.elf"


@dataclass
class Program:
    module_ir: str
    elf: bytes
    whole: TaskMap | None  # None: the model's values exceed 2 GiB, its tasks are its nodes
    nodes: list[TaskMap]

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.elf).hexdigest()

    @property
    def entry(self) -> int:
        return parse_elf(self.elf).entry

    def task_map(self, node: int | None) -> TaskMap:
        if node is not None:
            return self.nodes[node]
        if self.whole is None:
            raise ValueError("this model has no whole-graph task (its values exceed 2 GiB)")
        return self.whole

    def manifest_record(self) -> dict:
        return {
            "elf": ELF_NAME,
            "sha256": self.sha256,
            "entry": f"0x{self.entry:08x}",
            "ir_sha256": hashlib.sha256(self.module_ir.encode()).hexdigest(),
            "tasks": tasks_record(self.elf, self.whole, self.nodes),
        }


def tasks_record(elf: bytes, whole: TaskMap | None, nodes: list[TaskMap]) -> dict:
    """The manifest's `program.tasks`: each task's map (as text) and base root; "whole" is null
    for a model without a whole-graph task."""
    maps = ([] if whole is None else [whole]) + nodes
    roots = base_roots(elf, ((m.node, m.table()) for m in progress.track(maps, "base roots per task")))
    recs = [{"map": m.to_text(), "base_root": "0x" + r.hex()} for m, r in zip(maps, roots, strict=True)]
    return {"whole": None if whole is None else recs[0], "nodes": recs[0 if whole is None else 1:]}


def build_program(graph: Graph) -> Program:
    nodes = node_maps(graph)  # first: a node too large for a task is refused before any codegen
    module_ir = generate_module(graph)
    with progress.task("LLVM: optimizing and emitting MIPS32, linking"):
        elf = build_mips_elf(module_ir)
    return Program(module_ir, elf, whole_graph_map(graph), nodes)
