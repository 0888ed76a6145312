"""Build models/digits_mlp.onnx (and digit_sample.npy, one input): an MLP (64 → 32 → 10) trained on scikit-learn's digits.

The data ships with scikit-learn (no download). Training is scikit-learn's MLPClassifier with a
fixed seed; the ONNX graph (Gemm → Relu → Gemm, logits out) is written with onnx.helper so that
the file depends on nothing but the fitted weights. Run: `python models/make_digits_mlp.py`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier

HERE = Path(__file__).resolve().parent
SEED = 0
HIDDEN = 32


def load_data() -> tuple[np.ndarray, np.ndarray]:
    """The 1797 digits as float32 [N, 64] in [0, 1] (pixels / 16) and their labels."""
    digits = load_digits()
    return (digits.data / 16.0).astype(np.float32), digits.target


def main() -> None:
    x, y = load_data()
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.25, random_state=SEED)
    clf = MLPClassifier(hidden_layer_sizes=(HIDDEN,), max_iter=600, random_state=SEED)
    clf.fit(x_train, y_train)
    (w1, w2), (b1, b2) = clf.coefs_, clf.intercepts_

    inits = [
        numpy_helper.from_array(w1.astype(np.float32), "fc1.weight"),
        numpy_helper.from_array(b1.astype(np.float32), "fc1.bias"),
        numpy_helper.from_array(w2.astype(np.float32), "fc2.weight"),
        numpy_helper.from_array(b2.astype(np.float32), "fc2.bias"),
    ]
    nodes = [
        helper.make_node("Gemm", ["input", "fc1.weight", "fc1.bias"], ["fc1"], name="fc1"),
        helper.make_node("Relu", ["fc1"], ["relu1"], name="relu1"),
        helper.make_node("Gemm", ["relu1", "fc2.weight", "fc2.bias"], ["logits"], name="fc2"),
    ]
    graph = helper.make_graph(
        nodes,
        "digits_mlp",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 64])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="opmlc")
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    out = HERE / "digits_mlp.onnx"
    onnx.save(model, out)
    np.save(HERE / "digit_sample.npy", x[:1])  # one digit (a 0), the README's example input
    print(f"wrote {out}: train accuracy {clf.score(x_train, y_train):.4f}, "
          f"test accuracy {clf.score(x_test, y_test):.4f}, all {clf.score(x, y):.4f}")


if __name__ == "__main__":
    main()
