"""Dynamic input dimensions are never fixed silently: an open leading (batch) dimension is
compiled as 1 and announced (stderr, and `batch_defaulted` in the manifest); any other open
dimension is a one-line error naming the input and the dimension and the --input-shape to pass."""

from __future__ import annotations

import json

import onnx
import pytest
from onnx import TensorProto, helper
from typer.testing import CliRunner

from opmlc.cli import app
from opmlc.errors import ModelError
from opmlc.frontend import lower_model


def relu_model(path, shape):
    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_an_open_batch_dimension_is_compiled_as_1_and_announced(tmp_path):
    path = relu_model(tmp_path / "m.onnx", ["N", 3])
    r = CliRunner().invoke(app, ["compile", str(path), "-o", str(tmp_path / "b")])
    assert r.exit_code == 0, r.output
    assert "input 'x' has a dynamic batch dimension, compiled as 1" in r.stderr
    assert "--input-shape x=B,3" in r.stderr
    m = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert m["batch_defaulted"] == ["x"] and m["inputs"][0]["shape"] == [1, 3]
    r = CliRunner().invoke(app, ["compile", str(path), "-o", str(tmp_path / "c"), "--input-shape", "x=4,3"])
    assert r.exit_code == 0 and "dynamic" not in r.stderr
    assert json.loads((tmp_path / "c" / "manifest.json").read_text())["batch_defaulted"] == []


@pytest.mark.parametrize("shape", [[1, "T"], ["N", None, 4]])
def test_another_open_dimension_is_a_one_line_error_saying_what_to_pass(tmp_path, shape):
    path = relu_model(tmp_path / "m.onnx", shape)
    with pytest.raises(ModelError, match=r"input 'x' has a dynamic dimension 1 .*pass --input-shape x=1,") as err:
        lower_model(path)
    assert "\n" not in str(err.value)
    r = CliRunner().invoke(app, ["compile", str(path), "-o", str(tmp_path / "b")])
    assert r.exit_code == 2 and r.stderr.count("\n") == 1, r.output
    fixed = [3 if d is None or isinstance(d, str) else d for d in shape]
    assert lower_model(path, input_shapes={"x": tuple(fixed)}).graph.values[0].type.shape == tuple(fixed)
