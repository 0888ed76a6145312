"""Saturation is counted, never silent: `opmlc run` warns on stderr naming the nodes and counts
and `--json` reports them; the interpreter and the native build count the same elements, per
node and for the whole graph; a model that does not saturate prints no warning."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from opmlc import api
from opmlc.artifact import compile_model
from opmlc.cli import app
from tests.conftest import MODELS

runner = CliRunner()

# the first row of scikit-learn's diabetes data; the regressor predicts about 217
DIABETES_ROW = np.array([[0.0380759, 0.0506801, 0.0616962, 0.0218724, -0.0442235,
                          -0.0348208, -0.0434008, -0.0025923, 0.0199075, -0.0176461]], dtype=np.float32)


@pytest.fixture(scope="module")
def regressor_24(tmp_path_factory):
    """The diabetes regressor forced to 24 fractional bits: its output (above 128) saturates."""
    return compile_model(MODELS / "diabetes_linear.onnx", tmp_path_factory.mktemp("sat") / "b", frac_bits=24)


@pytest.fixture(scope="module")
def regressor_input(tmp_path_factory):
    path = tmp_path_factory.mktemp("sat_in") / "x.npy"
    np.save(path, DIABETES_ROW)
    return path


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_too_many_fractional_bits_warn_with_node_and_count(regressor_24, regressor_input):
    out_node = len(regressor_24.graph.nodes) - 1  # the final matmul
    for backend in ("interp", "native"):
        result = invoke("run", regressor_24.directory, "--input", regressor_input, "--backend", backend)
        assert result.exit_code == 0, result.output
        assert "opmlc: warning: fixed-point saturation in 1 node(s)" in result.stderr
        assert f"node {out_node} (matmul 'variable'): 1 of 1" in result.stderr
        result = invoke("run", regressor_24.directory, "--input", regressor_input, "--backend", backend, "--json")
        doc = json.loads(result.stdout)
        assert doc["saturated"] == {str(out_node): 1} and doc["clipped_inputs"] == {}
        assert doc["saturation_counted_by"] == backend
        assert doc["output"] == [[pytest.approx(128, abs=1e-6)]]  # the saturated value itself


def test_vm_reports_the_interpreters_count_alongside(regressor_24, regressor_input):
    result = invoke("run", regressor_24.directory, "--input", regressor_input, "--backend", "vm", "--json")
    doc = json.loads(result.stdout)
    assert doc["saturated"] == {str(len(regressor_24.graph.nodes) - 1): 1}
    assert doc["saturation_counted_by"] == "interp alongside vm"
    assert "fixed-point saturation" in result.stderr


def test_a_model_that_does_not_saturate_prints_no_warning(digits_build, tmp_path):
    path = tmp_path / "x.npy"
    np.save(path, np.load(MODELS / "digit_sample.npy"))
    for backend in ("interp", "native"):
        result = invoke("run", digits_build.directory, "--input", path, "--backend", backend, "--json")
        assert result.exit_code == 0, result.output
        assert result.stderr == ""
        doc = json.loads(result.stdout)
        assert doc["saturated"] == {} and doc["clipped_inputs"] == {}


def test_the_same_regressor_at_16_bits_does_not_saturate(tmp_path, regressor_input):
    build = compile_model(MODELS / "diabetes_linear.onnx", tmp_path / "b16")
    result = invoke("run", build.directory, "--input", regressor_input, "--backend", "native", "--json")
    assert result.exit_code == 0 and result.stderr == ""
    doc = json.loads(result.stdout)
    assert doc["saturated"] == {} and 210 < doc["output"][0][0] < 220  # well above 128


def test_inputs_clipped_at_quantization_are_reported(digits_build, tmp_path):
    path = tmp_path / "x.npy"
    x = np.load(MODELS / "digit_sample.npy").copy()
    x.flat[:3] = [1e6, -1e6, 40000.0]  # beyond ±32768 at 16 bits
    np.save(path, x)
    result = invoke("run", digits_build.directory, "--input", path, "--json")
    assert json.loads(result.stdout)["clipped_inputs"] == {"input": 3}
    assert "input 'input': 3 element(s) outside the range" in result.stderr


@pytest.fixture(scope="module")
def cnn_build(tmp_path_factory):
    # 16 bits everywhere, as before the range analysis chose them: what the counts below assume
    return compile_model(MODELS / "digits_cnn.onnx", tmp_path_factory.mktemp("cnn") / "b", frac_bits=16)


@pytest.fixture(scope="module")
def digits16(tmp_path_factory):
    return compile_model(MODELS / "digits_mlp.onnx", tmp_path_factory.mktemp("mlp16") / "b", frac_bits=16)


@pytest.mark.parametrize("scale", [1.0, 1e5], ids=["in-range", "saturating"])
def test_interpreter_and_native_count_equally_per_node_and_whole_mlp(digits16, scale):
    x = np.load(MODELS / "digit_sample.npy") * scale
    whole = check_counts_agree(digits16, x)
    if scale == 1.0:
        assert whole.saturation_free
    else:
        assert len(whole.saturated) == 2 and whole.clipped_inputs == {"input": 24}


@pytest.mark.parametrize("scale", [1.0, 1e4], ids=["in-range", "saturating"])
def test_interpreter_and_native_count_equally_per_node_and_whole_cnn(cnn_build, scale):
    """The issue's case: a CNN whose activations outgrow 16 fractional bits (here: inputs ×10^4,
    which still fit, so only the nodes saturate)."""
    x = np.load(MODELS / "digit_sample.npy").reshape(1, 1, 8, 8) * scale
    whole = check_counts_agree(cnn_build, x)
    if scale == 1.0:
        assert whole.saturation_free
    else:
        ops = {cnn_build.graph.nodes[k].op for k in whole.saturated}
        assert "conv" in ops and whole.clipped_inputs == {}


def check_counts_agree(build, x) -> api.RunResult:
    """Interpreter and native: the same bits and the same counts, whole graph and node by node,
    and a node counts the same alone as inside the graph."""
    whole = {b: api.run(build, [x], b) for b in ("interp", "native")}
    assert whole["interp"].saturated == whole["native"].saturated
    assert whole["interp"].output_roots == whole["native"].output_roots
    per_node = {}
    for k in range(len(build.graph.nodes)):
        runs = [api.run(build, [x], b, node=k) for b in ("interp", "native")]
        assert runs[0].saturated == runs[1].saturated, f"node {k}"
        per_node.update(runs[0].saturated)
    assert per_node == whole["interp"].saturated
    return whole["interp"]


def test_constants_clipped_at_compile_time_are_recorded_and_warned(tmp_path, digits_build, monkeypatch):
    from opmlc.frontend import lower

    # thresholds quantized with fixed-point features (trees fed by a computed value are so; a
    # graph input's trees compare float32 exactly and quantize nothing)
    monkeypatch.setattr(lower, "exact_tree_inputs", lambda graph: set())
    out = tmp_path / "tree30"
    result = invoke("compile", MODELS / "iris_tree.onnx", "-o", out, "--frac-bits", "30")
    assert result.exit_code == 0, result.output
    assert "3 constant element(s) (weights, thresholds) lie outside" in result.stderr  # thresholds ≥ 2
    assert json.loads((out / "manifest.json").read_text())["quantization"]["clipped_constants"] == 3
    result = invoke("compile", MODELS / "iris_tree.onnx", "-o", tmp_path / "again", "--frac-bits", "30", "--json")
    assert json.loads(result.stdout)["clipped_constants"] == 3
    x = tmp_path / "x.npy"
    np.save(x, np.array([[5.1, 3.5, 1.4, 0.2]], dtype=np.float32))
    doc = json.loads(invoke("run", out, "--input", x, "--json").stdout)
    assert doc["clipped_constants"] == 3 and doc["clipped_inputs"] == {"X": 2}
    assert "clipped_constants" not in digits_build.manifest["quantization"]  # manifests stay as they were


def test_integer_inputs_that_would_wrap_are_refused(tmp_path):
    from onnx import TensorProto, helper, save

    graph = helper.make_graph(
        [helper.make_node("Cast", ["x"], ["y"], to=TensorProto.FLOAT)], "ints",
        [helper.make_tensor_value_info("x", TensorProto.INT32, [3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3])])
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "ints.onnx")
    build = compile_model(tmp_path / "ints.onnx", tmp_path / "b")
    assert api.run(build, [np.array([1, -2, 3])]).dequantized()[0].tolist() == [1, -2, 3]
    path = tmp_path / "x.npy"
    np.save(path, np.array([1, 1 << 40, 3], dtype=np.int64))  # would wrap to 0 in int32
    result = invoke("run", tmp_path / "b", "--input", path)
    assert result.exit_code == 2 and "outside the i32 range" in result.stderr
