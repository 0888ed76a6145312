"""Fixtures for the contract tests: one embedded chain per session with MIPS.sol deployed.

Where it sits: tests of contracts/ (the on-chain end of the pipeline) against vm/ (the Python
reference), through toolchain.chain. The chain and its contracts are shared by the whole
session: every contract function under test is pure, so tests cannot disturb each other.
"""

from __future__ import annotations

import pytest
from web3.contract import Contract

from toolchain.chain import Chain, connect, deploy


@pytest.fixture(scope="session")
def chain() -> Chain:
    return connect(None)


@pytest.fixture(scope="session")
def mips(chain: Chain) -> Contract:
    return deploy(chain, "MIPS")


@pytest.fixture(scope="session")
def harness(chain: Chain) -> Contract:
    return deploy(chain, "MemoryProofHarness")
