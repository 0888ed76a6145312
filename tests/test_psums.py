"""Exact int64 partial sums (docs/DESIGN.md "Partial sums"; opmlc/backend/psums.py).

A node one output element of which exceeds the step budget (a long reduction) is rewritten into
chunk nodes (i64 accumulators over aligned ranges of the reduction) and psum nodes: the rewritten
graph's outputs are the unsplit graph's bit for bit (interpreter, native build, every VM task
within the budget and its estimate), a lie in a chunk node loses on chain, and without
--step-budget a long reduction no longer raises the default budget.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from opmlc.api import run
from opmlc.artifact import check_build, compile_model
from opmlc.backend.parts import fitting_log2_budget, plan
from opmlc.backend.psums import split_reductions
from opmlc.ir.interpreter import run_graph
from tests.test_step_budget import check_every_task

K = 2048
LOG2 = 14  # a reduction of 2048 is 20k+ steps per output: it must be chunked


def reduction_model(path, kind: str, k: int = K) -> None:
    """x[2, k] → Gemm (k × 16, bias) or ReduceSum / ReduceMean over the long axis."""
    rng = np.random.default_rng(3)
    inits = []
    if kind == "gemm":
        w = rng.standard_normal((k, 16), dtype=np.float32) * np.float32(0.02)
        inits = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(np.linspace(-1, 1, 16, dtype=np.float32), "b")]
        node, out = helper.make_node("Gemm", ["x", "w", "b"], ["y"], name="fc"), [2, 16]
    else:
        inits = [numpy_helper.from_array(np.array([1], np.int64), "axes")]
        node, out = helper.make_node(kind, ["x", "axes"], ["y"], keepdims=1, name="r"), [2, 1]
    graph = helper.make_graph([node], "long", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, k])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, out)], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), path)


CASES = [("gemm", None, None), ("gemm", "int8", None), ("gemm", "int4", 32), ("ReduceSum", None, None),
         ("ReduceMean", None, None)]


def _inputs(graph, big: bool) -> list[np.ndarray]:
    t = graph.values[graph.inputs[0]].type
    rng = np.random.default_rng(7)
    span = (1 << 31) - 1 if big else 1 << t.frac  # big: full-range values, so that outputs saturate
    return [rng.integers(-span, span, size=t.shape).astype(np.int32)]


@pytest.mark.parametrize("kind,weights,block", CASES)
def test_a_long_reduction_becomes_exact_partial_sums(tmp_path, kind, weights, block):
    model = tmp_path / "m.onnx"
    reduction_model(model, kind)
    whole = compile_model(model, tmp_path / "whole", weights=weights, block_size=block)  # default: one node
    assert [n.op for n in whole.graph.nodes] == ["matmul" if weights is None and kind == "gemm" else
                                                 "qmatmul" if kind == "gemm" else "reduce"]
    build = compile_model(model, tmp_path / "b", step_budget=1 << LOG2, weights=weights, block_size=block)
    g = build.graph
    chunks = [n for n in g.nodes if n.attrs.get("accumulate")]
    assert len(chunks) >= 2 and g.nodes[-1].op == "psum"
    if block:  # a quantized weight is cut on its block boundaries
        assert all(n.attrs["block_size"] == block for n in chunks)
        assert all(g.values[n.inputs[1]].type.shape[1] % block == 0 for n in chunks[:-1])
    assert split_reductions(whole.graph, LOG2).to_text() == g.to_text()  # the rewrite is the build's graph
    assert check_build(model, build.directory) == []  # compile --check replays it; Build.load replans it
    for big in (False, True):
        xs = _inputs(g, big)
        s_whole, s_split = {}, {}
        want = [run_graph(whole.graph, xs, s_whole)[v] for v in whole.graph.outputs]
        got = [run_graph(g, xs, s_split)[v] for v in g.outputs]
        assert all(np.array_equal(a, b) for a, b in zip(got, want, strict=True)), big
        assert sum(s_whole.values()) == sum(s_split.values()), big  # the same elements saturate
        floats = [xs[0] / float(1 << g.values[g.inputs[0]].type.frac)]  # exact: quantized back to xs
        native = run(build, floats, "native").outputs
        assert all(np.array_equal(a, b) for a, b in zip(native, run(whole, floats, "interp").outputs, strict=True))
    # every task (chunks, their parts, views, psums) run in the VM: within budget and estimate, bit-exact
    check_every_task(build, 1 << LOG2)


def test_a_lie_in_a_chunk_node_loses(tmp_path):
    """`opmlc demo --step-budget 4096 --lie-node 3`: the digits MLP's first matmul (K = 64) is
    two chunk nodes and a psum there; node 3, the second chunk, is itself split into parts."""
    import json

    from typer.testing import CliRunner

    from opmlc.cli import app
    from tests.conftest import MODELS

    build = compile_model(MODELS / "digits_mlp.onnx", tmp_path / "b", step_budget=1 << 12)
    assert build.graph.nodes[3].op == "matmul" and build.graph.nodes[3].attrs.get("accumulate")
    r = CliRunner().invoke(app, ["demo", "--step-budget", "4096", "--lie-node", "3", "--json"])
    assert r.exit_code == 0, r.output
    result = json.loads(r.output[r.output.index("{"):])
    assert result["winner"] == "challenger" and result["reason"] == "step proven" and result["node"] == 3
    assert result["rounds_parts"] >= 1 and 0 < result["vm_steps"] <= 1 << 12


def test_without_a_budget_a_long_reduction_keeps_the_default(tmp_path):
    model = tmp_path / "sum.onnx"
    reduction_model(model, "ReduceSum", k=1 << 19)  # ~2^24.6 steps in its one output element
    whole = compile_model(model, tmp_path / "b", step_budget=1 << 30)
    assert [n.op for n in whole.graph.nodes] == ["reduce"]
    assert fitting_log2_budget(whole.graph) == 24
    split = split_reductions(whole.graph, 24)
    assert split.nodes[-1].op == "psum" and sum(bool(n.attrs.get("accumulate")) for n in split.nodes) >= 2
    plan(split, 24)  # every node fits 2^24, split into output parts where needed


def test_a_conv_over_many_channels_becomes_partial_sums_over_its_channels(tmp_path):
    rng = np.random.default_rng(4)
    w = rng.standard_normal((4, 64, 3, 3), dtype=np.float32) * np.float32(0.05)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w", "b"], ["y"], pads=[1, 1, 1, 1], name="conv")], "long_conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 4, 4])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(np.ones(4, np.float32), "b")])
    model = tmp_path / "conv.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), model)
    whole = compile_model(model, tmp_path / "whole")
    build = compile_model(model, tmp_path / "b", step_budget=1 << LOG2)
    g = build.graph
    assert sum(n.op == "conv" and bool(n.attrs.get("accumulate")) for n in g.nodes) >= 2 and g.nodes[-1].op == "psum"
    xs = _inputs(g, False)
    assert np.array_equal(run_graph(g, xs)[g.outputs[0]], run_graph(whole.graph, xs)[whole.graph.outputs[0]])
    check_every_task(build, 1 << LOG2)
