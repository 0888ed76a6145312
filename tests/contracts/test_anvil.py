"""The contracts on a real JSON-RPC node: anvil (npm @foundry-rs/anvil) started on 127.0.0.1 at
a free port, with the differential test and a named revert run through `connect(url)`."""

from __future__ import annotations

import json
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


@pytest.mark.parametrize("hardfork", ["cancun", "prague"])
def test_execution_gas_is_the_same_on_anvil_under_any_fork_as_embedded(hardfork: str) -> None:
    """Under Prague a step transaction pays EIP-7623's calldata floor, so gas used minus
    intrinsic gas would differ from Cancun's by ~18,000; the measured execution gas does not."""
    embedded = connect(None)
    mips = deploy(embedded, "MIPS")
    steps = [step_with_proof(random_case(name, random.Random(5))) for name in ("addu", "sw", "madd")]
    here = [execution_gas(embedded, mips.functions.step(w.pre_state, w.proof)) for w in steps]
    with Anvil(hardfork=hardfork) as url:
        chain = connect(url)
        on_anvil_mips = deploy(chain, "MIPS")
        there = [execution_gas(chain, on_anvil_mips.functions.step(w.pre_state, w.proof)) for w in steps]
        fn = on_anvil_mips.functions.step(steps[0].pre_state, steps[0].proof)
        receipt = chain.w3.eth.wait_for_transaction_receipt(fn.transact({"from": chain.sender}))
    assert [m.execution for m in there] == [m.execution for m in here]
    expected_tx = there[0].prague_transaction if hardfork == "prague" else there[0].cancun_transaction
    assert receipt["gasUsed"] == expected_tx
    if hardfork == "prague":  # the floor is what made receipts disagree
        assert receipt["gasUsed"] - there[0].intrinsic != there[0].execution


def test_verify_step_reports_one_execution_gas_on_embedded_and_on_anvil_under_prague(tmp_path) -> None:
    """The reported case: one witness, `opmlc verify-step` on the embedded chain and on an anvil
    running Prague, must print the same execution gas."""
    from typer.testing import CliRunner

    from opmlc.cli import app

    path = tmp_path / "w.json"
    path.write_text(step_with_proof(random_case("lw", random.Random(7))).to_json())
    runner = CliRunner()
    here = runner.invoke(app, ["verify-step", str(path), "--json"])
    with Anvil(hardfork="prague") as url:
        there = runner.invoke(app, ["verify-step", str(path), "--json", "--rpc", url])
        text = runner.invoke(app, ["verify-step", str(path), "--rpc", url])
    assert here.exit_code == there.exit_code == text.exit_code == 0, there.output
    a, b = json.loads(here.stdout), json.loads(there.stdout)
    assert a["gas"] == b["gas"] and a["prague_transaction_gas"] > a["cancun_transaction_gas"]
    assert f"execution gas {a['gas']} on the JSON-RPC node" in text.stdout
