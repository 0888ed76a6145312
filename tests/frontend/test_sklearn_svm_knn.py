"""scikit-learn's k-nearest-neighbours (Scan + TopK + ArrayFeatureExtractor), SVMs (SVMClassifier,
SVMRegressor) and MLPClassifier (ArrayFeatureExtractor for its label), exported by skl2onnx at
test time from sklearn's offline data sets, against onnxruntime on every row of their data sets:
labels equal (a disagreement must be a float near-tie the stated bound explains, and be rare),
regression values within a bound stated from the fractional bits; interpreter, native build and
the VM give the same output roots; what opmlc does not reproduce (SVC probabilities) is refused.
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest

skl2onnx = pytest.importorskip("skl2onnx", reason="skl2onnx (the test extra) exports the scikit-learn models")
from sklearn.datasets import load_breast_cancer, load_diabetes, load_digits, load_iris  # noqa: E402
from sklearn.neighbors import KNeighborsClassifier, KNeighborsRegressor  # noqa: E402
from sklearn.neural_network import MLPClassifier  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.svm import SVC, SVR  # noqa: E402

from opmlc.api import run  # noqa: E402
from opmlc.artifact import compile_model  # noqa: E402
from opmlc.errors import UnsupportedError  # noqa: E402
from opmlc.frontend import QuantPolicy, lower_model  # noqa: E402
from opmlc.ir.fixedpoint import dequantize, quantize  # noqa: E402
from opmlc.ir.interpreter import run_outputs  # noqa: E402
from opmlc.ir.types import DType  # noqa: E402

K = 5  # neighbours


def data(name: str) -> tuple[np.ndarray, np.ndarray]:
    loader = {"iris": load_iris, "cancer": load_breast_cancer, "diabetes": load_diabetes, "digits": load_digits}[name]
    x, y = loader(return_X_y=True)
    return x.astype(np.float32) / (16 if name == "digits" else 1), y


def fit(name: str):
    """(data set, fitted estimator, is a classifier) for each model of the tests."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MLP convergence
        x, y = data(DATASET[name])
        est = {
            "knn_iris": lambda: KNeighborsClassifier(K),
            "knn_iris_small": lambda: KNeighborsClassifier(K),
            "knn_diabetes": lambda: KNeighborsRegressor(K),
            "knn_diabetes_small": lambda: KNeighborsRegressor(K),
            "svc_linear_iris": lambda: SVC(kernel="linear"),
            "svc_rbf_iris": lambda: SVC(kernel="rbf"),
            "svc_poly_iris": lambda: SVC(kernel="poly", degree=3),
            "svc_sigmoid_iris": lambda: SVC(kernel="sigmoid"),
            "svc_rbf_cancer": lambda: make_pipeline(StandardScaler(), SVC(kernel="rbf")),
            "svc_linear_cancer": lambda: make_pipeline(StandardScaler(), SVC(kernel="linear")),
            "svr_linear_diabetes": lambda: SVR(kernel="linear", C=100.0),
            "svr_rbf_diabetes": lambda: SVR(kernel="rbf", C=100.0),
            "mlp_digits": lambda: MLPClassifier((16,), max_iter=60, random_state=0),
        }[name]()
        if name.endswith("_small"):  # 15 training rows: 15 unrolled Scan steps, for the backends
            return est.fit(x[::10][:15], y[::10][:15])
        return est.fit(x, y)


DATASET = {"knn_iris": "iris", "knn_iris_small": "iris", "knn_diabetes": "diabetes",
           "knn_diabetes_small": "diabetes", "svc_linear_iris": "iris",
           "svc_rbf_iris": "iris", "svc_poly_iris": "iris", "svc_sigmoid_iris": "iris", "svc_rbf_cancer": "cancer",
           "svc_linear_cancer": "cancer", "svr_linear_diabetes": "diabetes", "svr_rbf_diabetes": "diabetes",
           "mlp_digits": "digits"}
CLASSIFIERS = ["knn_iris", "svc_linear_iris", "svc_rbf_iris", "svc_poly_iris", "svc_sigmoid_iris",
               "svc_rbf_cancer", "svc_linear_cancer", "mlp_digits"]
