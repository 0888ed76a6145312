"""Tree splits decide exactly as onnxruntime's float32 comparisons: deep scikit-learn trees
(max_depth None) give onnxruntime's label, probabilities and leaf values on every row of their
data set, on the interpreter and the native build (and the VM on a few rows); features packed
closer than 2^-16, where 16 fractional bits would merge a feature with its threshold, too. A
tree behind another op (a Scaler) reads fixed point, as documented."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

import opmlc.frontend.lower as lower
from models.make_sklearn_models import diabetes
from opmlc.api import run
from opmlc.artifact import compile_model
from opmlc.backend.native import native_program, run_native
from opmlc.frontend import QuantPolicy, lower_model
from opmlc.ir.fixedpoint import dequantize, encode
from opmlc.ir.interpreter import run_outputs
from opmlc.ir.types import DType

skl2onnx = pytest.importorskip("skl2onnx", reason="skl2onnx exports the scikit-learn models")


def export(est, x: np.ndarray, path, zipmap: bool = False):
    opts = {id(est): {"zipmap": False}} if hasattr(est, "classes_") and not zipmap else None
    onx = skl2onnx.to_onnx(est, x[:1], target_opset={"": 17, "ai.onnx.ml": 1}, options=opts)
    path.write_bytes(onx.SerializeToString())
    return path


def close_features() -> tuple[np.ndarray, np.ndarray]:
    """60 rows of features in [1, 1 + 1e-4): neighbours ~2e-6 apart, below 2^-16 ≈ 1.5e-5."""
    rng = np.random.default_rng(0)
    return (1.0 + rng.random((60, 4)) * 1e-4).astype(np.float32), rng.integers(0, 3, 60)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("deep_trees")
    x, y = diabetes()
    xc, yc = close_features()
    return {
        "regressor": (export(DecisionTreeRegressor(random_state=0).fit(x, y), x, d / "reg.onnx"), x),
        "classifier": (export(DecisionTreeClassifier(random_state=0).fit(x, np.digitize(y, [100, 200])), x,
                              d / "clf.onnx"), x),
        "close": (export(DecisionTreeClassifier(random_state=0).fit(xc, yc), xc, d / "close.onnx"), xc),
    }


def ours_and_ort(path, x, frac_bits=None):
    policy = None if frac_bits is None else QuantPolicy(default=frac_bits)
    g = lower_model(path, policy, input_shapes={"X": x.shape}).graph
    t = g.values[g.inputs[0]].type
    ours = run_outputs(g, [encode(x, t)])
    ref = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"X": x})
    return g, t, ours, ref


def test_deep_regressor_on_diabetes_reaches_onnxruntime_leaf_on_every_row(models):
    path, x = models["regressor"]
    g, t, (y,), (ref,) = ours_and_ort(path, x)
    assert t.dtype is DType.F32  # the features reach the splits as float32 bits
    tree = next(n for n in g.nodes if n.op == "tree_ensemble")
    assert tree.attrs["depth"] >= 15
    fw, fo = g.values[tree.inputs[3]].type.frac, g.values[g.outputs[0]].type.frac
    err = np.abs(dequantize(y, fo) - ref)
    # one leaf per row: the only error is the leaf value's own rounding to fw (then fo) bits
    bound = 2.0 ** -(fw + 1) + 2.0 ** -(fo + 1)
    print(f"deep regressor (depth {tree.attrs['depth']}): {len(x)} rows, largest |opmlc − onnxruntime| "
          f"{err.max():.3g} (bound {bound:.3g})")
    assert err.max() <= bound
    native = run_native(native_program(g), g, [encode(x, t)])
    assert np.array_equal(native[g.outputs[0]], y)


def test_deep_classifier_labels_and_probabilities_equal_onnxruntime_on_every_row(models):
    path, x = models["classifier"]
    g, t, (labels, probs), (ref_labels, ref_probs) = ours_and_ort(path, x)
    assert t.dtype is DType.F32
    assert np.array_equal(labels, ref_labels)
    # a single tree's probabilities are its leaf's class fractions, rounded once
    assert np.max(np.abs(dequantize(probs, g.values[g.outputs[1]].type.frac) - ref_probs)) <= 2.0 ** -16
    native = run_native(native_program(g), g, [encode(x, t)])
    assert np.array_equal(native[g.outputs[0]], labels)


def test_features_closer_than_the_fixed_point_step_split_as_in_float32(models, monkeypatch):
    path, x = models["close"]
    _, _, (labels, _), (ref_labels, _) = ours_and_ort(path, x)
    assert np.array_equal(labels, ref_labels)
    # what the exact splits guard against: the same tree on 16-bit fixed point features
    monkeypatch.setattr(lower, "exact_tree_inputs", lambda graph: set())
    _, t, (fixed, _), _ = ours_and_ort(path, x, frac_bits=16)
    assert t.dtype is DType.FX32 and np.sum(fixed != ref_labels) > 0


def test_deep_regressor_on_the_vm_gives_the_interpreter_output_root(models, tmp_path):
    path, x = models["regressor"]
    build = compile_model(path, tmp_path / "b", input_shapes={"X": (1, x.shape[1])})
    for i in (0, 17):
        roots = {b: run(build, [x[i:i + 1]], b).output_roots for b in ("interp", "native", "vm")}
        assert roots["interp"] == roots["native"] == roots["vm"]


def test_a_tree_behind_a_scaler_reads_fixed_point(tmp_path):
    x, y = diabetes()
    pipe = make_pipeline(StandardScaler(), DecisionTreeRegressor(max_depth=4, random_state=0)).fit(x, y)
    g, t, (out,), (ref,) = ours_and_ort(export(pipe, x, tmp_path / "pipe.onnx"), x)
    assert t.dtype is DType.FX32  # the Scaler computes in fixed point, so the tree compares fx32
    assert np.max(np.abs(dequantize(out, g.values[g.outputs[0]].type.frac) - ref)) < 1e-3
