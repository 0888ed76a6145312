"""A deployment made once and reused: the file `opmlc deploy` writes, and the input store.

Where it sits: above opmlc/dispute/onchain.py (the `Deployment` handle the parties act on) and
below the CLI and the long-running services (opmlc/dispute/service.py). `deploy()` puts MIPS.sol
and the TaskRegistry on a JSON-RPC node and records them in a `DeploymentFile` (addresses, chain
id, first block, the RPC URL and the settings); every other command opens that file with
`open_deployment()`, which checks that the node is the same chain and that the registry is there.

Requests carry only the input tensors' roots on chain. The inputs themselves travel through an
`InputStore`, a directory shared by requesters, servers and challengers (in production: any blob
store or data-availability layer) holding each input as `<root>.npy`; a reader re-derives the
root and ignores a file that does not match, so the store need not be trusted.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from web3 import Web3

from contracts import load_artifact
from opmlc.artifact import Build
from opmlc.dispute.onchain import (
    DEFAULT_BACKED_GAMES,
    DEFAULT_BOND,
    DEFAULT_CLOCK,
    DEFAULT_WINDOW,
    Deployment,
)
from opmlc.errors import OpmlcError
from toolchain.chain import Chain, connect
from toolchain.errors import ChainError

FORMAT = "opmlc-deployment/1"


class DeploymentError(OpmlcError):
    """A deployment file that is missing, malformed, or does not match the node."""


@dataclass
class DeploymentFile:
    """What `opmlc deploy -o FILE` records. `store` is the input store, relative to the file."""

    chain_id: int
    rpc: str
    registry: str
    mips: str
    first_block: int
    bond: int  # each side's stake in a game; a result carries bond × backed_games
    challenge_window: int
    clock: int
    backed_games: int = DEFAULT_BACKED_GAMES
    store: str = "inputs"
    path: Path | None = None  # where it was read from or written to (not saved)

    def to_json(self) -> dict:
        doc = {k: v for k, v in asdict(self).items() if k != "path"}
        return {"format": FORMAT, **doc}

    def save(self, path: str | Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_json(), indent=2) + "\n")
        self.path = path

    @classmethod
    def load(cls, path: str | Path) -> DeploymentFile:
        path = Path(path)
        try:
            doc = json.loads(path.read_text())
        except FileNotFoundError:
            raise DeploymentError(f"deployment file {path} not found: make one with "
                                  f"`opmlc deploy --rpc URL -o {path}`") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DeploymentError(f"deployment file {path} is not JSON ({type(exc).__name__})") from None
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise DeploymentError(f"{path} is not an opmlc deployment file (format {FORMAT!r})")
        try:
            info = cls(**{k: doc[k] for k in ("chain_id", "rpc", "registry", "mips", "first_block", "bond",
                                              "challenge_window", "clock")}, store=doc.get("store", "inputs"),
                       backed_games=doc.get("backed_games", DEFAULT_BACKED_GAMES))
        except (KeyError, TypeError) as exc:
            raise DeploymentError(f"deployment file {path} lacks {exc}") from None
        for name in ("registry", "mips"):
            if not Web3.is_address(getattr(info, name)):
                raise DeploymentError(f"deployment file {path}: {name} {getattr(info, name)!r} is not an address")
        info.path = path
        return info

    def store_dir(self) -> Path:
        base = self.path.parent if self.path is not None else Path.cwd()
        return base / self.store


def deploy(chain: Chain, bond: int = DEFAULT_BOND, window: int = DEFAULT_WINDOW, clock: int = DEFAULT_CLOCK,
           store: str = "inputs", backed_games: int = DEFAULT_BACKED_GAMES) -> tuple[Deployment, DeploymentFile]:
    """Deploy MIPS.sol and a TaskRegistry from `chain.sender`; the handle and its record."""
    if chain.embedded:
        raise DeploymentError("a deployment is for a JSON-RPC node: pass --rpc URL")
    if bond < 0 or window <= 0 or clock <= 0 or backed_games <= 0:
        raise DeploymentError("--bond must be ≥ 0, --window, --clock and --backed-games > 0")
    first_block = int(chain.w3.eth.block_number) + 1
    d = Deployment.create(chain, bond=bond, window=window, clock=clock, backed_games=backed_games)
    info = DeploymentFile(chain_id=int(chain.w3.eth.chain_id), rpc=chain.url, registry=d.registry.address,
                          mips=chain.deployed["MIPS"].address, first_block=first_block, bond=bond,
                          challenge_window=window, clock=clock, backed_games=backed_games, store=store)
    return d, info


def open_deployment(info: DeploymentFile, rpc: str | None = None) -> Deployment:
    """Connect to the deployment's node (or `rpc`) and check it is the recorded one."""
    chain = connect(rpc or info.rpc)
    chain_id = int(chain.w3.eth.chain_id)
    if chain_id != info.chain_id:
        raise DeploymentError(f"the node at {chain.url} is chain {chain_id}, the deployment "
                              f"{info.path or ''} is on chain {info.chain_id}")
    address = Web3.to_checksum_address(info.registry)
    if not chain.w3.eth.get_code(address):
        raise DeploymentError(f"no contract at {address} on the node at {chain.url}: was the chain "
                              "restarted? deploy again with `opmlc deploy`")
    registry = chain.w3.eth.contract(address=address, abi=load_artifact("TaskRegistry")["abi"])
    return Deployment(chain, registry)


class InputStore:
    """Input tensors by their (quantized) tensor roots, as the requester gave them (float)."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)

    @staticmethod
    def roots(build: Build, inputs: list[np.ndarray]) -> list[bytes]:
        from opmlc.api import quantize_inputs
        from opmlc.commit import tensor_root

        g = build.graph
        q = quantize_inputs(build, inputs)
        return [tensor_root(a, g.values[v].type) for v, a in zip(g.inputs, q, strict=True)]

    def put(self, build: Build, inputs: list[np.ndarray]) -> list[bytes]:
        roots = self.roots(build, inputs)
        self.directory.mkdir(parents=True, exist_ok=True)
        for root, arr in zip(roots, inputs, strict=True):
            path = self.directory / f"{root.hex()}.npy"
            if not path.exists():
                tmp = path.with_suffix(".tmp.npy")
                np.save(tmp, np.asarray(arr))
                tmp.replace(path)  # a reader never sees half a file
        return roots

    def get(self, build: Build, roots: list[bytes]) -> list[np.ndarray] | None:
        """The inputs with these roots, or None while any is missing or does not match."""
        try:
            arrays = [np.load(self.directory / f"{bytes(r).hex()}.npy") for r in roots]
        except (OSError, ValueError):
            return None
        try:
            if self.roots(build, arrays) != [bytes(r) for r in roots]:
                return None
        except OpmlcError:
            return None
        return arrays


def require_rpc(rpc: str | None, info: DeploymentFile | None) -> str:
    if rpc is None and info is None:
        raise ChainError("no chain: pass --deployment FILE (from `opmlc deploy`) or --rpc URL")
    return rpc or info.rpc
