"""A local anvil node (npm `@foundry-rs/anvil`) as a real JSON-RPC chain, for tests and demos.

Where it sits: beside toolchain/chain.py. The embedded py-evm chain is the default; anvil is the
"any JSON-RPC node" case made local: `with Anvil() as url: chain = connect(url)`. The node runs
Cancun rules like the embedded chain, so gas figures are comparable (see toolchain/chain.py).
"""

from __future__ import annotations

import os
import platform
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

from toolchain.errors import ChainError

TOOLCHAIN_DIR = Path(__file__).resolve().parent
START_TIMEOUT_S = 30.0
START_ATTEMPTS = 3

_NPM_PLATFORMS = {
    ("Linux", "x86_64"): "linux-amd64",
    ("Linux", "aarch64"): "linux-arm64",
    ("Darwin", "x86_64"): "darwin-amd64",
    ("Darwin", "arm64"): "darwin-arm64",
    ("Windows", "AMD64"): "win32-amd64",
}


def find_anvil() -> str | None:
    """Path of an anvil executable: toolchain/node_modules first, then PATH; None if absent.

    The npm package's own `bin` is a Node wrapper around a platform package's binary; the binary
    is run directly when present so that stopping it stops the node (no orphaned child).
    """
    plat = _NPM_PLATFORMS.get((platform.system(), platform.machine()))
    if plat:
        exe = "anvil.exe" if plat.startswith("win32") else "anvil"
        binary = TOOLCHAIN_DIR / "node_modules" / "@foundry-rs" / f"anvil-{plat}" / "bin" / exe
        if binary.is_file() and os.access(binary, os.X_OK):
            return str(binary)
    wrapper = TOOLCHAIN_DIR / "node_modules" / ".bin" / "anvil"
    if wrapper.exists():
        return str(wrapper)
    return shutil.which("anvil")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _ExitedAtStart(ChainError):
    """anvil stopped before listening (its port taken, say)."""


class Anvil:
    """Runs anvil on 127.0.0.1 at a free port for the duration of a `with` block.

    `with Anvil() as url:` yields the node's HTTP URL once it answers JSON-RPC; the process (and
    its process group) is stopped on exit. Raises ChainError when anvil is missing or does not
    come up.
    """

    def __init__(self, executable: str | None = None, hardfork: str = "cancun") -> None:
        found = executable or find_anvil()
        if found is None:
            raise ChainError(
                "anvil not found: run `npm install` in toolchain/ or put foundry's anvil on PATH"
            )
        self.executable = found
        self.hardfork = hardfork
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> str:
        # A port found free can be taken before anvil binds it (parallel test workers start
        # nodes at once): then anvil exits at start, and another free port is tried.
        for attempt in range(START_ATTEMPTS):
            try:
                return self._start()
            except _ExitedAtStart:
                if attempt == START_ATTEMPTS - 1:
                    raise
                self.port = free_port()
                self.url = f"http://127.0.0.1:{self.port}"
        raise AssertionError("unreachable")

    def _start(self) -> str:
        self.process = subprocess.Popen(
            [
                self.executable,
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--hardfork",
                self.hardfork,
                # Large step proofs and long test runs: lift the per-call and block limits.
                "--gas-limit",
                "100000000",
                "--silent",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,  # its own process group, stopped as one in __exit__
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                err = (
                    self.process.stderr.read().decode(errors="replace")
                    if self.process.stderr
                    else ""
                )
                last = (err.strip().splitlines() or ["no output"])[-1]
                raise _ExitedAtStart(f"anvil exited at start (code {self.process.returncode}): {last}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self.url
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise ChainError(f"anvil did not listen on {self.url} within {START_TIMEOUT_S:.0f} s")

    def stop(self) -> None:
        """Stops the node started by this object (only its own process group)."""
        proc, self.process = self.process, None
        if proc is None or proc.poll() is not None:
            return
        if os.name != "posix":  # no process groups: the binary itself was started
            proc.terminate()
            proc.wait()
            return
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
