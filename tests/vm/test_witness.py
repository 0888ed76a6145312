"""step_with_proof gives what MIPS.step needs: re-executing from the witness alone (the
pre-state bytes and the proofs, no memory) reaches the witness's post-state hash."""

from __future__ import annotations

import pytest

from vm import asm
from vm.loader import initial_state
from vm.merkle import root_from_proof
from vm.state import STATE_BYTES, State, decode, state_hash
from vm.step import LOAD_OPS, STORE_OPS, step
from vm.witness import StepWitness, step_with_proof

PROOF = 28 * 32


class ProofMemory:
    """Memory known only through proofs, as the contract knows it: reads check a proof
    against the current root, a write recomputes the root from the same proof's siblings."""

    def __init__(self, root: bytes, proofs: list[tuple[int, bytes]]) -> None:
        self._root = root
        self.proofs = proofs  # (aligned address, proof bytes)

    def _find(self, addr: int) -> tuple[bytes, list[bytes]]:
        for a, proof in self.proofs:
            if a >> 5 == addr >> 5:
                leaf = proof[:32]
                siblings = [proof[32 * i : 32 * i + 32] for i in range(1, 28)]
                assert root_from_proof(leaf, addr >> 5, siblings) == self._root, "bad proof"
                return leaf, siblings
        raise AssertionError(f"no proof for {addr:#x}")

    def read_u32(self, addr: int) -> int:
        leaf, _ = self._find(addr)
        return int.from_bytes(leaf[addr & 31 : (addr & 31) + 4], "big")

    def write_u32(self, addr: int, value: int) -> None:
        leaf, siblings = self._find(addr)
        o = addr & 31
        leaf = leaf[:o] + value.to_bytes(4, "big") + leaf[o + 4 :]
        self._root = root_from_proof(leaf, addr >> 5, siblings)
        # Like the contract, only the written proof is updated; the fetch proof is spent.
        self.proofs = [(addr & ~31, leaf + b"".join(siblings))]

    def root(self) -> bytes:
        return self._root


def replay(w: StepWitness) -> bytes:
    """The post-state hash computed from the witness alone, the way MIPS.step would."""
    assert len(w.pre_state) == STATE_BYTES
    d = decode(w.pre_state)
    proofs = [(d.pc & ~3, w.proof[:PROOF])]
    insn_known = not d.exited and not d.pc & 3
    if insn_known:
        op = int.from_bytes(w.proof[(d.pc & 28) : (d.pc & 28) + 4], "big") >> 26
        if op in LOAD_OPS or op in STORE_OPS:
            assert len(w.proof) == 2 * PROOF
            proofs.append((-1, w.proof[PROOF:]))  # address recomputed below
        else:
            assert len(w.proof) == PROOF
    state = State(
        ProofMemory(d.mem_root, proofs),  # type: ignore[arg-type]
        d.pc,
        d.next_pc,
        d.lo,
        d.hi,
        d.step,
        d.exit_code,
        d.exited,
        list(d.regs),
    )
    if len(proofs) == 2:
        insn = state.memory.read_u32(d.pc)
        addr = (d.regs[(insn >> 21) & 31] + ((insn & 0xFFFF) ^ 0x8000) - 0x8000) & 0xFFFFFFFC
        proofs[1] = (addr, proofs[1][1])
    step(state)
    return state.hash()


def test_every_step_of_the_demo_program_replays_from_its_witness():
    state = initial_state(asm.demo_program(vectors=2, length=6))
    kinds = set()
    while True:
        exited = state.exited
        pre_hash = state.hash()
        w = step_with_proof(state)
        assert w.pre_hash == pre_hash == state_hash(w.pre_state)
        assert w.post_hash == state.hash()
        assert replay(w) == w.post_hash
        kinds.add(len(w.proof))
        if exited:
            assert w.post_hash == w.pre_hash
            break
    assert kinds == {PROOF, 2 * PROOF}


@pytest.mark.parametrize(
    "words,regs",
    [
        ([asm.imm("lw", 2, 4, 2)], {4: 0x10000000}),  # misaligned: panics, data proof given
        ([asm.imm("swr", 5, 4, 7)], {4: 0x10000000, 5: 0xAABBCCDD}),
        ([asm.imm("sb", 5, 4, 0)], {4: 0x00400000, 5: 0xEE}),  # store into its own word
        ([asm.special("break")], {}),
        ([asm.special("syscall")], {2: 4001, 4: 1}),
    ],
)
def test_witness_of_single_instructions_replays(words, regs):
    from vm.memory import Memory

    mem = Memory()
    for i, w in enumerate(words):
        mem.write_u32(0x00400000 + 4 * i, w)
    mem.write_u32(0x10000000, 0x01020304)
    state = State(mem, pc=0x00400000, next_pc=0x00400004)
    for r, v in regs.items():
        state.regs[r] = v
    w = step_with_proof(state)
    assert replay(w) == w.post_hash == state.hash()


def test_witness_json_round_trips():
    state = initial_state(asm.demo_program())
    w = step_with_proof(state)
    text = w.to_json()
    assert '"pre_state": "0x' in text
    assert StepWitness.from_json(text) == w
