"""Models that import only the ai.onnx.ml opset (no default domain), as onnxmltools' XGBoost
converter writes them, compile and agree with onnxruntime; a model that uses default-domain ops
without importing that domain is refused in one line."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper
from typer.testing import CliRunner

from opmlc.cli import app
from opmlc.errors import ModelError
from opmlc.frontend import lower_model
from opmlc.ir.fixedpoint import dequantize, encode
from opmlc.ir.interpreter import run_outputs


def ml_only_model(path, extra_nodes=()):
    """A two-leaf TreeEnsembleRegressor with base value, importing only ai.onnx.ml 1."""
    tree = helper.make_node(
        "TreeEnsembleRegressor", ["X"], ["Y"], domain="ai.onnx.ml", n_targets=1, base_values=[0.5],
        nodes_treeids=[0, 0, 0], nodes_nodeids=[0, 1, 2], nodes_featureids=[1, 0, 0],
        nodes_values=[0.25, 0.0, 0.0], nodes_modes=["BRANCH_LT", "LEAF", "LEAF"],
        nodes_truenodeids=[1, 0, 0], nodes_falsenodeids=[2, 0, 0], nodes_missing_value_tracks_true=[1, 0, 0],
        target_treeids=[0, 0], target_nodeids=[1, 2], target_ids=[0, 0], target_weights=[-1.5, 2.25],
        post_transform="NONE")
    out = "Y" if not extra_nodes else "Z"
    g = helper.make_graph([tree, *extra_nodes], "xgb", [helper.make_tensor_value_info("X", TensorProto.FLOAT, [None, 2])],
                          [helper.make_tensor_value_info(out, TensorProto.FLOAT, [None, 1])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("ai.onnx.ml", 1)])
    onnx.save(m, path)
    return path


def test_a_model_importing_only_ai_onnx_ml_compiles_and_matches_onnxruntime(tmp_path):
    path = ml_only_model(tmp_path / "ml_only.onnx")
    x = np.array([[0.0, 0.25], [1.0, 0.2499999], [-3.0, -1.0], [2.0, 7.0]], np.float32)
    g = lower_model(path, input_shapes={"X": x.shape}).graph
    (y,) = run_outputs(g, [encode(x, g.values[g.inputs[0]].type)])
    (ref,) = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"X": x})
    assert np.array_equal(dequantize(y, g.values[g.outputs[0]].type.frac), ref)  # weights exact in 16 bits
    r = CliRunner().invoke(app, ["compile", str(path), "-o", str(tmp_path / "b"), "--input-shape", "X=1,2"])
    assert r.exit_code == 0, r.output


def test_default_domain_ops_without_the_default_import_are_refused_in_one_line(tmp_path):
    path = ml_only_model(tmp_path / "bad.onnx", [helper.make_node("Relu", ["Y"], ["Z"])])
    with pytest.raises(ModelError) as err:
        lower_model(path, input_shapes={"X": (1, 2)})
    assert "No opset import for domain ''" in str(err.value) and "\n" not in str(err.value)


@pytest.fixture(scope="module")
def xgb():
    xgboost = pytest.importorskip("xgboost", reason="xgboost (test extra: xgboost-cpu) trains the models")
    pytest.importorskip("onnxmltools", reason="onnxmltools converts XGBoost models to ONNX")
    return xgboost


@pytest.mark.parametrize("kind", ["classifier", "regressor"])
def test_onnxmltools_xgboost_models_agree_with_onnxruntime(xgb, tmp_path, kind):
    from onnxmltools.convert import convert_xgboost
    from onnxmltools.convert.common.data_types import FloatTensorType
    from sklearn.datasets import load_diabetes, load_iris

    x, y = (load_iris if kind == "classifier" else load_diabetes)(return_X_y=True)
    x = x.astype(np.float32)
    est = (xgb.XGBClassifier if kind == "classifier" else xgb.XGBRegressor)(n_estimators=5, max_depth=3).fit(x, y)
    onx = convert_xgboost(est, initial_types=[("X", FloatTensorType([None, x.shape[1]]))])
    assert {i.domain for i in onx.opset_import} == {"ai.onnx.ml"}  # what the model had
    path = tmp_path / f"xgb_{kind}.onnx"
    onnx.save(onx, path)
    g = lower_model(path, input_shapes={"X": x.shape}).graph
    ours = run_outputs(g, [encode(x, g.values[g.inputs[0]].type)])
    ref = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"X": x})
    if kind == "classifier":
        assert np.array_equal(ours[0], ref[0])
        assert np.max(np.abs(dequantize(ours[1], g.values[g.outputs[1]].type.frac) - ref[1])) < 1e-4
    else:  # five trees' leaf weights, each rounded to 16 bits, and the sum rounded once
        assert np.max(np.abs(dequantize(ours[0], g.values[g.outputs[0]].type.frac) - ref[0])) <= 6 * 2.0**-17
