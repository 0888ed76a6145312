"""What each side of a game knows and answers, on chain or off.

The `Claimant` (the server, who made the claim) answers the game's questions from its claimed
value roots: trace states, the hand-off's proofs, VM state hashes. The `Verifier` (the
challenger) holds its own view and agrees or disagrees, and proves the last step. Both can be
honest or lie in the ways the tests and `opmlc demo` exercise; the moves themselves are made by
opmlc/dispute/offchain.py (a model of the contract) or opmlc/dispute/parties.py (on chain).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np

from opmlc.artifact import Build
from opmlc.commit import padded_bytes
from opmlc.dispute.commitment import NodeInfo, node_infos, node_proof, part_base_proof, part_levels
from opmlc.dispute.graph_trace import GraphTrace, Tamper, compute_values
from opmlc.dispute.node_run import NodeRun


@dataclass
class StartNode:
    """The arguments of the hand-off move (docs/DESIGN.md `startNode`), in the ABI's order."""

    node: int
    info: NodeInfo
    node_proof: list[bytes]
    out_root: bytes
    out_proof: list[bytes]
    input_roots: list[bytes]
    input_proofs: list[list[bytes]]
    splice_proofs: list[bytes]
    final_state: bytes
    out_region_proof: bytes
    log2_steps: int
    part: int | None = None  # startPart: the part, and its task's base root (out_proof: its proof)
    part_base: bytes | None = None

    def to_json(self) -> dict:
        hx = lambda b: "0x" + b.hex()  # noqa: E731
        return {
            "node": self.node,
            "info": {"base_root": hx(self.info.base_root), "input_values": list(self.info.input_values),
                     "input_addrs": list(self.info.input_addrs), "input_heights": list(self.info.input_heights),
                     "output_value": self.info.output_value, "output_addr": self.info.output_addr,
                     "output_height": self.info.output_height, "parts_log2": self.info.parts_log2},
            "node_proof": [hx(x) for x in self.node_proof],
            "out_root": hx(self.out_root),
            "out_proof": [hx(x) for x in self.out_proof],
            "input_roots": [hx(x) for x in self.input_roots],
            "input_proofs": [[hx(x) for x in p] for p in self.input_proofs],
            "splice_proofs": [hx(x) for x in self.splice_proofs],
            "final_state": hx(self.final_state),
            "out_region_proof": hx(self.out_region_proof),
            "log2_steps": self.log2_steps,
            **({} if self.part is None else {"part": self.part, "part_base": hx(self.part_base)}),
        }


class _Side:
    """Shared by both roles: the honest values, the party's own trace, node runs on demand."""

    def __init__(self, build: Build, inputs: list[np.ndarray], roots: list[bytes],
                 believed: list[np.ndarray] | None = None) -> None:
        self.build = build
        self.honest = compute_values(build, inputs)
        self.trace = GraphTrace(build, roots)
        self.infos = node_infos(build)
        self._runs: dict[tuple[int, int | None], NodeRun] = {}
        self._believed = believed if believed is not None else self.honest
        self._levels: dict[int, list[list[bytes]]] = {}

    def part_levels(self, k: int) -> list[list[bytes]]:
        """Split node k's output tree above its parts, as this side believes the output."""
        if k not in self._levels:
            g = self.build.graph
            out = g.nodes[k].output
            levels = part_levels(padded_bytes(self._believed[out], g.values[out].type), self.infos[k].parts_log2)
            assert levels[-1][0] == self.trace.roots[out], "the believed output is the traced one"
            self._levels[k] = levels
        return self._levels[k]

    def part_root(self, k: int, depth: int, index: int) -> bytes:
        """The root of the subtree `index` at `depth` below split node k's output root."""
        levels = self.part_levels(k)
        return levels[len(levels) - 1 - depth][index]

    def node_run(self, k: int, part: int | None = None) -> NodeRun:
        """Node k (or its part) run on the operands this side believes, showing the output it
        believes."""
        if (k, part) not in self._runs:
            info = self.infos[k]
            claimed = (self.trace.roots[info.output_value] if part is None
                       else self.part_root(k, info.parts_log2, part))
            self._runs[k, part] = NodeRun(self.build, self.honest, k, info, claimed_output_root=claimed, part=part)
        return self._runs[k, part]

    @property
    def vm_steps(self) -> int:
        """VM steps this side executed for its node runs."""
        return sum(r.steps for r in self._runs.values())


