"""Step witnesses: what `MIPS.step(state, proof)` needs to re-execute one instruction on chain.

Pipeline: the dispute code finds the disputed step k (vm/checkpoint.py gives the state before
it), calls `step_with_proof`, and submits `pre_state` and `proof`; the contract's result must
equal `post_hash`. Format (DESIGN "Step proofs"):

- `pre_state`: the 186-byte encoding (vm/state.py);
- `proof`: the memory proof (28 × 32 bytes, vm/memory.py `proof`) of the word at pc & ~3,
  then, when the instruction's opcode is a load or a store, the proof of the aligned word it
  accesses; both are taken against the pre-state memory root. The data proof is present even
  when the access panics (misaligned lw/sw/lh/sh), so the contract's decoding depends only on
  the opcode. An exited state gets the fetch proof alone; a misaligned pc gets no data proof.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from vm.state import State, state_hash
from vm.step import MASK, data_address, step


@dataclass(frozen=True)
class StepWitness:
    """One step's pre-state, memory proofs and the hashes before and after."""

    pre_state: bytes
    proof: bytes
    pre_hash: bytes
    post_hash: bytes

    def to_json(self) -> str:
        """JSON object of 0x-prefixed hex strings, keys as the field names."""
        return json.dumps(
            {
                "pre_state": "0x" + self.pre_state.hex(),
                "proof": "0x" + self.proof.hex(),
                "pre_hash": "0x" + self.pre_hash.hex(),
                "post_hash": "0x" + self.post_hash.hex(),
            },
            indent=2,
        )

    @classmethod
    def from_json(cls, text: str) -> StepWitness:
        """Inverse of `to_json`."""
        obj = json.loads(text)

        def unhex(key: str) -> bytes:
            value = obj[key]
            return bytes.fromhex(value[2:] if value.startswith("0x") else value)

        return cls(unhex("pre_state"), unhex("proof"), unhex("pre_hash"), unhex("post_hash"))


def step_with_proof(state: State) -> StepWitness:
    """Execute one step of `state` in place and return its witness."""
    pre_state = state.encode()
    mem = state.memory
    pc = state.pc & MASK & ~3
    proof = mem.proof(pc)
    if not state.exited and not state.pc & 3:
        addr = data_address(state, mem.read_u32(pc))
        if addr is not None:
            proof += mem.proof(addr)
    step(state)
    return StepWitness(pre_state, proof, state_hash(pre_state), state.hash())