REGRESSORS = ["knn_diabetes", "svr_linear_diabetes", "svr_rbf_diabetes"]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """name → (ONNX path, fitted estimator), exported once per module."""
    out, d = {}, tmp_path_factory.mktemp("skl")
    for name in DATASET:
        est = fit(name)
        x, _ = data(DATASET[name])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = skl2onnx.to_onnx(est, x[:1], target_opset={"": 17, "ai.onnx.ml": 1},
                                     options={id(est[-1] if hasattr(est, "steps") else est): {"zipmap": False}}
                                     if name in CLASSIFIERS else None)
        path = d / f"{name}.onnx"
        onnx.save(model, path)
        out[name] = (path, est)
    return out


def run_both(path, x):
    # 16 bits everywhere (--frac-bits 16): the range analysis bounds these models' tensors far too
    # loosely (one interval per tensor through a Scaler whose features differ in scale by 10^4),
    # leaving the decisions a few bits; compile warns of that (test below)
    g = lower_model(path, QuantPolicy(default=16), input_shapes={"X": x.shape}).graph
    frac = g.values[g.inputs[0]].type.frac
    ours = run_outputs(g, [quantize(x, frac)])
    ours = [dequantize(o, g.values[v].type.frac) if g.values[v].type.dtype is DType.FX32 else o
            for o, v in zip(ours, g.outputs, strict=True)]
    ref = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"X": x})
    low = min(v.type.frac for v in g.values if v.type.dtype is DType.FX32)
    return g, frac, low, ours, ref


def neighbour_tie_bound(f: int, n_features: int, d: np.ndarray | float) -> np.ndarray:
    """Largest |opmlc − float| of a distance d = √Σ(x − t)²: inputs quantized to f bits move each
    difference by ≤ 2^−f, so d by ≤ √F·2^−f; F squares rounded by ≤ 2^−(f+1) move d² by
    e ≤ F·2^−(f+1), so d by ≤ min(√e, e/d); the sqrt rounds once more (≤ 2^−f). Two neighbours
    can swap only when their float distances are within twice this."""
    e = n_features * 2.0 ** -(f + 1)
    return np.sqrt(n_features) * 2.0**-f + np.minimum(np.sqrt(e), e / np.maximum(d, 1e-30)) + 2.0**-f


def knn_near_ties(est, x: np.ndarray, f: int) -> np.ndarray:
    """Rows whose k-th and (k+1)-th nearest training rows are within the swap bound (plus
    float32's own rounding in onnxruntime)."""
    train = est._fit_X.astype(np.float64)
    d = np.sort(np.sqrt(((x[:, None, :].astype(np.float64) - train[None]) ** 2).sum(-1)), axis=1)
    return d[:, K] - d[:, K - 1] <= 2 * neighbour_tie_bound(f, x.shape[1], d[:, K - 1]) + 1e-5 * (1 + d[:, K])


def decision_margin(name: str, est, x: np.ndarray) -> np.ndarray:
    """The float margin of each row's label: the smallest |one-vs-one decision| (SVC), the gap
    between the two largest probabilities (MLP), or the neighbours' near-tie flag (KNN)."""
    if name.startswith("svc"):
        svc = est[-1] if hasattr(est, "steps") else est
        z = est[:-1].transform(x) if hasattr(est, "steps") else x
        svc.decision_function_shape = "ovo"
        return np.abs(svc.decision_function(z)).reshape(len(x), -1).min(axis=1)
    p = np.sort(est.predict_proba(x), axis=1)
    return p[:, -1] - p[:, -2]


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_labels_equal_onnxruntime_on_every_row(models, name):
    path, est = models[name]
    x, _ = data(DATASET[name])
    g, f, low, (labels, scores), (ref_labels, ref_scores) = run_both(path, x)
    assert g.values[g.outputs[0]].type.dtype is DType.I64 and labels.shape == (len(x),)
    differ = np.nonzero(labels != ref_labels)[0]
    if name.startswith("knn"):
        ties = knn_near_ties(est, x, low)
        off = np.nonzero(np.abs(scores - ref_scores).max(axis=1) > 2.0**-f)[0]  # a neighbour swapped
        print(f"{name}: {len(x)} rows, {len(differ)} labels differ, {len(off)} rows with a swapped "
              f"neighbour, {int(ties.sum())} near-tie rows")
        assert set(off) <= set(np.nonzero(ties)[0]), "a neighbour swapped away from any near-tie"
        assert len(off) <= 0.02 * len(x)
        assert set(differ) <= set(off)
        return
    margin = decision_margin(name, est, x)
    print(f"{name}: {len(x)} rows, {len(differ)} labels differ; smallest float margin {margin.min():.3g}, "
          f"largest score error {np.abs(scores - ref_scores).max():.3g}")
    assert len(differ) == 0, f"rows {differ.tolist()} (margins {margin[differ]})"
    if not name.startswith("mlp"):
        # the raw one-vs-one decisions (two classes: [−d, d]) or the probabilities
        assert np.abs(scores - ref_scores).max() < 2.0 ** (8 - low) * (1 + np.abs(ref_scores).max())


