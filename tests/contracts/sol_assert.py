"""Assertions about contract reverts, for tests/contracts (test support only)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from eth_utils import keccak
from web3.contract import Contract
from web3.exceptions import ContractCustomError


def error_selector(contract: Contract, name: str) -> bytes:
    """The 4-byte selector of custom error `name` in the contract's ABI."""
    for item in contract.abi:
        if item.get("type") == "error" and item["name"] == name:
            types = ",".join(i["type"] for i in item["inputs"])
            return keccak(text=f"{name}({types})")[:4]
    raise AssertionError(f"{name} is not an error of this contract's ABI")


def assert_reverts_with(contract: Contract, name: str, call: Callable[[], Any]) -> bytes:
    """Runs `call`, which must revert with custom error `name`; returns the revert data."""
    with pytest.raises(ContractCustomError) as info:
        call()
    data = info.value.data
    raw = bytes.fromhex(data[2:] if isinstance(data, str) else data.hex())
    assert raw[:4] == error_selector(contract, name), f"reverted with 0x{raw.hex()}, not {name}"
    return raw
