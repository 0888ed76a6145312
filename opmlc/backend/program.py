"""A model's compiled program: module IR, region layout, MIPS ELF — what `opmlc compile` adds
to a build directory, and what `compile --check` rebuilds and compares byte for byte."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from opmlc import progress
from opmlc.backend.codegen import generate_module
from opmlc.backend.mips_program import build_mips_elf
from opmlc.backend.regions import Region, assign_regions
from opmlc.ir.graph import Graph
from vm.loader import WHOLE_GRAPH, base_root, parse_elf

ELF_NAME = "model.elf"


@dataclass
class Program:
    module_ir: str
    regions: list[Region]
    elf: bytes

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.elf).hexdigest()

    @property
    def entry(self) -> int:
        return parse_elf(self.elf).entry

    def base_roots(self, n_nodes: int) -> dict:
        """The base root of every task: the program image plus its descriptor, regions empty."""
        program = parse_elf(self.elf)
        return {
            "whole": "0x" + base_root(program, WHOLE_GRAPH).hex(),
            "nodes": ["0x" + base_root(program, k).hex() for k in progress.track(range(n_nodes), "base roots per node")],
        }

    def manifest_record(self, n_nodes: int) -> dict:
        return {
            "elf": ELF_NAME,
            "sha256": self.sha256,
            "entry": f"0x{self.entry:08x}",
            "ir_sha256": hashlib.sha256(self.module_ir.encode()).hexdigest(),
            "regions": [r.to_json() for r in self.regions],
            "base_roots": self.base_roots(n_nodes),
        }


def build_program(graph: Graph) -> Program:
    module_ir = generate_module(graph)
    regions = assign_regions(graph)
    with progress.task("LLVM: optimizing and emitting MIPS32, linking"):
        elf = build_mips_elf(module_ir, [r.addr for r in regions])
    return Program(module_ir, regions, elf)
