"""MIPS.sol against the Python VM: for random pre-states of every instruction, the post-state
hash the contract returns is the VM's (vm.witness.step_with_proof)."""

from __future__ import annotations

import random

import pytest
from sol_cases import MNEMONICS, SPECIAL_CASES, random_case
from web3.contract import Contract

from vm.state import decode
from vm.witness import StepWitness, step_with_proof

CASES_PER_MNEMONIC = 12
CASES_PER_MNEMONIC_SLOW = 150


def check_step(mips: Contract, witness: StepWitness, label: str) -> None:
    got = mips.functions.step(witness.pre_state, witness.proof).call()
    if got != witness.post_hash:
        pre = decode(witness.pre_state)
        raise AssertionError(
            f"{label}: contract 0x{got.hex()} != VM 0x{witness.post_hash.hex()}\n"
            f"pre: pc=0x{pre.pc:08x} nextPC=0x{pre.next_pc:08x} lo=0x{pre.lo:08x} "
            f"hi=0x{pre.hi:08x} step={pre.step} regs={[hex(r) for r in pre.regs]}"
        )


def run_cases(mips: Contract, name: str, count: int, seed: int) -> None:
    rng = random.Random(f"{name}/{seed}")
    make = SPECIAL_CASES.get(name)
    for i in range(count):
        state = make(rng) if make else random_case(name, rng)
        insn = state.memory.read_u32(state.pc & ~3)
        check_step(mips, step_with_proof(state), f"{name} #{i} insn=0x{insn:08x}")


@pytest.mark.parametrize("name", MNEMONICS + tuple(SPECIAL_CASES))
def test_contract_post_state_matches_vm(mips: Contract, name: str) -> None:
    run_cases(mips, name, CASES_PER_MNEMONIC, seed=0)


@pytest.mark.slow
@pytest.mark.parametrize("name", MNEMONICS + tuple(SPECIAL_CASES))
def test_contract_post_state_matches_vm_many(mips: Contract, name: str) -> None:
    run_cases(mips, name, CASES_PER_MNEMONIC_SLOW, seed=1)
