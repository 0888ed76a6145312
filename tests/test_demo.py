"""`opmlc demo`, the README's main job: a lying server loses, a lying challenger loses, an honest
result finalizes, on the embedded chain and on anvil (a real JSON-RPC node)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from opmlc.cli import app
from toolchain.anvil import Anvil, find_anvil

runner = CliRunner()
KEYS = {"winner", "rounds_phase1", "rounds_phase2", "gas_total", "vm_steps", "seconds"}


def demo(*args):
    r = runner.invoke(app, ["demo", "--json", *args])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert KEYS <= doc.keys()
    return doc


def test_demo_with_a_lying_server_is_won_by_the_challenger(tmp_path):
    doc = demo("--record", str(tmp_path / "game.json"))
    assert doc["winner"] == "challenger" and doc["reason"] == "step proven"
    assert doc["rounds_phase1"] == 2 and doc["rounds_phase2"] >= 10
    assert 0 < doc["gas_total"] and 0 < doc["vm_steps"]
    assert doc["vm_steps_server"] == doc["vm_steps"]  # each side ran the disputed task once, the same execution
    # Both stakes of the game to the challenger; the server keeps the backing no game held.
    assert doc["credited"] == {"challenger": 2 * 10**17, "server": 3 * 10**17}
    # the record read back from the chain tells the same game, move by move
    rec = json.loads((tmp_path / "game.json").read_text())
    moves = [m["move"] for m in rec["moves"]]
    assert moves.count("respondTrace") == doc["rounds_phase1"] and moves.count("respondStep") == doc["rounds_phase2"]
    assert moves[0] == "challenge" and moves[-1] == "proveStep" and moves.count("startNode") == 1
    assert rec["gas_total"] == doc["gas_total"] and (rec["node"], rec["step"]) == (doc["node"], doc["step"])
    for before, after in zip(rec["moves"], rec["moves"][1:], strict=False):
        mover = after["party"] + "_clock"
        assert after[mover] <= before[mover] and after["timestamp"] >= before["timestamp"]


def test_demo_with_a_lying_challenger_is_won_by_the_server():
    assert demo("--liar", "challenger", "--lie-node", "0")["winner"] == "server"


def test_demo_without_a_liar_finalizes_the_result():
    doc = demo("--liar", "none")
    assert doc["winner"] == "none" and doc["finalized"] is True


def test_demo_rejects_a_bad_liar_and_node():
    r = runner.invoke(app, ["demo", "--liar", "nobody"])
    assert r.exit_code == 2 and "--liar" in r.stderr
    r = runner.invoke(app, ["demo", "--lie-node", "99"])
    assert r.exit_code == 2 and "--lie-node 99" in r.stderr


@pytest.mark.skipif(find_anvil() is None, reason="anvil not installed (npm install in toolchain/)")
def test_demo_against_anvil():
    with Anvil() as url:
        doc = demo("--rpc", url)
    assert doc["winner"] == "challenger" and url in doc["chain"]