@pytest.mark.parametrize("name", REGRESSORS)
def test_regression_values_within_their_bound(models, name):
    path, est = models[name]
    x, _ = data(DATASET[name])
    g, f, low, (y,), (ref,) = run_both(path, x)
    err = np.abs(y.reshape(ref.shape) - ref).ravel()
    if name.startswith("knn"):
        # the mean of the k neighbours' targets: exact up to one rounding, unless a neighbour swapped
        ties = knn_near_ties(est, x, low)
        off = np.nonzero(err > 2.0 ** (1 - f) * (1 + np.abs(ref).max()))[0]
        print(f"{name}: {len(x)} rows, {len(off)} with a swapped neighbour (all near-ties: "
              f"{set(off) <= set(np.nonzero(ties)[0])}), {int(ties.sum())} near-tie rows")
        assert set(off) <= set(np.nonzero(ties)[0]) and len(off) <= 0.02 * len(x)
        return
    # Σ coef·K + rho: each kernel value within a few 2^−f, weighed by |coef| ≤ C
    bound = 2.0 ** (8 - low) * (1 + np.abs(ref).max())
    print(f"{name}: {len(x)} rows, largest |opmlc − onnxruntime| {err.max():.3g} (bound {bound:.3g}, "
          f"targets {ref.min():.0f}..{ref.max():.0f})")
    assert err.max() < bound


BACKEND_MODELS = ["knn_iris_small", "knn_diabetes_small", "svc_rbf_iris", "svc_linear_cancer", "svr_linear_diabetes",
                  "svr_rbf_diabetes", "mlp_digits"]


@pytest.mark.parametrize("name", BACKEND_MODELS)
def test_interpreter_native_and_vm_agree(models, name, tmp_path):
    path, _ = models[name]
    x, _ = data(DATASET[name])
    build = compile_model(path, tmp_path, input_shapes={"X": (1, x.shape[1])})
    for i in (3, 60, 121):
        roots = {b: run(build, [x[i:i + 1]], b).output_roots for b in ("interp", "native", *(("vm",) if i == 60 else ()))}
        assert len(set(map(tuple, roots.values()))) == 1, (name, i, roots)
    assert {n.op for n in build.graph.nodes} & {"matmul", "reduce"}


def test_svc_probabilities_are_refused_by_name(tmp_path):
    x, y = data("iris")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scikit-learn deprecates probability=True, still exported
        est = SVC(kernel="rbf", probability=True, random_state=0).fit(x, y)
        model = skl2onnx.to_onnx(est, x[:1], target_opset={"": 17, "ai.onnx.ml": 1})
    path = tmp_path / "svc_proba.onnx"
    onnx.save(model, path)
    with pytest.raises(UnsupportedError, match="prob_a/prob_b"):
        lower_model(path)


