"""The contracts on a real JSON-RPC node: anvil (npm @foundry-rs/anvil) started on 127.0.0.1 at
a free port, with the differential test and a named revert run through `connect(url)`."""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest
from sol_assert import assert_reverts_with
from sol_cases import MNEMONICS, SPECIAL_CASES, random_case
from web3.contract import Contract

from toolchain.anvil import Anvil, find_anvil
from toolchain.chain import Chain, call, connect, deploy, execution_gas
from vm.witness import step_with_proof

pytestmark = pytest.mark.skipif(
    find_anvil() is None, reason="anvil not installed (npm install in toolchain/, or foundry on PATH)"
)

CASES_PER_MNEMONIC = 3


@pytest.fixture(scope="module")
def anvil_chain() -> Iterator[Chain]:
    with Anvil() as url:
        yield connect(url)


@pytest.fixture(scope="module")
def anvil_mips(anvil_chain: Chain) -> Contract:
    return deploy(anvil_chain, "MIPS")


def test_contract_post_state_matches_vm_on_anvil(anvil_mips: Contract) -> None:
    rng = random.Random("anvil")
    for name in MNEMONICS + tuple(SPECIAL_CASES):
        make = SPECIAL_CASES.get(name)
        for i in range(CASES_PER_MNEMONIC):
            w = step_with_proof(make(rng) if make else random_case(name, rng))
            assert call(anvil_mips.functions.step(w.pre_state, w.proof)) == w.post_hash, (name, i)


def test_bad_proof_reverts_with_named_error_on_anvil(anvil_mips: Contract) -> None:
    w = step_with_proof(random_case("lw", random.Random(0)))
    proof = bytearray(w.proof)
    proof[40] ^= 1  # a sibling of the fetch proof, which every running step reads
    assert_reverts_with("InvalidMemoryProof", anvil_mips.functions.step(w.pre_state, bytes(proof)))
    assert_reverts_with("InvalidStateLength", anvil_mips.functions.step(w.pre_state[:-1], w.proof))


def test_execution_gas_on_anvil_matches_embedded(anvil_chain: Chain, anvil_mips: Contract) -> None:
    embedded = connect(None)
    mips = deploy(embedded, "MIPS")
    w = step_with_proof(random_case("sw", random.Random(5)))
    on_anvil = execution_gas(anvil_chain, anvil_mips.functions.step(w.pre_state, w.proof))
    here = execution_gas(embedded, mips.functions.step(w.pre_state, w.proof))
    assert on_anvil.execution == here.execution and not on_anvil.floor_bound
