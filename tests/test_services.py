"""`opmlc serve` and `opmlc watch` as separate processes against anvil (a real JSON-RPC node).

The README's walk-through, end to end: deploy once; a requester's task; a server that lies
(`serve --lie-node`) and a challenger (`watch`), each signing with its own local key (a private
key from the environment, an encrypted keystore); `watch` killed in phase 2 and restarted resumes
from its database and wins; the liar's bond lands with the challenger; an honest result is
verified and finalizes; both services stop cleanly on SIGTERM. No key ever appears in output.
"""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from eth_account import Account
from typer.testing import CliRunner

from opmlc.artifact import compile_model
from opmlc.cli import app
from opmlc.dispute.accounts import PASSWORD_ENV, PRIVATE_KEY_ENV
from opmlc.dispute.deployment import DeploymentFile, open_deployment
from opmlc.dispute.onchain import Phase
from toolchain.anvil import Anvil, find_anvil

pytestmark = pytest.mark.skipif(
    find_anvil() is None, reason="anvil not installed (npm install in toolchain/, or foundry on PATH)"
)

REPO = Path(__file__).resolve().parents[1]
BOND = 10**18
WINDOW = 30  # seconds; the test moves anvil's clock past it with evm_increaseTime
CLOCK = 600  # long enough that a restart in phase 2 never loses on time
LIE_NODE = 2
runner = CliRunner()


