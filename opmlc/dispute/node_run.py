"""Phase 2 of a dispute from a party's side: one node run as its own VM task.

Holds the task's checkpointed execution (vm.checkpoint.Trace) on the operands the parties
agreed in phase 1, and derives what the game asks of it: the splice proofs of the hand-off,
the final state and its output-region proof, the state hash after any step, and the witness of
the disputed step. A claimant that lies about the node's output keeps the honest execution but
shows a final state whose output region holds its claimed root (the only way to claim it).
"""

from __future__ import annotations

import math

import numpy as np

from opmlc import progress
from opmlc.artifact import Build
from opmlc.dispute.commitment import NodeInfo
from opmlc.tasks import LayeredStore, base_state, initial_state, program_of, task_inputs
from vm.checkpoint import Trace
from vm.merkle import LEAF_BYTES, LEAF_SHIFT, MEMORY_DEPTH, root_from_proof
from vm.state import State, state_hash
from vm.witness import StepWitness, step_with_proof

MAX_STEPS = 1 << 40
MAX_LOG2_STEPS = 48


def region_siblings(state: State, addr: int, height: int) -> bytes:
    """The siblings from a region's level up to the memory root (27 − height of them)."""
    proof = state.memory.proof(addr)
    return proof[LEAF_BYTES * (1 + height) : LEAF_BYTES * (1 + MEMORY_DEPTH)]


class NodeRun:
    def __init__(self, build: Build, values: list[np.ndarray], node: int, info: NodeInfo,
                 claimed_output_root: bytes | None = None, interval: int = 1 << 16,
                 part: int | None = None) -> None:
        # part: part j of a split node (its task's output region is the part's slice, and
        # `claimed_output_root` the part's root)
        self.build, self.node, self.info, self.part = build, node, info, part
        self.values = values
        self.program = program_of(build)
        self.start = initial_state(build, values, node, self.program, part)
        self.trace = Trace(self.start, interval=interval)
        with progress.task(f"node {node}{'' if part is None else f' part {part}'}: running the VM (steps)") as bar:
            self.honest_final = self.trace.run(MAX_STEPS, lambda k: bar.update(completed=k))
        self.steps = self.honest_final.step
        self.log2_steps = max(1, math.ceil(math.log2(max(self.steps, 1))))
        if self.log2_steps > MAX_LOG2_STEPS:
            raise ValueError(f"node {node} runs {self.steps} steps, more than the game's 2^{MAX_LOG2_STEPS}")
        self._out_siblings = region_siblings(self.honest_final, info.output_addr, info.output_height)
        self.output_root = self.honest_final.memory.region_root(info.output_addr, 1 << (info.output_height + 5))
        self._final = self.honest_final.encode()
        if claimed_output_root is not None and claimed_output_root != self.output_root:
            # The only final state that shows another output: the honest one with the output
            # region's subtree replaced, which changes its memory root and nothing else.
            index = info.output_addr >> (LEAF_SHIFT + info.output_height)
            siblings = [self._out_siblings[i : i + 32] for i in range(0, len(self._out_siblings), 32)]
            mem_root = root_from_proof(claimed_output_root, index, siblings)
            self._final = mem_root + self._final[32:]
            self.output_root = claimed_output_root
        self._final_hash = state_hash(self._final)

    def hash_at(self, k: int) -> bytes:
        """This party's state hash after k steps (its final state from the exit on)."""
        if k >= self.steps:
            return self._final_hash
        return self.trace.hash_at(k)

    def splice_proofs(self) -> list[bytes]:
        """For each operand in the NodeInfo's order, its region's siblings in the base root with
        the previous operands already spliced in (what startNode checks)."""
        state = base_state(self.build, self.node, self.program, self.part)
        store = LayeredStore(self.build)
        roots = {addr: root for addr, _, root in task_inputs(self.build, self.values, self.node, store, self.part)}
        proofs = []
        for addr, h in zip(self.info.input_addrs, self.info.input_heights, strict=True):
            proofs.append(region_siblings(state, addr, h))
            state.memory.splice(addr, 1 << (h + 5), roots[addr], store)
        assert state.memory.root() == self.start.memory.root()
        return proofs

    def final_state(self) -> bytes:
        """The 186-byte final state this party claims."""
        return self._final

    def output_region_proof(self) -> bytes:
        return self._out_siblings

    def witness(self, k: int) -> StepWitness:
        """The witness of the step from k to k + 1, on the honest execution."""
        return step_with_proof(self.trace.state_at(k))
