"""A model's compiled program: module IR, region layout, MIPS ELF — what `opmlc compile` adds
to a build directory, and what `compile --check` rebuilds and compares byte for byte."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from opmlc.backend.codegen import generate_module
from opmlc.backend.mips_program import build_mips_elf
from opmlc.backend.regions import Region, assign_regions
from opmlc.ir.graph import Graph
from vm.loader import parse_elf

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

    def manifest_record(self) -> dict:
        return {
            "elf": ELF_NAME,
            "sha256": self.sha256,
            "entry": f"0x{self.entry:08x}",
            "ir_sha256": hashlib.sha256(self.module_ir.encode()).hexdigest(),
            "regions": [r.to_json() for r in self.regions],
        }


def build_program(graph: Graph) -> Program:
    module_ir = generate_module(graph)
    regions = assign_regions(graph)
    return Program(module_ir, regions, build_mips_elf(module_ir, [r.addr for r in regions]))
