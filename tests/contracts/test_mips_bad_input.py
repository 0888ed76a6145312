"""MIPS.step refuses malformed input with named custom errors, never a wrong hash: a state of
the wrong length, an `exited` byte other than 0/1, a memory proof that does not match the state's
memory root, a proof too short for the memory the step reads."""

from __future__ import annotations

import random

import pytest
from sol_assert import assert_reverts_with
from sol_cases import random_case
from web3.contract import Contract

from toolchain.chain import call
from vm.state import State
from vm.witness import StepWitness, step_with_proof

EXITED_AT = 57


def witness_of(name: str, seed: int = 0, **fields: int) -> StepWitness:
    """A step of a random `name` that does not panic on alignment or a delay slot."""
    rng = random.Random(seed)
    while True:
        state = random_case(name, rng)
        for key, value in fields.items():
            setattr(state, key, value)
        state.next_pc = (state.pc + 4) & 0xFFFFFFFF
        w = step_with_proof(state)
        if w.post_hash[0] == 3:  # still running: the instruction really executed
            return w


@pytest.mark.parametrize("length", [0, 1, 185, 187, 372])
def test_state_of_wrong_length_reverts(mips: Contract, length: int) -> None:
    w = witness_of("addu")
    state = (w.pre_state * 3)[:length]
    revert = assert_reverts_with("InvalidStateLength", mips.functions.step(state, w.proof))
    assert revert.error_args == (length,)


@pytest.mark.parametrize("exited", [2, 0x80, 0xFF])
def test_exited_byte_not_0_or_1_reverts(mips: Contract, exited: int) -> None:
    w = witness_of("addu")
    state = bytearray(w.pre_state)
    state[EXITED_AT] = exited
    revert = assert_reverts_with("InvalidExitedFlag", mips.functions.step(bytes(state), w.proof))
    assert revert.error_args == (exited,)


FETCH_PROOF_BYTES = (0, 28, 32 + 3, 896 - 1)  # the instruction's leaf, low and top siblings
DATA_PROOF_BYTES = (896, 896 + 31, 896 + 32 * 20, 1791)


@pytest.mark.parametrize(
    ("name", "where"),
    [("addu", b) for b in FETCH_PROOF_BYTES]
    + [(n, b) for n in ("lw", "sw", "sb") for b in FETCH_PROOF_BYTES + DATA_PROOF_BYTES],
)
def test_tampered_memory_proof_reverts(mips: Contract, name: str, where: int) -> None:
    w = witness_of(name)
    proof = bytearray(w.proof)
    proof[where] ^= 0x40
    assert_reverts_with("InvalidMemoryProof", mips.functions.step(w.pre_state, bytes(proof)))


def test_proof_of_another_memory_reverts(mips: Contract) -> None:
    """A proof that is internally consistent, but of another memory, does not pass."""
    w = witness_of("lw", seed=1)
    other = witness_of("lw", seed=2)
    for proof in (other.proof, w.proof[:896] + other.proof[896:]):
        assert_reverts_with("InvalidMemoryProof", mips.functions.step(w.pre_state, proof))


def test_tampered_memory_root_reverts(mips: Contract) -> None:
    w = witness_of("addu")
    state = bytes([w.pre_state[0] ^ 1]) + w.pre_state[1:]
    assert_reverts_with("InvalidMemoryProof", mips.functions.step(state, w.proof))


@pytest.mark.parametrize(
    ("name", "keep", "needed"),
    [("addu", 0, 896), ("addu", 895, 896), ("lw", 896, 1792), ("sw", 1791, 1792)],
)
def test_proof_too_short_reverts(mips: Contract, name: str, keep: int, needed: int) -> None:
    w = witness_of(name)
    revert = assert_reverts_with(
        "InvalidProofLength", mips.functions.step(w.pre_state, w.proof[:keep])
    )
    assert revert.error_args == (keep, needed)


def test_extra_proof_bytes_are_ignored(mips: Contract) -> None:
    w = witness_of("addu")
    assert call(mips.functions.step(w.pre_state, w.proof + bytes(896))) == w.post_hash


def test_exited_state_needs_no_proof(mips: Contract) -> None:
    state = State(exited=True, exit_code=1, step=5)
    w = step_with_proof(state)
    assert w.post_hash == w.pre_hash
    assert call(mips.functions.step(w.pre_state, b"")) == w.pre_hash
