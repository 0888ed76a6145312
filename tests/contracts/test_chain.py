"""toolchain.chain: the embedded chain works out of the box, a bad RPC URL is a one-line
ChainError, and execution gas, measured inside the EVM, is what a Cancun transaction spends
beyond its intrinsic gas."""

from __future__ import annotations

import pytest
from web3.contract import Contract

from toolchain.anvil import free_port
from toolchain.chain import Chain, connect, deploy, execution_gas, intrinsic_gas
from toolchain.errors import ChainError
from vm.state import State
from vm.witness import step_with_proof


@pytest.mark.parametrize("url", ["localhost:8545", "ftp://127.0.0.1:1", "http://", "http://h:x"])
def test_malformed_rpc_url_is_a_one_line_error(url: str) -> None:
    with pytest.raises(ChainError, match="not a JSON-RPC URL") as info:
        connect(url)
    assert "\n" not in str(info.value)


def test_unreachable_rpc_url_is_a_one_line_error() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(ChainError, match="cannot reach a JSON-RPC node") as info:
        connect(url)
    assert "\n" not in str(info.value) and url in str(info.value)


def test_embedded_chain_has_funded_accounts(chain: Chain) -> None:
    assert chain.embedded and len(chain.accounts) >= 2
    assert chain.w3.eth.get_balance(chain.sender) > 10**18


def test_deploy_reuses_on_request(chain: Chain, mips: Contract) -> None:
    again = deploy(chain, "MIPS", reuse=True)
    assert again.address == chain.deployed["MIPS"].address


def test_intrinsic_gas_counts_zero_and_nonzero_calldata() -> None:
    assert intrinsic_gas(b"") == 21_000
    assert intrinsic_gas(b"\x00\x01\x00") == 21_000 + 4 + 16 + 4


@pytest.mark.parametrize("insn", [0x00221821, 0xAC430010], ids=["addu", "sw"])
def test_execution_gas_is_a_cancun_transactions_gas_beyond_its_intrinsic_gas(
    chain: Chain, mips: Contract, insn: int
) -> None:
    state = State()
    state.memory.write_u32(0, insn)
    w = step_with_proof(state)
    fn = mips.functions.step(w.pre_state, w.proof)
    m = execution_gas(chain, fn)
    receipt = chain.w3.eth.wait_for_transaction_receipt(fn.transact({"from": chain.sender}))
    assert receipt["gasUsed"] == m.cancun_transaction == m.intrinsic + m.execution
    assert 1_000 < m.execution < 50_000
    assert m.prague_transaction == max(m.cancun_transaction, m.calldata_floor)


def test_execution_gas_of_a_reverting_call_is_a_one_line_error(chain: Chain, mips: Contract) -> None:
    with pytest.raises(ChainError, match="reverted") as info:
        execution_gas(chain, mips.functions.step(b"\x00", b""))
    assert "\n" not in str(info.value)
