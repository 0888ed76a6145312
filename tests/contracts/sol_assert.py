"""Assertions about contract reverts, for tests/contracts (test support only)."""

from __future__ import annotations

import pytest
from web3.contract.contract import ContractFunction

from toolchain.chain import call
from toolchain.errors import ContractReverted


def assert_reverts_with(error: str, fn: ContractFunction) -> ContractReverted:
    """Calls `fn`, which must revert with the custom error named `error`; returns the revert."""
    with pytest.raises(ContractReverted) as info:
        call(fn)
    assert info.value.error == error, str(info.value)
    return info.value
