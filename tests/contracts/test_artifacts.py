"""The committed contract artifacts are what the sources compile to, and load without Node."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from contracts import ARTIFACTS_DIR, artifact_names, load_artifact
from toolchain.errors import CompilerError
from toolchain.solc import compile_contracts, node_available


def test_artifacts_load_without_node() -> None:
    assert {"MIPS", "MemoryProofHarness"} <= set(artifact_names())
    mips = load_artifact("MIPS")
    assert mips["bytecode"].startswith("0x6") and len(mips["deployedBytecode"]) > 1000
    names = {item.get("name") for item in mips["abi"]}
    assert {"step", "InvalidStateLength", "InvalidExitedFlag", "InvalidMemoryProof"} <= names
    (step,) = [i for i in mips["abi"] if i.get("name") == "step"]
    assert step["stateMutability"] == "pure"


def test_unknown_artifact_names_the_known_ones() -> None:
    with pytest.raises(FileNotFoundError, match="MIPS"):
        load_artifact("NoSuchContract")


def test_artifacts_are_deterministic_json() -> None:
    for path in ARTIFACTS_DIR.glob("*.json"):
        text = path.read_text()
        assert text == json.dumps(json.loads(text), indent=2, sort_keys=True) + "\n", path.name


@pytest.mark.skipif(not node_available(), reason="node/npm not installed: cannot recompile")
def test_committed_artifacts_are_not_stale(tmp_path: Path) -> None:
    # Without toolchain/node_modules, compile_contracts runs `npm ci` first (CI does it anyway).
    written = compile_contracts(tmp_path)
    fresh = {p.name: p.read_bytes() for p in written}
    committed = {p.name: p.read_bytes() for p in ARTIFACTS_DIR.glob("*.json")}
    assert sorted(fresh) == sorted(committed), "artifact set differs: run python -m toolchain.solc"
    for name, data in fresh.items():
        assert data == committed[name], f"{name} is stale: run python -m toolchain.solc and commit"


def test_recompiling_without_node_is_a_one_line_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import toolchain.solc as solc

    monkeypatch.setattr(solc.shutil, "which", lambda name: None)
    assert not solc.node_available()
    with pytest.raises(CompilerError, match="node not found") as info:
        solc.compile_contracts(Path("unused"))
    assert "\n" not in str(info.value)


def test_npm_lock_lists_anvil_for_every_platform_so_npm_ci_accepts_it() -> None:
    # npm ci refuses a lock that lacks any optional platform package of anvil (EUSAGE "Missing: …
    # from lock file"); a lock written on one platform with only its own package broke CI.
    from toolchain.solc import TOOLCHAIN_DIR

    lock = json.loads((TOOLCHAIN_DIR / "package-lock.json").read_text())["packages"]
    wanted = lock["node_modules/@foundry-rs/anvil"]["optionalDependencies"]
    for name, version in wanted.items():
        assert lock.get(f"node_modules/{name}", {}).get("version") == version, name


def test_npm_install_uses_npm_ci_which_never_writes_the_lock(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import toolchain.solc as solc

    calls = []
    monkeypatch.setattr(solc, "NODE_MODULES", tmp_path / "node_modules")
    monkeypatch.setattr(solc.shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(solc.subprocess, "run", lambda args, **kw: calls.append(args) or _Done())
    solc.ensure_node_modules()
    assert [c[:2] for c in calls] == [["/usr/bin/npm", "ci"]]


class _Done:
    returncode = 0
    stderr = ""