class Claimant(_Side):
    """The server's side. `tamper` makes it claim a wrong output for one node."""

    def __init__(self, build: Build, inputs: list[np.ndarray], tamper: Tamper | None = None,
                 roots: list[bytes] | None = None) -> None:
        believed = None
        if roots is None:
            believed = compute_values(build, inputs, tamper)
            roots = GraphTrace.of_values(build, believed).roots
        super().__init__(build, inputs, roots, believed)

    def trace_at(self, i: int) -> bytes:
        return self.trace.state(i)

    def start_node(self, k: int) -> StartNode:
        info = self.infos[k]
        run = self.node_run(k)
        leaves_lo = self.trace.leaves(k)
        from vm.merkle import list_proof

        return StartNode(
            node=k,
            info=info,
            node_proof=node_proof(self.build, k),
            out_root=self.trace.roots[info.output_value],
            out_proof=list_proof(leaves_lo, info.output_value),
            input_roots=[self.trace.roots[v] for v in info.input_values],
            input_proofs=[list_proof(leaves_lo, v) for v in info.input_values],
            splice_proofs=run.splice_proofs(),
            final_state=run.final_state(),
            out_region_proof=run.output_region_proof(),
            log2_steps=run.log2_steps,
        )

    def split_node(self, k: int) -> tuple[bytes, list[bytes], int]:
        """splitNode's arguments for split node k: its output root, the trace proof, partsLog2."""
        from vm.merkle import list_proof

        info = self.infos[k]
        return (self.trace.roots[info.output_value], list_proof(self.trace.leaves(k), info.output_value),
                info.parts_log2)

    def bisect_part(self, k: int, depth: int, index: int) -> tuple[bytes, bytes]:
        """The two halves of the disputed subtree (index at depth) of split node k's output."""
        return self.part_root(k, depth + 1, 2 * index), self.part_root(k, depth + 1, 2 * index + 1)

    def start_part(self, k: int, part: int) -> StartNode:
        """startPart's arguments (as a StartNode whose out_root is the part's root and out_proof
        the part base root's proof, its base root in `part_base`)."""
        info = self.infos[k]
        run = self.node_run(k, part)
        leaves_lo = self.trace.leaves(k)
        from vm.merkle import list_proof

        base, proof = part_base_proof(self.build, k, part)
        return StartNode(
            node=k, info=info, node_proof=node_proof(self.build, k), out_root=run.output_root, out_proof=proof,
            input_roots=[self.trace.roots[v] for v in info.input_values],
            input_proofs=[list_proof(leaves_lo, v) for v in info.input_values],
            splice_proofs=run.splice_proofs(), final_state=run.final_state(),
            out_region_proof=run.output_region_proof(), log2_steps=run.log2_steps, part=part, part_base=base)

    def step_hash(self, k: int, i: int, part: int | None = None) -> bytes:
        return self.node_run(k, part).hash_at(i)


MOVES = ("honest", "random", "bad-proof")


class Verifier(_Side):
    """The challenger's side: agrees with what matches its own view.

    `tamper` makes it believe (and so dispute) a wrong value; `moves="random"` answers the
    bisection at random; `moves="bad-proof"` sends a corrupted proof in the last step.
    """

    def __init__(self, build: Build, inputs: list[np.ndarray], tamper: Tamper | None = None,
                 moves: str = "honest", seed: int = 0) -> None:
        if moves not in MOVES:
            raise ValueError(f"moves must be one of {MOVES}")
        believed = compute_values(build, inputs, tamper)
        roots = GraphTrace.of_values(build, believed).roots
        super().__init__(build, inputs, roots, believed)
        self.moves = moves
        self.rng = random.Random(seed)

    def agree_trace(self, i: int, claimed: bytes) -> bool:
        if self.moves == "random":
            return self.rng.random() < 0.5
        return self.trace.state(i) == claimed

    def pick_part(self, k: int, depth: int, index: int, left: bytes, right: bytes) -> bool:
        """Which half of split node k's disputed subtree to dispute: True for the right one
        (the left one when it differs from this side's)."""
        if self.moves == "random":
            return self.rng.random() < 0.5
        return self.part_root(k, depth + 1, 2 * index) == left

    def agree_step(self, k: int, i: int, claimed: bytes, part: int | None = None) -> bool:
        if self.moves == "random":
            return self.rng.random() < 0.5
        return self.node_run(k, part).hash_at(i) == claimed

    def prove_step(self, k: int, i: int, part: int | None = None) -> tuple[bytes, bytes]:
        """(pre_state, proof) of the step from i to i + 1 of node k's (or its part's) honest
        execution."""
        w = self.node_run(k, part).witness(i)
        proof = w.proof
        if self.moves == "bad-proof":
            proof = bytes([proof[0] ^ 1]) + proof[1:]  # a tampered leaf: the contract must reject it
        return w.pre_state, proof