def test_every_node_of_an_svc_and_a_knn_runs_as_its_own_vm_task(models, tmp_path):
    """The dispute's per-node tasks: each node of the SVC (votes, i64 label) and of the small
    KNN's TopK picks, run alone in the VM on the interpreter's inputs, gives its value."""
    from opmlc.api import quantize_inputs
    from opmlc.backend.program import build_program
    from opmlc.commit import tensor_root
    from opmlc.ir.interpreter import run_graph
    from tests.kernels.harness import run_vm

    for name in ("svc_linear_cancer", "knn_iris_small"):
        path, _ = models[name]
        x, _ = data(DATASET[name])
        build = compile_model(path, tmp_path / name, input_shapes={"X": (1, x.shape[1])})
        g = build.graph
        values = run_graph(g, quantize_inputs(build, [x[40:41]]))
        program = build_program(g)
        # the KNN from its Scan's last step on: TopK's picks, the labels and the votes
        first = min(k for k, n in enumerate(g.nodes) if "/t14/" in n.name) if name.startswith("knn") else 0
        nodes = range(first, len(g.nodes))
        for k in nodes:
            t = g.values[g.nodes[k].output].type
            state, (got,) = run_vm(g, program, values, node=k)
            assert state.exit_code == 0 and tensor_root(got, t) == tensor_root(values[g.nodes[k].output], t), (name, k)
        assert {g.nodes[k].op for k in nodes} >= {"reduce", "matmul" if name.startswith("svc") else "where"}


@pytest.mark.parametrize("transform", ["NONE", "LOGISTIC", "SOFTMAX"])
def test_svm_classifier_scores_and_post_transforms_equal_onnxruntime(models, transform, tmp_path):
    """The SVMClassifier node alone (skl2onnx's SVC on iris), its post_transform set: labels
    equal, the one-vs-one scores within 2^(8−f)·(1 + |score|); a two-class SVM refuses anything
    but NONE (onnxruntime then writes [1 − d, d] of the raw decision)."""
    model = onnx.load(models["svc_rbf_iris"][0])
    node = next(n for n in model.graph.node if n.op_type == "SVMClassifier")
    for at in node.attribute:
        if at.name == "post_transform":
            at.s = transform.encode()
    g = onnx.helper.make_graph([node], "svm", list(model.graph.input), [
        onnx.helper.make_tensor_value_info(node.output[0], onnx.TensorProto.INT64, [None]),
        onnx.helper.make_tensor_value_info(node.output[1], onnx.TensorProto.FLOAT, [None, 3])])
    path = tmp_path / "svm.onnx"
    onnx.save(onnx.helper.make_model(g, opset_imports=list(model.opset_import)), path)
    x, _ = data("iris")
    _, _, low, (labels, scores), (ref_labels, ref_scores) = run_both(path, x)
    assert np.array_equal(labels, ref_labels)
    assert np.all(np.abs(scores - ref_scores) <= 2.0 ** (8 - low) * (1 + np.abs(ref_scores)))
    binary = onnx.load(models["svc_linear_cancer"][0])
    for n in binary.graph.node:
        for at in n.attribute:
            if n.op_type == "SVMClassifier" and at.name == "post_transform":
                at.s = b"LOGISTIC"
    onnx.save(binary, tmp_path / "binary.onnx")
    with pytest.raises(UnsupportedError, match="post_transform LOGISTIC of SVMClassifier with 2 classes"):
        lower_model(tmp_path / "binary.onnx")


def test_string_class_labels_are_refused_by_name(tmp_path):
    x, y = data("iris")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est = MLPClassifier((4,), max_iter=5, random_state=0).fit(x, np.array(["a", "b", "c"])[y])
        model = skl2onnx.to_onnx(est, x[:1], target_opset={"": 17, "ai.onnx.ml": 1})
    onnx.save(model, tmp_path / "mlp_strings.onnx")
    with pytest.raises(UnsupportedError, match="ArrayFeatureExtractor of strings"):
        lower_model(tmp_path / "mlp_strings.onnx")


def test_default_compile_warns_where_the_analysis_leaves_few_bits(models, tmp_path):
    from typer.testing import CliRunner

    from opmlc.cli import app

    path, _ = models["svc_linear_cancer"]
    x, _ = data(DATASET["svc_linear_cancer"])
    r = CliRunner().invoke(app, ["compile", str(path), "-o", str(tmp_path / "b"), "--input-shape", f"X=1,{x.shape[1]}",
                                 "--input-range", f"X={x.min()},{x.max()}", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["coarse"] and "may lose precision" in r.stderr
