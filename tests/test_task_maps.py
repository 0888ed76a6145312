"""Per-task memory maps (docs/DESIGN.md "Per-task memory maps"): node k maps only its operands
and output, its base root commits to that map through the descriptor, Build.load rejects a
manifest whose maps or roots were tampered with, and a model whose values exceed one task's
region space compiles, runs per node in the VM, and refuses the whole-graph task in one line.

The region space is lowered here (regions.REGION_SPACE, a test-only knob) so that the digits
MLP stands in for a model over 2 GiB; tests/test_large_model.py does it for real.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from opmlc.api import run
from opmlc.artifact import Build, compile_model
from opmlc.backend import regions
from opmlc.backend.regions import REGION_BASE, node_maps, whole_graph_map
from opmlc.cli import app
from opmlc.errors import BuildError, OpmlcError
from opmlc.tasks import program_of, task_map
from tests.conftest import MODELS
from vm.loader import TASK_TABLE_ADDR, base_root, initial_state

runner = CliRunner()
SAMPLE = str(MODELS / "digit_sample.npy")
# the digits MLP: all values need 11008 bytes of regions, its largest node (the first matmul) 8704
DIGITS_NODE_MAX = 8704


def test_a_node_maps_exactly_its_operands_and_output_aligned_and_disjoint(digits_build):
    g = digits_build.graph
    for k, node in enumerate(g.nodes):
        m = task_map(digits_build, k)
        assert {r.value for r in m.regions} == {*node.inputs, node.output}
        spans = sorted((r.addr, r.addr + r.size) for r in m.regions)
        assert spans[0][0] == REGION_BASE  # the largest region comes first
        assert all(a % (b - a) == 0 for a, b in spans)
        assert all(b1 <= a2 for (_, b1), (a2, _) in zip(spans, spans[1:], strict=False))
        assert m.regions == node_maps(g)[k].regions
    assert task_map(digits_build, None).regions == whole_graph_map(g).regions
    assert len(task_map(digits_build, None).regions) == len(g.values)


def test_the_base_root_of_a_node_commits_to_its_map(digits_build):
    elf = program_of(digits_build)
    for k in range(len(digits_build.graph.nodes)):
        m = task_map(digits_build, k)
        recorded = bytes.fromhex(digits_build.manifest["program"]["tasks"]["nodes"][k]["base_root"][2:])
        assert base_root(elf, k, m.table()) == recorded
        state = initial_state(elf, k, m.table())
        v = m.regions[0].value
        assert state.memory.read_u32(TASK_TABLE_ADDR + 4 * v) == m.regions[0].addr
        moved = {**m.table(), v: m.regions[0].addr + (1 << 30)}  # one region elsewhere
        extra = {**m.table(), len(digits_build.graph.values) - 1 + 7: 0x90000000}  # one more entry
        assert base_root(elf, k, moved) != recorded
        assert base_root(elf, k, extra) != recorded
        assert base_root(elf, k) != recorded  # the same node without its map


def _copy_build(src: Build, dst):
    import shutil

    shutil.copytree(src.directory, dst)
    return dst


@pytest.mark.parametrize("what", ["map", "base_root", "whole_map", "whole_dropped"])
def test_build_load_rejects_a_tampered_task_map_or_root(digits_build, tmp_path, what):
    d = _copy_build(digits_build, tmp_path / "b")
    mpath = d / "manifest.json"
    m = json.loads(mpath.read_text())
    tasks = m["program"]["tasks"]
    if what == "map":  # node 0's first region moved; its base root left as it was
        first, rest = tasks["nodes"][0]["map"].split(" ", 1)
        v, where = first.split("@")
        addr, size = where.split("+")
        tasks["nodes"][0]["map"] = f"{v}@0x{int(addr, 16) + (1 << 30):08x}+{size} {rest}"
    elif what == "base_root":
        tasks["nodes"][1]["base_root"] = "0x" + "11" * 32
    elif what == "whole_map":
        tasks["whole"]["map"] = tasks["whole"]["map"].rsplit(" ", 1)[0]  # one value unmapped
    else:
        tasks["whole"] = None  # claim the model has no whole-graph task
    mpath.write_text(json.dumps(m))
    with pytest.raises(BuildError, match="program.tasks|base roots") as exc:
        Build.load(d)
    assert "\n" not in str(exc.value)


@pytest.fixture
def over_limit_build(tmp_path_factory, monkeypatch):
    """The digits MLP compiled with a region space its values exceed but each node fits."""
    monkeypatch.setattr(regions, "REGION_SPACE", DIGITS_NODE_MAX)
    return compile_model(MODELS / "digits_mlp.onnx", tmp_path_factory.mktemp("over"))


def test_a_model_over_the_region_space_has_node_tasks_only(over_limit_build):
    b = over_limit_build
    tasks = b.manifest["program"]["tasks"]
    assert tasks["whole"] is None and len(tasks["nodes"]) == len(b.graph.nodes)
    assert Build.load(b.directory).manifest["program"]["tasks"] == tasks  # checked, and accepted
    x = np.load(SAMPLE)
    interp = run(b, [x]).output_roots
    assert run(b, [x], backend="native").output_roots == interp
    with pytest.raises(OpmlcError, match=r"no whole-graph task; run its nodes as tasks with --node K \(0\.\.2\)"):
        run(b, [x], backend="vm")
    for k in range(len(b.graph.nodes)):
        assert run(b, [x], backend="vm", node=k).output_roots == run(b, [x], node=k).output_roots


@pytest.mark.parametrize("command", [["run", "--backend", "vm"], ["prove", "--step", "3"]])
def test_the_cli_refuses_the_whole_graph_task_in_one_line(over_limit_build, tmp_path, command):
    args = [command[0], str(over_limit_build.directory), "--input", SAMPLE, *command[1:]]
    if command[0] == "prove":
        args += ["-o", str(tmp_path / "w.json")]
    r = runner.invoke(app, args)
    assert r.exit_code == 2, r.output
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and "--node K" in lines[0] and "Traceback" not in r.output
    ok = runner.invoke(app, [*args, "--node", "1"])
    assert ok.exit_code == 0, ok.output


def test_a_node_over_the_region_space_is_a_compile_error_naming_it(tmp_path, monkeypatch):
    monkeypatch.setattr(regions, "REGION_SPACE", DIGITS_NODE_MAX - 32)
    r = runner.invoke(app, ["compile", str(MODELS / "digits_mlp.onnx"), "-o", str(tmp_path / "b")])
    assert r.exit_code == 2
    assert "node 0 (matmul" in r.output and "8704 bytes of regions" in r.output
    assert len([ln for ln in r.output.splitlines() if ln.strip()]) == 1


def test_a_dispute_over_a_model_without_whole_graph_task_ends_at_the_lying_node(over_limit_build):
    from opmlc.api import quantize_inputs
    from opmlc.dispute.graph_trace import Tamper
    from opmlc.dispute.offchain import play
    from opmlc.dispute.roles import Claimant, Verifier

    q = quantize_inputs(over_limit_build, [np.load(SAMPLE)])
    rec = play(Claimant(over_limit_build, q, Tamper(2)), Verifier(over_limit_build, q))
    assert rec.winner == "challenger" and rec.node == 2
    honest = play(Claimant(over_limit_build, q, Tamper(0, delta=0)), Verifier(over_limit_build, q))
    assert honest.winner == "server"
