"""`opmlc compile --calibrate` with samples the float model cannot take is a one-line error with
exit code 2, never a traceback: samples of the wrong rank or feature count (checked against the
model's input), and a float run that neither onnxruntime nor onnx's reference evaluator can do."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper
from typer.testing import CliRunner

from models.make_sklearn_models import iris
from opmlc.cli import app
from tests.conftest import MODELS as MODEL_DIR


def compile_calibrated(tmp_path, model, samples):
    np.save(tmp_path / "s.npy", samples)
    return CliRunner().invoke(app, ["compile", str(model), "-o", str(tmp_path / "b"), "--calibrate",
                                    str(tmp_path / "s.npy")])


def one_line_error(r, *words):
    assert r.exit_code == 2, r.output
    assert r.exception is None or isinstance(r.exception, SystemExit), r.exception
    text = r.output.strip()
    assert text.count("\n") == 0 and "Traceback" not in text, text
    for w in words:
        assert w in text, text


def test_three_dimensional_samples_on_a_tree_model_are_one_line(tmp_path):
    x, _ = iris()
    r = compile_calibrated(tmp_path, MODEL_DIR / "iris_tree.onnx", x[:10].reshape(10, 1, 4))
    one_line_error(r, "[10, 1, 4]", "'X'", "[S, 4]")


def test_samples_with_the_wrong_feature_count_are_one_line(tmp_path):
    r = compile_calibrated(tmp_path, MODEL_DIR / "iris_tree.onnx", np.ones((5, 3), np.float32))
    one_line_error(r, "[5, 3]", "[S, 4]")


def test_a_float_run_that_fails_in_both_evaluators_is_one_line(tmp_path):
    """Open feature dims, so the shape check passes; the tree reads feature 3 of 2."""
    tree = helper.make_node(
        "TreeEnsembleRegressor", ["X"], ["Y"], domain="ai.onnx.ml", n_targets=1,
        nodes_treeids=[0, 0, 0], nodes_nodeids=[0, 1, 2], nodes_featureids=[3, 0, 0],
        nodes_values=[0.25, 0.0, 0.0], nodes_modes=["BRANCH_LT", "LEAF", "LEAF"],
        nodes_truenodeids=[1, 0, 0], nodes_falsenodeids=[2, 0, 0],
        target_treeids=[0, 0], target_nodeids=[1, 2], target_ids=[0, 0], target_weights=[-1.5, 2.25])
    g = helper.make_graph([tree], "t", [helper.make_tensor_value_info("X", TensorProto.FLOAT, [None, None])],
                          [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [None, 1])])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 1)]),
              tmp_path / "open.onnx")
    r = compile_calibrated(tmp_path, tmp_path / "open.onnx", np.ones((3, 2), np.float32))
    one_line_error(r, "--calibrate", "does not run on the samples")
