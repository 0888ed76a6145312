"""Memory regions of a model's values (docs/DESIGN.md memory map and "Implementation choices").

Every value gets one region for the whole model: its size padded to a power of two ≥ 32 bytes,
aligned to that size, in 0x80000000–0xFFFFFFFF. Regions are handed out largest first, so a
running offset stays aligned to every later (smaller or equal) power of two.
"""

from __future__ import annotations

from dataclasses import dataclass

from opmlc.commit import region_size
from opmlc.errors import BuildError
from opmlc.ir.graph import Graph

REGION_BASE = 0x80000000
REGION_END = 0x1_0000_0000


@dataclass(frozen=True)
class Region:
    value: int
    addr: int
    size: int

    def to_json(self) -> dict:
        return {"value": self.value, "addr": self.addr, "size": self.size}


def assign_regions(graph: Graph) -> list[Region]:
    """One region per value, in value order."""
    sizes = [region_size(v.type) for v in graph.values]
    order = sorted(range(len(sizes)), key=lambda v: (-sizes[v], v))
    addr = REGION_BASE
    regions: dict[int, Region] = {}
    for v in order:
        regions[v] = Region(v, addr, sizes[v])
        addr += sizes[v]
    if addr > REGION_END:
        raise BuildError(
            f"the model's tensors need {(addr - REGION_BASE) >> 20} MiB of regions, more than the 2 GiB "
            "of the MIPS memory map; use a smaller model or batch"
        )
    return [regions[v] for v in range(len(sizes))]
