"""Build the scikit-learn models in models/ (ONNX-ML: trees and linear models) with skl2onnx.

Each is fitted with a fixed seed on data that ships with scikit-learn (no download), on the
whole data set (these are compiler test models, not benchmarks), and exported with skl2onnx
at default-domain opset TARGET_OPSET (skl2onnx picks ai.onnx.ml opset 1 for these ops) with
its default options, ZipMap included. Sizes are kept small (few, shallow trees).

    python models/make_sklearn_models.py          # writes every model below

| file                    | estimator                                            | data          |
| iris_tree.onnx          | DecisionTreeClassifier(max_depth=4)                  | iris          |
| digits_forest.onnx      | RandomForestClassifier(10 trees, max_depth=6)        | digits / 16   |
| cancer_gboost.onnx      | GradientBoostingClassifier(20 trees, max_depth=2)    | breast cancer |
| iris_gboost.onnx        | GradientBoostingClassifier(8 rounds × 3, max_depth=2) | iris         |
| iris_logreg.onnx        | StandardScaler → LogisticRegression                  | iris          |
| diabetes_gboost.onnx    | GradientBoostingRegressor(30 trees, max_depth=3)     | diabetes      |
| diabetes_linear.onnx    | Normalizer(l2) → LinearRegression                    | diabetes      |
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from sklearn.datasets import load_breast_cancer, load_diabetes, load_digits, load_iris
from sklearn.ensemble import (
    GradientBoostingClassifier,
    GradientBoostingRegressor,
    RandomForestClassifier,
)
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import Normalizer, StandardScaler
from sklearn.tree import DecisionTreeClassifier

HERE = Path(__file__).resolve().parent
SEED = 0
TARGET_OPSET = 17


def iris() -> tuple[np.ndarray, np.ndarray]:
    x, y = load_iris(return_X_y=True)
    return x.astype(np.float32), y


def digits() -> tuple[np.ndarray, np.ndarray]:
    """Pixels / 16, as models/make_digits_mlp.py (and digit_sample.npy) has them."""
    x, y = load_digits(return_X_y=True)
    return (x / 16.0).astype(np.float32), y


def cancer() -> tuple[np.ndarray, np.ndarray]:
    x, y = load_breast_cancer(return_X_y=True)
    return x.astype(np.float32), y


def diabetes() -> tuple[np.ndarray, np.ndarray]:
    x, y = load_diabetes(return_X_y=True)
    return x.astype(np.float32), y


# name → (data, estimator, is a classifier)
MODELS: dict[str, tuple[Callable[[], tuple[np.ndarray, np.ndarray]], Callable[[], object], bool]] = {
    "iris_tree": (iris, lambda: DecisionTreeClassifier(max_depth=4, random_state=SEED), True),
    "digits_forest": (digits, lambda: RandomForestClassifier(n_estimators=10, max_depth=6, random_state=SEED), True),
    "cancer_gboost": (cancer, lambda: GradientBoostingClassifier(n_estimators=20, max_depth=2, random_state=SEED), True),
    "iris_gboost": (iris, lambda: GradientBoostingClassifier(n_estimators=8, max_depth=2, random_state=SEED), True),
    "iris_logreg": (iris, lambda: make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)), True),
    "diabetes_gboost": (diabetes, lambda: GradientBoostingRegressor(n_estimators=30, max_depth=3, random_state=SEED), False),
    "diabetes_linear": (diabetes, lambda: make_pipeline(Normalizer(), LinearRegression()), False),
}


def build(name: str) -> Path:
    from skl2onnx import to_onnx

    data, make, _ = MODELS[name]
    x, y = data()
    est = make().fit(x, y)
    onx = to_onnx(est, x[:1], target_opset=TARGET_OPSET)
    onx.graph.name = name
    onx.doc_string = f"{type(est).__name__} fitted by models/make_sklearn_models.py (seed {SEED})"
    path = HERE / f"{name}.onnx"
    path.write_bytes(onx.SerializeToString())
    return path


def main() -> None:
    for name in MODELS:
        path = build(name)
        print(f"{path.name}: {path.stat().st_size} bytes")


if __name__ == "__main__":
    main()
