"""The off-chain side of disputes on the digits MLP: a wrong claim about any node leads an
honest challenger to that node and to a step whose true post-state refutes the claim; lying
challengers lose; `opmlc claim`, `prove --claim` and `verify-step` from the command line."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from opmlc.api import quantize_inputs
from opmlc.cli import app
from opmlc.dispute.commitment import input_proofs, model_commitment, node_infos
from opmlc.dispute.graph_trace import GraphTrace, Tamper, compute_values
from opmlc.dispute.offchain import play
from opmlc.dispute.roles import Claimant, Verifier
from tests.conftest import MODELS
from vm.merkle import list_root, root_from_proof
from vm.state import decode, state_hash

runner = CliRunner()
SAMPLE = MODELS / "digit_sample.npy"


@pytest.fixture(scope="module")
def q(digits_build):
    return quantize_inputs(digits_build, [np.load(SAMPLE)])


@pytest.mark.parametrize("node", [0, 1, 2])
def test_a_server_lying_about_any_node_loses_at_that_node(digits_build, q, node):
    rec = play(Claimant(digits_build, q, Tamper(node)), Verifier(digits_build, q))
    assert rec.winner == "challenger" and rec.node == node
    assert rec.post_hash != rec.claimed_post_hash
    # the lie is only visible in the claimed final state: bisection ends at its last step
    assert state_hash(rec.pre_state) and decode(rec.pre_state).exited == 0


@pytest.mark.parametrize("moves,tamper", [("honest", Tamper(1)), ("random", Tamper(0)), ("bad-proof", Tamper(2))])
def test_a_lying_challenger_loses_to_an_honest_server(digits_build, q, moves, tamper):
    rec = play(Claimant(digits_build, q), Verifier(digits_build, q, tamper, moves=moves, seed=3))
    assert rec.winner == "server"


def test_the_hand_off_binds_inputs_output_and_final_state(digits_build, q):
    claimant = Claimant(digits_build, q, Tamper(2))
    sn = claimant.start_node(2)
    info = node_infos(digits_build)[2]
    leaves = claimant.trace.leaves(2)
    lo = list_root(leaves)
    # output: a zero leaf in trace[lo], the claimed root in trace[hi], the same siblings
    assert root_from_proof(bytes(32), info.output_value, sn.out_proof) == lo
    assert root_from_proof(sn.out_root, info.output_value, sn.out_proof) == claimant.trace.state(3)
    for v, root, proof in zip(info.input_values, sn.input_roots, sn.input_proofs, strict=True):
        assert root_from_proof(root, v, proof) == lo
    final = decode(sn.final_state)
    assert final.exited == 1 and final.exit_code == 0
    sib = [sn.out_region_proof[i : i + 32] for i in range(0, len(sn.out_region_proof), 32)]
    assert root_from_proof(sn.out_root, info.output_addr >> (5 + info.output_height), sib) == final.mem_root


def test_trace_state_zero_is_the_template_with_the_inputs_spliced(digits_build, q):
    honest = GraphTrace.of_values(digits_build, compute_values(digits_build, q))
    trace0, proofs = input_proofs(digits_build, [honest.roots[0]])
    assert trace0 == honest.state(0)
    assert root_from_proof(bytes(32), 0, proofs[0]) == model_commitment(digits_build).trace_template


def test_claim_and_prove_claim_from_the_command_line(digits_build, tmp_path):
    d = str(digits_build.directory)
    r = runner.invoke(app, ["claim", d, "-i", str(SAMPLE), "-o", str(tmp_path / "c.json"), "--tamper-node", "1"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["prove", d, "-i", str(SAMPLE), "--claim", str(tmp_path / "c.json"),
                            "-o", str(tmp_path / "t.json"), "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["winner"] == "challenger"
    doc = json.loads((tmp_path / "t.json").read_text())
    assert doc["node"] == 1 and doc["rounds_phase1"] == 2 and doc["rounds_phase2"] == doc["start_node"]["log2_steps"]
    r = runner.invoke(app, ["report", str(tmp_path / "t.json"), "-o", str(tmp_path / "t.svg")])
    assert r.exit_code == 0, r.output
    assert f"step {doc['step']:,}" in (tmp_path / "t.svg").read_text() and "no gas, no clocks" in r.stdout + (
        tmp_path / "t.svg").read_text()
    runner.invoke(app, ["claim", d, "-i", str(SAMPLE), "-o", str(tmp_path / "h.json")])
    r = runner.invoke(app, ["prove", d, "-i", str(SAMPLE), "--claim", str(tmp_path / "h.json"), "-o", str(tmp_path / "x")])
    assert r.exit_code == 2 and "nothing to dispute" in r.stderr
    (tmp_path / "bad.json").write_text("{}")
    r = runner.invoke(app, ["prove", d, "-i", str(SAMPLE), "--claim", str(tmp_path / "bad.json"), "-o", str(tmp_path / "x")])
    assert r.exit_code == 2 and "not a claim" in r.stderr


def test_verify_step_agrees_with_the_vm_and_rejects_a_tampered_witness(digits_build, tmp_path):
    d = str(digits_build.directory)
    w = tmp_path / "w.json"
    assert runner.invoke(app, ["prove", d, "-i", str(SAMPLE), "--step", "1234", "-o", str(w)]).exit_code == 0
    r = runner.invoke(app, ["verify-step", str(w), "--json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["equal"] and 0 < doc["gas"] < 50_000
    bad = json.loads(w.read_text())
    bad["post_hash"] = "0x" + "00" * 32
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    assert runner.invoke(app, ["verify-step", str(tmp_path / "bad.json")]).exit_code == 1
    r = runner.invoke(app, ["verify-step", str(w), "--rpc", "not-a-url"])
    assert r.exit_code == 2 and "\n" not in r.stderr.strip()