class Service:
    """A `python -m opmlc.cli serve|watch` process whose output lines are collected as they come."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "opmlc.cli", *args], cwd=REPO, env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: list[str] = []
        self._new: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))
            self._new.put(line)

    def wait_for(self, pattern: str, timeout: float = 120) -> str:
        """The first line (seen before or from now on) matching `pattern`."""
        rx = re.compile(pattern)
        for line in self.lines:
            if rx.search(line):
                return line
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self._new.get(timeout=0.2)
            except queue.Empty:
                if self.proc.poll() is not None and self._new.empty():
                    break
                continue
            if rx.search(line):
                return line
        raise AssertionError(f"no line matching {pattern!r}; output:\n" + "\n".join(self.lines))

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout=30)

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


def paid(d, event: str, task: int) -> int:
    """Ether sent with the transactions that emitted `event` for `task` (bonds, stakes)."""
    return sum(int(d.chain.w3.eth.get_transaction(e["transactionHash"])["value"])
               for e in d.events(event, taskId=task))


def credited(d, account: str) -> int:
    return sum(int(e["args"]["amount"]) for e in d.events("Credited", account=account))


def withdrawn(d, account: str) -> int:
    return sum(int(e["args"]["amount"]) for e in d.events("Withdrawn", account=account))


def d_first_block(dep: str) -> int:
    return DeploymentFile.load(dep).first_block


def cli(*args: str, env: dict[str, str] | None = None) -> str:
    r = runner.invoke(app, list(args), env=env or {PRIVATE_KEY_ENV: None, PASSWORD_ENV: None})
    assert r.exit_code == 0, r.output
    return r.stdout


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("services")
    build = tmp / "build"
    compile_model(REPO / "models" / "digits_mlp.onnx", build)
    with Anvil() as url:
        server, challenger = Account.create(), Account.create()
        keystore = tmp / "challenger.json"
        env = {k: v for k, v in os.environ.items() if k not in (PRIVATE_KEY_ENV, PASSWORD_ENV)}
        r = subprocess.run([sys.executable, "-m", "opmlc.cli", "account", "new", "-o", str(keystore), "--from-env"],
                           cwd=REPO, env={**env, PRIVATE_KEY_ENV: bytes(challenger.key).hex(), PASSWORD_ENV: "pw"},
                           capture_output=True, text=True)
        assert r.returncode == 0 and challenger.address in r.stdout, r.stderr
        dep = tmp / "deployment.json"
        r = subprocess.run([sys.executable, "-m", "opmlc.cli", "deploy", "--rpc", url, "-o", str(dep),
                            "--bond", str(BOND), "--window", str(WINDOW), "--clock", str(CLOCK)],
                           cwd=REPO, env=env, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        d = open_deployment(DeploymentFile.load(dep))
        for a in (server, challenger):  # fresh keys: fund them as a faucet would
            d.chain.w3.provider.make_request("anvil_setBalance", [a.address, hex(100 * BOND)])
        yield {"tmp": tmp, "build": build, "dep": dep, "d": d, "env": env, "keystore": keystore,
               "server": server, "challenger": challenger}


def test_a_lying_server_loses_to_watch_killed_and_restarted_in_phase_2_and_honest_results_finalize(world):
    tmp, build, dep, d, env = world["tmp"], str(world["build"]), str(world["dep"]), world["d"], world["env"]
    server, challenger = world["server"], world["challenger"]
    sample = str(REPO / "models" / "digit_sample.npy")
    server_env = {**env, PRIVATE_KEY_ENV: bytes(server.key).hex()}
    watch_env = {**env, PASSWORD_ENV: "pw"}
    serve_args = ["serve", build, "--deployment", dep, "--db", str(tmp / "serve.db"), "--poll", "0.2"]
    watch_args = ["watch", build, "--deployment", dep, "--db", str(tmp / "watch.db"), "--poll", "0.2",
                  "--keystore", str(world["keystore"])]

    cli("register", build, "--deployment", dep)
    task = json.loads(cli("request", build, "--input", sample, "--deployment", dep, "--json"))["task_id"]
    liar = Service([*serve_args, "--lie-node", str(LIE_NODE)], server_env)
    watch = Service(watch_args, watch_env)
    services = [liar, watch]
    try:
        liar.wait_for(rf"task {task}: submitted .* lying about node {LIE_NODE}")
        watch.wait_for(rf"task {task}: result is wrong .* game 0")
        watch.wait_for(r"game 0 .*phase 2 respondStep")
        watch.proc.kill()  # SIGKILL in phase 2: no chance to clean up
        watch.proc.wait()
        g = d.game(0)
        assert g.phase in (Phase.BISECT_STEP, Phase.RESPOND_STEP, Phase.PROVE_STEP)

        watch = Service(watch_args, watch_env)
        services.append(watch)
        watch.wait_for(r"game 0 \(task \d+\): ended, the challenger wins \(step proven\): we won")
        watch.wait_for(rf"withdrew .* ETH .* to {challenger.address}")
        liar.wait_for(r"game 0 .*ended, the challenger wins")
        # Resumed from its cursor and database: no rescan from the first block, no second challenge.
        assert int(re.search(r"started: .* from block (\d+)", watch.lines[0]).group(1)) > d_first_block(dep)
        assert "requested by" not in watch.text and "result is wrong" not in watch.text
        assert "phase 2 respondStep" in watch.text and "proveStep" in watch.text
        assert len(d.events("Challenged", taskId=task)) == 1
        # The challenger withdrew all it was credited: more than it staked, the liar's money on top;
        # the liar got back less than it put in.
        assert withdrawn(d, challenger.address) == credited(d, challenger.address) > paid(d, "Challenged", task)
        credited_before = credited(d, server.address)
        assert credited_before < paid(d, "ResultSubmitted", task)
        report = json.loads(cli("result", str(task), "--deployment", dep, "--json"))
        assert report["state"] == "rejected" and report["games"][0]["winner"] == "challenger"
        assert report["server"] == server.address
        assert liar.stop() == 0
        liar.wait_for(r"server stopped \(SIGTERM\)$")

        honest = Service(serve_args, server_env)  # the same server, same database, no longer lying
        services.append(honest)
        task2 = json.loads(cli("request", build, "--input", sample, "--deployment", dep, "--json"))["task_id"]
        honest.wait_for(rf"task {task2}: submitted output root")
        watch.wait_for(rf"task {task2}: result verified")
        assert json.loads(cli("result", str(task2), "--deployment", dep, "--json"))["state"] == "submitted"
        d.advance_time(WINDOW + 1)  # anvil's clock past the window (evm_increaseTime, evm_mine)
        honest.wait_for(rf"task {task2}: finalized")
        honest.wait_for(rf"withdrew .* ETH .* to {server.address}")
        # Its bond returned in full, and everything credited withdrawn.
        assert withdrawn(d, server.address) == credited(d, server.address)
        assert credited(d, server.address) - credited_before == paid(d, "ResultSubmitted", task2)
        report = json.loads(cli("result", str(task2), "--deployment", dep, "--json"))
        assert report["state"] == "finalized" and report["games"] == []
        assert report["output_root"] == "0x" + bytes(d.task(task2)["output_root"]).hex()
        assert honest.stop() == 0 and watch.stop(signal.SIGINT) == 0
        watch.wait_for(r"challenger stopped \(SIGINT\)$")
    finally:
        for s in services:
            if s.proc.poll() is None:
                s.proc.kill()
                s.proc.wait()
    output = "\n".join(s.text for s in services)
    for key in (bytes(server.key).hex(), bytes(challenger.key).hex()):
        assert key not in output.lower()


def test_a_deployment_file_for_another_chain_or_registry_is_refused(world, tmp_path):
    doc = json.loads(world["dep"].read_text())
    for change, message in (({"chain_id": 5}, "is chain 31337"), ({"registry": "0x" + "22" * 20}, "no contract at")):
        path = tmp_path / "other.json"
        path.write_text(json.dumps({**doc, **change}))
        r = runner.invoke(app, ["result", "0", "--deployment", str(path)])
        assert r.exit_code == 2 and message in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = runner.invoke(app, ["result", "99", "--deployment", str(world["dep"])])
    assert r.exit_code == 2 and "task 99: no such task" in r.stderr
