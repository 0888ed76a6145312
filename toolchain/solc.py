"""Python driver of the Solidity build: runs toolchain/compile.js (npm `solc`, pinned).

Developers run this after editing contracts/src/*.sol (`python -m toolchain.solc`) and commit the
artifacts it writes to contracts/artifacts/; users of opmlc never need it (they read the committed
artifacts through `contracts.load_artifact`). The staleness test runs it into a temporary
directory and compares.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from toolchain.errors import CompilerError

TOOLCHAIN_DIR = Path(__file__).resolve().parent
COMPILE_SCRIPT = TOOLCHAIN_DIR / "compile.js"
NODE_MODULES = TOOLCHAIN_DIR / "node_modules"


def node_available() -> bool:
    """Whether `node` and `npm` are both on PATH (what recompiling needs)."""
    return shutil.which("node") is not None and shutil.which("npm") is not None


def node_modules_complete() -> bool:
    """Whether toolchain/node_modules holds solc and anvil's npm package (what the tests use)."""
    return (NODE_MODULES / "solc").is_dir() and (NODE_MODULES / "@foundry-rs" / "anvil").is_dir()


def ensure_node_modules() -> None:
    """Installs the pinned npm packages (solc, anvil) when toolchain/node_modules lacks them.

    `npm ci`: it installs exactly the committed lock and never writes it. The lock lists anvil's
    binary package for every platform (npm 11 writes them all), so it is in sync everywhere; a lock
    written with one platform's package only is what made `npm ci` refuse it before.
    """
    if node_modules_complete():
        return
    npm = shutil.which("npm")
    if npm is None:
        raise CompilerError(
            "npm not found: install Node.js ≥ 18 with npm to recompile the contracts"
        )
    # --no-audit/--no-fund keep it quiet and offline-safe.
    proc = subprocess.run(
        [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=TOOLCHAIN_DIR,
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise CompilerError(f"npm ci in {TOOLCHAIN_DIR} failed: {last}")


def compile_contracts(out_dir: Path | None = None) -> list[Path]:
    """Compiles contracts/src/*.sol and contracts/test/*.sol; returns the artifact paths written.

    `out_dir` defaults to contracts/artifacts (the committed ones).
    """
    node = shutil.which("node")
    if node is None:
        raise CompilerError("node not found: install Node.js ≥ 18 to recompile the contracts")
    ensure_node_modules()
    args = [node, str(COMPILE_SCRIPT)]
    if out_dir is not None:
        args += ["--out", str(Path(out_dir).resolve())]
    proc = subprocess.run(args, cwd=TOOLCHAIN_DIR, capture_output=True, text=True)
    if proc.returncode != 0:
        # solc's diagnostics are multi-line; the first error line names file, line and problem.
        lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
        first = next((ln for ln in lines if "Error" in ln), lines[0] if lines else "(no output)")
        raise CompilerError(f"solc failed: {first}")
    return [Path(TOOLCHAIN_DIR, line) for line in proc.stdout.splitlines() if line.strip()]


def main() -> int:
    """`python -m toolchain.solc [OUT_DIR]`: recompile and list the artifacts written."""
    try:
        out = Path(sys.argv[1]) if len(sys.argv) > 1 else None
        for path in compile_contracts(out):
            print(path.resolve())
    except CompilerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
