"""Task maps: where each task of a model finds its values (docs/DESIGN.md "Per-task memory maps").

A task maps only what it reads and writes. Node k's map gives a region to each of its distinct
operands and to its output; the whole-graph task's map gives one to every value. Within a map,
regions are the values' sizes padded to a power of two ≥ 32 bytes, aligned to that size, handed
out largest first from 0x80000000 (a running offset then stays aligned to every later, smaller
or equal, power of two), and must end by 0xFFFFFFFF: 2 GiB bound one task, never the model.

A model whose values exceed 2 GiB has no whole-graph map (its tasks are its nodes); a node whose
own operands and output exceed 2 GiB is a compile error naming it. The map travels in the task
descriptor (runtime/mips.py), so it is part of the task's base root, and the manifest records it
as text, `"VALUE@0xADDR+0xSIZE ..."` in value order (`TaskMap.to_text`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from opmlc.commit import region_size
from opmlc.errors import BuildError
from opmlc.ir.graph import Graph

REGION_BASE = 0x80000000
REGION_SPACE = 1 << 31  # bytes of regions one task may map (tests lower it to exercise the limit)
WHOLE_GRAPH = 0xFFFFFFFF


@dataclass(frozen=True)
class Region:
    value: int
    addr: int
    size: int

    def to_json(self) -> dict:
        return {"value": self.value, "addr": self.addr, "size": self.size}


@dataclass(frozen=True)
class TaskMap:
    """The regions of one task (node index, or WHOLE_GRAPH), in value order."""

    node: int
    regions: tuple[Region, ...]

    def region(self, value: int) -> Region:
        for r in self.regions:
            if r.value == value:
                return r
        raise KeyError(f"value %{value} is not in the map of task {self.node:#x}")

    def table(self) -> dict[int, int]:
        """The descriptor's region table, sparse: value → address (every other entry is 0)."""
        return {r.value: r.addr for r in self.regions}

    def to_text(self) -> str:
        return " ".join(f"{r.value}@0x{r.addr:08x}+0x{r.size:x}" for r in self.regions)

    @classmethod
    def from_text(cls, node: int, text: str) -> TaskMap:
        regions = []
        for item in text.split():
            value, rest = item.split("@")
            addr, size = rest.split("+")
            regions.append(Region(int(value), int(addr, 16), int(size, 16)))
        return cls(node, tuple(regions))


def _pack(node: int, values: Iterable[int], sizes: list[int]) -> tuple[TaskMap | None, int]:
    """The map of `values` (largest first), or None when they need more than REGION_SPACE;
    and the bytes they need."""
    order = sorted(set(values), key=lambda v: (-sizes[v], v))
    addr = REGION_BASE
    regions = []
    for v in order:
        regions.append(Region(v, addr, sizes[v]))
        addr += sizes[v]
    need = addr - REGION_BASE
    if need > REGION_SPACE:
        return None, need
    return TaskMap(node, tuple(sorted(regions, key=lambda r: r.value))), need


def _sizes(graph: Graph) -> list[int]:
    return [region_size(v.type) for v in graph.values]


def whole_graph_map(graph: Graph) -> TaskMap | None:
    """Every value's region, or None when the model's values exceed one task's 2 GiB."""
    return _pack(WHOLE_GRAPH, range(len(graph.values)), _sizes(graph))[0]


def node_maps(graph: Graph) -> list[TaskMap]:
    """Node k's map: its distinct operands and its output. A BuildError names a node whose own
    regions exceed 2 GiB."""
    sizes = _sizes(graph)
    maps = []
    for k, node in enumerate(graph.nodes):
        m, need = _pack(k, [*node.inputs, node.output], sizes)
        if m is None:
            raise BuildError(
                f"node {k} ({node.op} {node.name!r}) reads and writes {size_text(need)} of regions, more than "
                f"the {size_text(REGION_SPACE)} one VM task maps; use a smaller batch or split the op"
            )
        maps.append(m)
    return maps


def size_text(nbytes: int) -> str:
    return f"{nbytes >> 20} MiB" if nbytes >= 1 << 20 else f"{nbytes} bytes"


def values_need(graph: Graph) -> int:
    """Bytes of regions all values need together (what the whole-graph task would map)."""
    return sum(_sizes(graph))


def part_map(graph: Graph, k: int, part_bytes: int) -> TaskMap:
    """The map of a part of node k (opmlc/backend/parts.py): its operands as in node k's map,
    its output region `part_bytes` (a power of two) holding the part's slice of the output."""
    sizes = _sizes(graph)
    node = graph.nodes[k]
    sizes[node.output] = part_bytes
    m, need = _pack(k, [*node.inputs, node.output], sizes)
    assert m is not None, "a part maps no more than its node"
    return m
