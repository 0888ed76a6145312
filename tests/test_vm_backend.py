"""The build ↔ VM bridge: `opmlc run --backend vm` (whole graph and per node) gives the
interpreter's output roots, the output root is the memory subtree root of the output region in
the final state, `opmlc prove` writes witnesses of the right steps, and a damaged model.elf is
a one-line error."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from opmlc.api import quantize_inputs, run
from opmlc.cli import app
from opmlc.commit import tensor_root
from opmlc.prove import run_to, task_state
from opmlc.tasks import honest_values, initial_state, task_map
from tests.conftest import MODELS
from vm.checkpoint import Trace
from vm.run import run as vm_run
from vm.witness import StepWitness

runner = CliRunner()
SAMPLE = str(MODELS / "digit_sample.npy")


def cli_json(*args):
    r = runner.invoke(app, [str(a) for a in args])
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


def test_run_vm_prints_the_interpreters_root_and_the_vm_facts(digits_build):
    vm = cli_json("run", digits_build.directory, "--input", SAMPLE, "--backend", "vm", "--json")
    interp = cli_json("run", digits_build.directory, "--input", SAMPLE, "--json")
    assert vm["output_root"] == interp["output_root"]
    assert vm["steps"] > 1000 and vm["final_state_hash"].startswith("0x00")  # status 0: exited 0


def test_the_output_root_is_the_memory_subtree_at_the_output_region(digits_build, digits):
    x = digits[0][7:8]
    q = quantize_inputs(digits_build, [x])
    state = initial_state(digits_build, honest_values(digits_build, q, upto=0), None)
    vm_run(state, 10_000_000)
    out_v = digits_build.graph.outputs[0]
    region = task_map(digits_build, None).region(out_v)
    want = run(digits_build, [x]).output_roots[0]
    assert state.memory.region_root(region.addr, region.size) == want


@pytest.mark.parametrize("node", [0, 1, 2])
def test_each_node_as_its_own_vm_task_matches_the_interpreter(digits_build, node):
    vm = cli_json("run", digits_build.directory, "--input", SAMPLE, "--backend", "vm", "--node", node, "--json")
    interp = cli_json("run", digits_build.directory, "--input", SAMPLE, "--node", node, "--json")
    values = honest_values(digits_build, quantize_inputs(digits_build, [np.load(SAMPLE)]))
    out = digits_build.graph.nodes[node].output
    want = "0x" + tensor_root(values[out], digits_build.graph.values[out].type).hex()
    assert vm["output_root"] == interp["output_root"] == want


def test_base_roots_of_every_task_are_in_the_manifest(digits_build):
    tasks = digits_build.manifest["program"]["tasks"]
    roots = [tasks["whole"]["base_root"], *(t["base_root"] for t in tasks["nodes"])]
    assert len(tasks["nodes"]) == len(digits_build.graph.nodes)
    assert len(set(roots)) == 1 + len(tasks["nodes"])  # the descriptor differs


@pytest.mark.parametrize("node,step", [(None, 0), (None, 777), (2, 50)])
def test_prove_writes_the_witness_of_the_asked_step(digits_build, tmp_path, node, step):
    out = tmp_path / "w.json"
    args = ["prove", digits_build.directory, "--input", SAMPLE, "--step", step, "-o", out]
    if node is not None:
        args += ["--node", node]
    cli_json(*args, "--json")
    w = StepWitness.from_json(out.read_text())
    trace = Trace(task_state(digits_build, [np.load(SAMPLE)], node), interval=4096)
    trace.run(10_000_000)
    assert w.pre_hash == trace.hash_at(step) and w.post_hash == trace.hash_at(step + 1)
    assert len(w.pre_state) == 186 and len(w.proof) in (896, 1792)


def test_prove_past_the_programs_exit_is_a_one_line_error_naming_its_step_count(digits_build, tmp_path):
    state = run_to(task_state(digits_build, [np.load(SAMPLE)], 1), 10**9)
    assert state.exited
    for step in (state.step, 10**9):
        r = runner.invoke(app, ["prove", str(digits_build.directory), "--input", SAMPLE, "--step", str(step),
                                "--node", "1", "-o", str(tmp_path / "w.json")])
        assert r.exit_code == 2 and f"exits after {state.step} steps" in r.stderr, r.output
        assert "\n" not in r.stderr.strip() and not (tmp_path / "w.json").exists()
    r = runner.invoke(app, ["prove", str(digits_build.directory), "--input", SAMPLE, "--step", str(state.step - 1),
                            "--node", "1", "-o", str(tmp_path / "w.json")])
    assert r.exit_code == 0, r.output  # the last instruction, the exit syscall, is a step


def test_a_damaged_model_elf_is_a_one_line_error(digits_build, tmp_path):
    import shutil

    broken = tmp_path / "b"
    shutil.copytree(digits_build.directory, broken)
    (broken / "model.elf").write_bytes(b"\x7fELF" + bytes(10))
    r = runner.invoke(app, ["run", str(broken), "--input", SAMPLE, "--backend", "vm"])
    assert r.exit_code == 2 and "model.elf" in r.stderr and "\n" not in r.stderr.strip()
    r = runner.invoke(app, ["run", str(digits_build.directory), "--input", SAMPLE, "--backend", "vm", "--node", "9"])
    assert r.exit_code == 2 and "--node 9" in r.stderr
