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
from opmlc.dispute.commitment import NodeInfo, node_infos, node_proof
from opmlc.dispute.graph_trace import GraphTrace, Tamper
from opmlc.dispute.native_trace import check_engine, party_roots, task_operands
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

    def to_json(self) -> dict:
        hx = lambda b: "0x" + b.hex()  # noqa: E731
        return {
            "node": self.node,
            "info": {"base_root": hx(self.info.base_root), "input_values": list(self.info.input_values),
                     "input_addrs": list(self.info.input_addrs), "input_heights": list(self.info.input_heights),
                     "output_value": self.info.output_value, "output_addr": self.info.output_addr,
                     "output_height": self.info.output_height},
            "node_proof": [hx(x) for x in self.node_proof],
            "out_root": hx(self.out_root),
            "out_proof": [hx(x) for x in self.out_proof],
            "input_roots": [hx(x) for x in self.input_roots],
            "input_proofs": [[hx(x) for x in p] for p in self.input_proofs],
            "splice_proofs": [hx(x) for x in self.splice_proofs],
            "final_state": hx(self.final_state),
            "out_region_proof": hx(self.out_region_proof),
            "log2_steps": self.log2_steps,
        }


class _Side:
    """Shared by both roles: the party's own trace (its value roots only), node runs on demand.

    `engine` computes the trace and a node run's operands: "native" (the build's native
    program, streaming: opmlc/dispute/native_trace.py) or "interp" (the interpreter)."""

    def __init__(self, build: Build, inputs: list[np.ndarray], roots: list[bytes], engine: str = "native") -> None:
        self.build = build
        self.inputs = inputs
        self.engine = engine
        self.trace = GraphTrace(build, roots)
        self.infos = node_infos(build)
        self._runs: dict[int, NodeRun] = {}

    def node_run(self, k: int) -> NodeRun:
        """Node k run on the operands this side believes, showing the output it believes."""
        if k not in self._runs:
            info = self.infos[k]
            operands = task_operands(self.build, self.inputs, k, self.engine)
            self._runs[k] = NodeRun(self.build, operands, k, info,
                                    claimed_output_root=self.trace.roots[info.output_value])
        return self._runs[k]

    @property
    def vm_steps(self) -> int:
        """VM steps this side executed for its node runs."""
        return sum(r.steps for r in self._runs.values())


class Claimant(_Side):
    """The server's side. `tamper` makes it claim a wrong output for one node."""

    def __init__(self, build: Build, inputs: list[np.ndarray], tamper: Tamper | None = None,
                 roots: list[bytes] | None = None, engine: str = "native") -> None:
        check_engine(engine)
        if roots is None:
            roots = party_roots(build, inputs, tamper, engine)
        super().__init__(build, inputs, roots, engine)

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

    def step_hash(self, k: int, i: int) -> bytes:
        return self.node_run(k).hash_at(i)


MOVES = ("honest", "random", "bad-proof")


class Verifier(_Side):
    """The challenger's side: agrees with what matches its own view.

    `tamper` makes it believe (and so dispute) a wrong value; `moves="random"` answers the
    bisection at random; `moves="bad-proof"` sends a corrupted proof in the last step.
    """

    def __init__(self, build: Build, inputs: list[np.ndarray], tamper: Tamper | None = None,
                 moves: str = "honest", seed: int = 0, engine: str = "native",
                 roots: list[bytes] | None = None) -> None:
        if moves not in MOVES:
            raise ValueError(f"moves must be one of {MOVES}")
        check_engine(engine)
        if roots is None:
            roots = party_roots(build, inputs, tamper, engine)
        super().__init__(build, inputs, roots, engine)
        self.moves = moves
        self.rng = random.Random(seed)

    def agree_trace(self, i: int, claimed: bytes) -> bool:
        if self.moves == "random":
            return self.rng.random() < 0.5
        return self.trace.state(i) == claimed

    def agree_step(self, k: int, i: int, claimed: bytes) -> bool:
        if self.moves == "random":
            return self.rng.random() < 0.5
        return self.node_run(k).hash_at(i) == claimed

    def prove_step(self, k: int, i: int) -> tuple[bytes, bytes]:
        """(pre_state, proof) of the step from i to i + 1 of node k's honest execution."""
        w = self.node_run(k).witness(i)
        proof = w.proof
        if self.moves == "bad-proof":
            proof = bytes([proof[0] ^ 1]) + proof[1:]  # a tampered leaf: the contract must reject it
        return w.pre_state, proof
