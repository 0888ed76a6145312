"""opmlc's Solidity contracts and their committed build artifacts.

The last stage of the pipeline: `src/MIPS.sol` re-executes one disputed MIPS instruction on chain,
`src/MemoryProof.sol` checks and updates memory proofs, and the dispute contracts built on them
(`src/TaskRegistry.sol`, `src/DisputeGame.sol`) run the game. `toolchain/compile.js` compiles
them into `artifacts/<Name>.json` (abi, bytecode, deployedBytecode), which are committed so that
using opmlc needs neither Node nor solc; `load_artifact` reads them.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

CONTRACTS_DIR = Path(__file__).resolve().parent
SOURCE_DIR = CONTRACTS_DIR / "src"
ARTIFACTS_DIR = CONTRACTS_DIR / "artifacts"


@cache
def _read(name: str) -> str:
    path = ARTIFACTS_DIR / f"{name}.json"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in ARTIFACTS_DIR.glob("*.json"))) or "none"
        raise FileNotFoundError(f"no contract artifact {name!r} (known: {known})")
    return path.read_text()


def load_artifact(name: str) -> dict[str, Any]:
    """The committed artifact of contract `name` ("MIPS"): abi, bytecode, deployedBytecode, ...

    Returns a fresh dict on every call, so callers may modify it.
    """
    return json.loads(_read(name))


def artifact_names() -> list[str]:
    """Names of all committed contract artifacts."""
    return sorted(p.stem for p in ARTIFACTS_DIR.glob("*.json"))
