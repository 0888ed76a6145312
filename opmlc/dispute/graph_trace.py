"""A party's view of one task's graph trace: every value's root, and the trace states and list
proofs the game asks for (docs/DESIGN.md "Commitments", graph trace).

An honest party's values come from the interpreter; a lying one's from a `Tamper` that
replaces one node's output (and, if it propagates, recomputes everything downstream from it).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from opmlc.artifact import Build
from opmlc.commit import tensor_root
from opmlc.ir.interpreter import run_node
from vm.merkle import ZERO_LEAF, list_proof, list_root


@dataclass(frozen=True)
class Tamper:
    """Replace node `node`'s output by one with its flat element `element` (default the first)
    changed by `delta`."""

    node: int
    delta: int = 1
    propagate: bool = True  # recompute later nodes from the tampered value (a consistent liar)
    element: int = 0  # e.g. inside one part of a split node (opmlc demo --lie-part)

    def apply(self, arr: np.ndarray) -> np.ndarray:
        out = arr.copy()
        flat = out.reshape(-1)
        e = self.element
        flat[e] = (int(flat[e]) + self.delta) if out.dtype != np.bool_ else not flat[e]
        return out


def compute_values(build: Build, inputs: list[np.ndarray], tamper: Tamper | None = None) -> list[np.ndarray]:
    """Every value of the graph on quantized inputs, tampered as asked."""
    g = build.graph
    values: list[np.ndarray | None] = [None] * len(g.values)
    for v, arr in zip(g.inputs, inputs, strict=True):
        values[v] = np.asarray(arr, dtype=g.values[v].type.dtype.numpy)
    for v, arr in g.initializers.items():
        values[v] = arr
    honest = list(values)
    for i, node in enumerate(g.nodes):
        honest[node.output] = run_node(g, i, honest)
        if tamper is None:
            values[node.output] = honest[node.output]
        elif i == tamper.node:
            values[node.output] = tamper.apply(honest[node.output])
        elif i > tamper.node and tamper.propagate:
            values[node.output] = run_node(g, i, values)
        else:
            values[node.output] = honest[node.output]
    return values  # type: ignore[return-value]


class GraphTrace:
    """Trace states from the list of value roots a party claims (all values computed)."""

    def __init__(self, build: Build, roots: list[bytes]) -> None:
        g = build.graph
        if len(roots) != len(g.values):
            raise ValueError(f"a trace of this model has {len(g.values)} value roots, not {len(roots)}")
        self.build = build
        self.roots = list(roots)
        self.first = g.first_node_value
        self.n_nodes = len(g.nodes)

    @classmethod
    def of_values(cls, build: Build, values: list[np.ndarray]) -> GraphTrace:
        g = build.graph
        # the build's own weights by the roots its manifest records: never hashed again
        known = {r["value"]: bytes.fromhex(r["root"][2:]) for r in build.manifest["initializers"]
                 if values[r["value"]] is g.initializers.get(r["value"])}
        return cls(build, [known.get(v.id) or tensor_root(a, v.type)
                           for a, v in zip(values, g.values, strict=True)])

    def leaves(self, i: int) -> list[bytes]:
        """The trace list after i nodes: node outputs from node i on are zero."""
        cut = self.first + i
        return self.roots[:cut] + [ZERO_LEAF] * (len(self.roots) - cut)

    def state(self, i: int) -> bytes:
        return list_root(self.leaves(i))

    def proof(self, i: int, position: int) -> list[bytes]:
        return list_proof(self.leaves(i), position)

    @property
    def output_root(self) -> bytes:
        return self.roots[self.build.graph.outputs[0]]

    @property
    def final(self) -> bytes:
        return self.state(self.n_nodes)

    def first_divergence(self, other: GraphTrace) -> int | None:
        """The first node whose output root differs (the node a dispute ends at), or None."""
        for k in range(self.n_nodes):
            if self.roots[self.first + k] != other.roots[self.first + k]:
                return k
        return None
