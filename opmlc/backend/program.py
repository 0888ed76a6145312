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
from opmlc.backend.parts import DEFAULT_LOG2_BUDGET, NodeParts, parts_of, plan
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
    log2_budget: int = DEFAULT_LOG2_BUDGET
    parts: tuple[NodeParts | None, ...] = ()  # per node: its parts, or None (one task)

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
            "log2_step_budget": self.log2_budget,
            "tasks": tasks_record(self.elf, self.whole, self.nodes, self.parts),
        }


def tasks_record(elf: bytes, whole: TaskMap | None, nodes: list[TaskMap],
                 parts: tuple[NodeParts | None, ...] | list[NodeParts | None] = ()) -> dict:
    """The manifest's `program.tasks`: each task's map (as text) and base root; "whole" is null
    for a model without a whole-graph task. A split node's record adds `"parts": {"log2",
    "map", "base_roots"}`: its part map and each part's base root, in part order."""
    maps = ([] if whole is None else [whole]) + nodes
    tasks = [(m.node, m.table()) for m in maps]
    split = [p for p in parts if p is not None]
    for p in split:
        tasks += [(p.node, p.table(j)) for j in range(p.count)]
    roots = list(base_roots(elf, progress.track(tasks, "base roots per task")))
    recs = [{"map": m.to_text(), "base_root": "0x" + r.hex()} for m, r in zip(maps, roots, strict=False)]
    at = len(maps)
    for p in split:
        recs[p.node + (0 if whole is None else 1)]["parts"] = {
            "log2": p.log2, "map": p.map.to_text(), "base_roots": ["0x" + r.hex() for r in roots[at:at + p.count]]}
        at += p.count
    return {"whole": None if whole is None else recs[0], "nodes": recs[0 if whole is None else 1:]}


def build_program(graph: Graph, log2_budget: int = DEFAULT_LOG2_BUDGET) -> Program:
    nodes = node_maps(graph)  # first: a node too large for a task is refused before any codegen
    parts = tuple(plan(graph, log2_budget))
    module_ir = generate_module(graph, parted=parts_of(list(parts)))
    with progress.task("LLVM: optimizing and emitting MIPS32, linking"):
        elf = build_mips_elf(module_ir)
    return Program(module_ir, elf, whole_graph_map(graph), nodes, log2_budget, parts)
