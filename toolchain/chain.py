"""Chain access for opmlc: an embedded py-evm chain by default, or any JSON-RPC node by URL.

This is the bottom of the on-chain side of the pipeline: the dispute code and the CLI get a
`Chain` from `connect()`, deploy the committed contract artifacts with `deploy()`, and call them
through web3. `execution_gas()` measures the gas a call spends inside the EVM, beyond its transaction's
intrinsic gas, which is how bench/gas.py and `opmlc verify-step` report the cost of `MIPS.step`.

The embedded chain runs py-evm's Cancun rules, the fork the contracts are compiled for. A
receipt's gas used minus intrinsic gas would isolate the execution only under Cancun: from Prague
on (EIP-7623) a call with much calldata and little computation pays a calldata floor instead. So
execution gas is measured inside the EVM (contracts/src/GasMeter.sol), and means the same on
every chain.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

from eth_abi import decode as abi_decode
from eth_utils import keccak
from web3 import Web3
from web3.contract import Contract
from web3.contract.contract import ContractFunction

from contracts import load_artifact
from toolchain.errors import ChainError, ContractReverted

# Gas of a transaction before it executes anything (yellow paper G_transaction, EIP-2028 calldata).
TX_BASE_GAS = 21_000
CALLDATA_ZERO_BYTE_GAS = 4
CALLDATA_NONZERO_BYTE_GAS = 16
# EIP-7623 (Prague): a transaction pays at least this per calldata token (zero byte = 1 token,
# other byte = 4 tokens); when that floor wins, execution gas cannot be read off a receipt.
CALLDATA_FLOOR_GAS_PER_TOKEN = 10

# The embedded chain's block gas limit: room for large deployments and long calls in tests.
EMBEDDED_BLOCK_GAS_LIMIT = 60_000_000
# Seconds to wait for a JSON-RPC node's first answer before calling it unreachable.
RPC_TIMEOUT_S = 10


@dataclass
class Chain:
    """A connection to a chain plus the account that pays for deployments and transactions."""

    w3: Web3
    url: str | None  # None for the embedded chain
    accounts: list[str]
    # Deployed contracts by artifact name, reused by `deploy(..., reuse=True)`.
    deployed: dict[str, Contract] = field(default_factory=dict)

    @property
    def embedded(self) -> bool:
        return self.url is None

    @property
    def sender(self) -> str:
        """The default funded account."""
        if not self.accounts:
            raise ChainError(f"the node at {self.url} has no unlocked account to send from")
        return self.accounts[0]

    def describe(self) -> str:
        return "embedded py-evm chain (Cancun)" if self.embedded else f"JSON-RPC node at {self.url}"


def _embedded_web3() -> Web3:
    from eth.vm.forks import CancunVM
    from eth_tester import EthereumTester, PyEVMBackend
    from eth_tester.backends.pyevm.main import get_default_genesis_params
    from web3.providers.eth_tester import EthereumTesterProvider

    genesis = get_default_genesis_params(overrides={"gas_limit": EMBEDDED_BLOCK_GAS_LIMIT})
    backend = PyEVMBackend(genesis_parameters=genesis, vm_configuration=((0, CancunVM),))
    return Web3(EthereumTesterProvider(EthereumTester(backend)))


def _rpc_web3(url: str) -> Web3:
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ChainError(f"not a JSON-RPC URL: {url!r} (expected http://host:port or https://...)")
    try:
        parsed.port  # noqa: B018 - raises ValueError on a port that is not a number
    except ValueError:
        raise ChainError(f"not a JSON-RPC URL: {url!r} (bad port)") from None
    w3 = Web3(Web3.HTTPProvider(url, request_kwargs={"timeout": RPC_TIMEOUT_S}))
    try:
        w3.eth.chain_id  # noqa: B018 - the first request tells a live node from a dead URL
    except Exception as exc:  # any transport or protocol failure means the same to the user
        raise ChainError(f"cannot reach a JSON-RPC node at {url} ({unreachable_reason(exc)}); start the node "
                         "or correct --rpc, or leave --rpc out to use the embedded chain") from None
    return w3


def unreachable_reason(exc: BaseException) -> str:
    """Why a first request failed, in a few words, without the HTTP stack's internals: the
    innermost OS error (connection refused, name not known), a timeout, an HTTP status, or a
    reply that is not JSON-RPC."""
    seen, stack, found = set(), [exc], []
    while stack:  # the exception, its causes and contexts, and exceptions among their args
        e = stack.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        found.append(e)
        stack.extend(a for a in getattr(e, "args", ()) if isinstance(a, BaseException))
        stack.extend(c for c in (e.__cause__, e.__context__, getattr(e, "reason", None)) if isinstance(c, BaseException))
    for e in found:
        if isinstance(e, TimeoutError) or "Timeout" in type(e).__name__:
            return f"no answer within {RPC_TIMEOUT_S} s"
    for e in found:
        if isinstance(e, OSError) and e.strerror:
            return e.strerror[0].lower() + e.strerror[1:]
    for e in found:
        status = getattr(getattr(e, "response", None), "status_code", None)
        if status is not None:
            return f"HTTP status {status}"
    return f"its reply is not JSON-RPC ({type(exc).__name__})"


def connect(rpc: str | None = None) -> Chain:
    """A chain to deploy and call opmlc's contracts on.

    `rpc=None` starts a fresh embedded chain (py-evm, funded test accounts, nothing to install);
    otherwise `rpc` is the HTTP(S) URL of a JSON-RPC node (anvil, hardhat, geth, a testnet), whose
    unlocked accounts (`eth_accounts`) pay. Raises ChainError, with a one-line message, for a
    malformed or unreachable URL.
    """
    w3 = _embedded_web3() if rpc is None else _rpc_web3(rpc)
    try:
        accounts = list(w3.eth.accounts)
    except Exception:  # a public node may refuse eth_accounts; then only calls work
        accounts = []
    return Chain(w3=w3, url=rpc, accounts=accounts)


def deploy(chain: Chain, name: str, *args: Any, reuse: bool = False) -> Contract:
    """Deploys the committed artifact `name` (e.g. "MIPS") and returns the contract.

    With `reuse=True` a contract this Chain already deployed under that name is returned instead.
    """
    if reuse and name in chain.deployed:
        return chain.deployed[name]
    artifact = load_artifact(name)
    factory = chain.w3.eth.contract(abi=artifact["abi"], bytecode=artifact["bytecode"])
    try:
        tx_hash = factory.constructor(*args).transact({"from": chain.sender})
        receipt = chain.w3.eth.wait_for_transaction_receipt(tx_hash)
    except ChainError:
        raise
    except Exception as exc:
        raise ChainError(f"deploying {name} on the {chain.describe()} failed: {exc}") from None
    if receipt["status"] != 1:
        raise ChainError(f"deploying {name} on the {chain.describe()} reverted")
    contract = chain.w3.eth.contract(address=receipt["contractAddress"], abi=artifact["abi"])
    chain.deployed[name] = contract
    return contract


def intrinsic_gas(calldata: bytes) -> int:
    """Gas a call transaction pays before executing: base cost plus calldata (EIP-2028)."""
    zeros = calldata.count(0)
    return (
        TX_BASE_GAS
        + CALLDATA_ZERO_BYTE_GAS * zeros
        + CALLDATA_NONZERO_BYTE_GAS * (len(calldata) - zeros)
    )


def calldata_floor_gas(calldata: bytes) -> int:
    """The least gas a transaction with this calldata pays under EIP-7623 (Prague and later)."""
    zeros = calldata.count(0)
    tokens = zeros + 4 * (len(calldata) - zeros)
    return TX_BASE_GAS + CALLDATA_FLOOR_GAS_PER_TOKEN * tokens


@dataclass(frozen=True)
class GasMeasurement:
    """The gas of one call, with one meaning on every chain.

    `execution` is the gas spent inside the callee's frame, measured by GasMeter.sol within the
    EVM: what a transaction calling it spends beyond its intrinsic gas (the figure Cannon and ORA
    report per step). It does not depend on how a chain prices transactions, so the embedded
    chain, anvil under Cancun or Prague, and a testnet give the same number for the same call.
    `intrinsic` is the 21,000 base plus the calldata charge (EIP-2028); `calldata_floor` the
    least a Prague (EIP-7623) transaction with this calldata pays.
    """

    execution: int
    intrinsic: int
    calldata_floor: int

    @property
    def cancun_transaction(self) -> int:
        """Gas used by a transaction making this call, under Cancun rules."""
        return self.intrinsic + self.execution

    @property
    def prague_transaction(self) -> int:
        """Gas used by a transaction making this call, under Prague rules (calldata floor)."""
        return max(self.cancun_transaction, self.calldata_floor)


def execution_gas(chain: Chain, call: ContractFunction) -> GasMeasurement:
    """Measures `call`'s execution gas with GasMeter.sol (deployed once per Chain), by eth_call.

    Nothing is sent or stored. The call must succeed; a revert raises ChainError.
    """
    calldata = bytes.fromhex(call._encode_transaction_data()[2:])
    meter = deploy(chain, "GasMeter", reuse=True)
    try:
        used, _ = meter.functions.measure(call.address, calldata).call({"from": chain.sender})
    except Exception as exc:
        if revert_data(exc) is not None:
            raise ChainError(f"the measured call reverted on the {chain.describe()}") from None
        raise ChainError(f"the measured call failed on the {chain.describe()}: {exc}") from None
    return GasMeasurement(
        execution=int(used),
        intrinsic=intrinsic_gas(calldata),
        calldata_floor=calldata_floor_gas(calldata),
    )


def revert_data(exc: BaseException) -> bytes | None:
    """The raw revert data carried by a failed call's exception, whichever provider raised it.

    A JSON-RPC node's error gives it as hex (web3 puts it in `exc.data`); eth-tester, under the
    embedded chain, only formats the bytes into its message ("execution reverted: b'...'").
    """
    data = getattr(exc, "data", None)
    if isinstance(data, str) and data.startswith("0x"):
        try:
            return bytes.fromhex(data[2:])
        except ValueError:
            return None
    if isinstance(data, bytes | bytearray):
        return bytes(data)
    message = str(exc.args[0]) if exc.args else ""
    prefix = "execution reverted: "
    if message.startswith(prefix) and message[len(prefix) :].startswith(("b'", 'b"')):
        try:
            value = ast.literal_eval(message[len(prefix) :])
        except (ValueError, SyntaxError):
            return None
        return value if isinstance(value, bytes) else None
    return None


def decode_revert(abi: list[dict[str, Any]], data: bytes) -> tuple[str, tuple[Any, ...]] | None:
    """(error name, arguments) of revert data that matches a custom error of `abi`."""
    for item in abi:
        if item.get("type") != "error":
            continue
        types = [i["type"] for i in item["inputs"]]
        if data[:4] == keccak(text=f"{item['name']}({','.join(types)})")[:4]:
            return item["name"], tuple(abi_decode(types, data[4:]))
    return None


def call(fn: ContractFunction) -> Any:
    """`fn.call()` (eth_call), with a revert raised as ContractReverted naming the custom error.

    Any other failure (transport, node) raises ChainError.
    """
    try:
        return fn.call()
    except Exception as exc:
        data = revert_data(exc)
        if data is None:
            raise ChainError(f"call of {fn.fn_name} failed: {exc}") from None
        decoded = decode_revert(fn.contract_abi, data)
        name, args = decoded if decoded else (None, ())
        raise ContractReverted(fn.fn_name, name, args, data) from None
