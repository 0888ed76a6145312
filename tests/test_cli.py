"""The CLI end to end: compile and run the digits MLP, and one-line errors with exit code 2 for
every kind of bad input (malformed file, non-ONNX file, unsupported op or opset, bad .npy)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from typer.testing import CliRunner

from opmlc.cli import app
from tests.conftest import MODELS

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def assert_one_line_error(result, *needles):
    assert result.exit_code == 2, result.output
    err = result.stderr.strip()
    assert err.startswith("opmlc: error: ") and "\n" not in err, err
    assert "Traceback" not in result.output
    for n in needles:
        assert n in err, err


@pytest.fixture(scope="module")
def build_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "digits"
    result = invoke("compile", MODELS / "digits_mlp.onnx", "-o", out)
    assert result.exit_code == 0, result.output
    return out


def test_compile_writes_a_manifest_with_roots_ir_and_version(build_dir):
    m = json.loads((build_dir / "manifest.json").read_text())
    assert m["opmlc_version"] and len(m["model"]["sha256"]) == 64
    assert m["inputs"][0]["shape"] == [1, 64] and m["inputs"][0]["frac"] == 24  # analysed: |x| ≤ 16 by default
    assert {r["name"] for r in m["initializers"]} == {"fc1.weight.T", "fc1.bias", "fc2.weight.T", "fc2.bias"}
    assert all(len(r["root"]) == 66 for r in m["initializers"])
    assert "matmul" in m["ir"]


def test_run_prints_the_right_class_for_digits(build_dir, digits, tmp_path):
    x, y = digits
    for i in (0, 1, 2, 100, 1000):
        path = tmp_path / f"x{i}.npy"
        np.save(path, x[i : i + 1])
        result = invoke("run", build_dir, "--input", path, "--json")
        assert result.exit_code == 0, result.output
        doc = json.loads(result.stdout)
        assert doc["backend"] == "interp" and doc["output_root"].startswith("0x")
        assert int(np.argmax(doc["output"][0])) == y[i]


def test_run_accepts_an_input_without_its_batch_dimension(build_dir, digits, tmp_path):
    path = tmp_path / "x.npy"
    np.save(path, digits[0][3])
    result = invoke("run", build_dir, "--input", path)
    assert result.exit_code == 0, result.output
    assert f"logits argmax: [{digits[1][3]}]" in result.stdout


def test_emit_ir_prints_the_text_form():
    result = invoke("compile", MODELS / "digits_mlp.onnx", "--emit", "ir")
    assert result.exit_code == 0
    assert result.stdout.startswith("graph digits_mlp {") and "relu(%5)" in result.stdout


def test_inspect_summarises_the_build(build_dir):
    result = invoke("inspect", build_dir, "--json")
    assert result.exit_code == 0
    doc = json.loads(result.stdout)
    assert doc["nodes"] == 3 and doc["ops"] == {"matmul": 2, "relu": 1}


def test_a_malformed_onnx_file_is_a_one_line_error(tmp_path):
    path = tmp_path / "broken.onnx"
    path.write_bytes((MODELS / "digits_mlp.onnx").read_bytes()[:300])
    assert_one_line_error(invoke("compile", path, "-o", tmp_path / "out"), "broken.onnx")


def test_a_non_onnx_file_is_a_one_line_error(tmp_path):
    path = tmp_path / "notes.onnx"
    path.write_text("these are not the weights you are looking for\n")
    assert_one_line_error(invoke("compile", path, "-o", tmp_path / "out"), "notes.onnx", "not an ONNX model")


def test_a_missing_file_is_a_one_line_error(tmp_path):
    assert_one_line_error(invoke("compile", tmp_path / "nope.onnx", "-o", tmp_path / "out"), "no such file")


def _model(tmp_path, node, opset=13):
    g = helper.make_graph([node], "u", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    path = tmp_path / "u.onnx"
    onnx.save(m, path)
    return path


def test_an_unsupported_op_names_the_op_node_and_opset(tmp_path):
    path = _model(tmp_path, helper.make_node("Cos", ["x"], ["y"], name="the_cos"))
    assert_one_line_error(invoke("compile", path, "-o", tmp_path / "out"), "Cos", "'the_cos'", "opset 13")


def test_a_float_only_construct_is_unsupported_not_wrong(tmp_path):
    # the floating-point remainder of float tensors has no fixed-point lowering
    g = helper.make_graph([helper.make_node("Mod", ["x", "x"], ["y"], name="the_mod", fmod=1)], "u",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    path = tmp_path / "p.onnx"
    onnx.save(m, path)
    assert_one_line_error(invoke("compile", path, "-o", tmp_path / "out"), "Mod", "'the_mod'", "float tensors")


def test_an_unsupported_opset_is_a_one_line_error(tmp_path):
    path = _model(tmp_path, helper.make_node("Relu", ["x"], ["y"]), opset=5)
    assert_one_line_error(invoke("compile", path, "-o", tmp_path / "out"), "opset 5")


def test_wrong_input_shape_dtype_and_file_are_one_line_errors(build_dir, tmp_path):
    np.save(tmp_path / "shape.npy", np.zeros((2, 64), np.float32))
    assert_one_line_error(invoke("run", build_dir, "--input", tmp_path / "shape.npy"), "shape [1, 64]")
    np.save(tmp_path / "ints.npy", np.zeros((1, 64), np.int64))
    assert_one_line_error(invoke("run", build_dir, "--input", tmp_path / "ints.npy"), "float")
    (tmp_path / "text.npy").write_text("1,2,3")
    assert_one_line_error(invoke("run", build_dir, "--input", tmp_path / "text.npy"), "not a .npy")


def test_running_a_directory_that_is_not_a_build_is_a_one_line_error(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((1, 64), np.float32))
    assert_one_line_error(invoke("run", tmp_path, "--input", tmp_path / "x.npy"), "not an opmlc build")


def test_the_installed_command_exits_2_with_one_line_on_stderr(tmp_path):
    path = tmp_path / "junk.onnx"
    path.write_bytes(b"\x00\x01garbage")
    proc = subprocess.run([sys.executable, "-m", "opmlc.cli", "compile", str(path), "-o", str(tmp_path / "o")],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("opmlc: error: ")
