"""Build models/digits_cnn.onnx: a small CNN trained on scikit-learn's 8×8 digits, in numpy.

Conv(1 → 8, 3×3, pad 1) → Relu → MaxPool(2×2) → Flatten → Gemm(128 → 10), input float32
[N, 1, 8, 8] (pixels / 16), output the 10 logits. Trained with plain numpy (im2col
convolution, softmax cross-entropy, Adam, fixed seed) on 75 % of the set, so the file depends
on nothing but numpy and the data that ships with scikit-learn. Run:
`python models/make_digits_cnn.py`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from sklearn.model_selection import train_test_split

from models.make_digits_mlp import load_data

HERE = Path(__file__).resolve().parent
SEED = 0
CHANNELS = 8
EPOCHS = 40
BATCH = 32
LR = 3e-3


def load_images() -> tuple[np.ndarray, np.ndarray]:
    """The 1797 digits as float32 [N, 1, 8, 8] in [0, 1] and their labels."""
    x, y = load_data()
    return x.reshape(-1, 1, 8, 8), y


def im2col(x: np.ndarray) -> np.ndarray:
    """[N, 1, 8, 8] → [N, 64, 9]: the 3×3 patches (zero padding 1) of every position."""
    xp = np.pad(x[:, 0], ((0, 0), (1, 1), (1, 1)))
    return np.stack([xp[:, i:i + 8, j:j + 8].reshape(len(x), 64) for i in range(3) for j in range(3)], axis=2)


def forward(p: dict, x: np.ndarray):
    cols = im2col(x)                                   # [N, 64, 9]
    conv = cols @ p["w1"].reshape(CHANNELS, 9).T + p["b1"]  # [N, 64, C]
    relu = np.maximum(conv, 0).reshape(-1, 8, 8, CHANNELS)
    pooled = relu.reshape(-1, 4, 2, 4, 2, CHANNELS).max(axis=(2, 4))  # [N, 4, 4, C]
    flat = pooled.transpose(0, 3, 1, 2).reshape(len(x), -1)           # [N, C·16], ONNX's order
    logits = flat @ p["w2"].T + p["b2"]
    return logits, (cols, conv, relu, pooled, flat)


def grads(p: dict, x: np.ndarray, y: np.ndarray) -> dict:
    logits, (cols, conv, relu, pooled, flat) = forward(p, x)
    n = len(x)
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    d = e / e.sum(axis=1, keepdims=True)
    d[np.arange(n), y] -= 1
    d /= n
    g = {"w2": d.T @ flat, "b2": d.sum(0)}
    dflat = (d @ p["w2"]).reshape(n, CHANNELS, 4, 4).transpose(0, 2, 3, 1)  # [N, 4, 4, C]
    windows = relu.reshape(-1, 4, 2, 4, 2, CHANNELS)
    mask = windows == pooled[:, :, None, :, None, :]
    mask = mask / mask.sum(axis=(2, 4), keepdims=True)  # ties share the gradient
    drelu = (mask * dflat[:, :, None, :, None, :]).reshape(n, 64, CHANNELS)
    dconv = drelu * (conv > 0)
    g["w1"] = np.einsum("npc,npk->ck", dconv, cols).reshape(CHANNELS, 1, 3, 3)
    g["b1"] = dconv.sum(axis=(0, 1))
    return g


def train(x: np.ndarray, y: np.ndarray) -> dict:
    rng = np.random.default_rng(SEED)
    p = {"w1": rng.normal(0, np.sqrt(2 / 9), (CHANNELS, 1, 3, 3)), "b1": np.zeros(CHANNELS),
         "w2": rng.normal(0, np.sqrt(1 / (16 * CHANNELS)), (10, 16 * CHANNELS)), "b2": np.zeros(10)}
    m = {k: np.zeros_like(v) for k, v in p.items()}
    v = {k: np.zeros_like(v) for k, v in p.items()}
    step = 0
    for _ in range(EPOCHS):
        order = rng.permutation(len(x))
        for i in range(0, len(x), BATCH):
            idx = order[i:i + BATCH]
            g = grads(p, x[idx], y[idx])
            step += 1
            for k in p:
                m[k] = 0.9 * m[k] + 0.1 * g[k]
                v[k] = 0.999 * v[k] + 0.001 * g[k] ** 2
                p[k] -= LR * (m[k] / (1 - 0.9**step)) / (np.sqrt(v[k] / (1 - 0.999**step)) + 1e-8)
    return p


def accuracy(p: dict, x: np.ndarray, y: np.ndarray) -> float:
    return float((forward(p, x)[0].argmax(1) == y).mean())


def main() -> None:
    x, y = load_images()
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.25, random_state=SEED)
    p = train(x_train.astype(np.float64), y_train)
    f32 = {k: v.astype(np.float32) for k, v in p.items()}
    inits = [numpy_helper.from_array(f32["w1"], "conv1.weight"), numpy_helper.from_array(f32["b1"], "conv1.bias"),
             numpy_helper.from_array(f32["w2"], "fc.weight"), numpy_helper.from_array(f32["b2"], "fc.bias")]
    nodes = [
        helper.make_node("Conv", ["input", "conv1.weight", "conv1.bias"], ["conv1"], name="conv1",
                         kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["conv1"], ["relu1"], name="relu1"),
        helper.make_node("MaxPool", ["relu1"], ["pool1"], name="pool1", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Flatten", ["pool1"], ["flat"], name="flatten", axis=1),
        helper.make_node("Gemm", ["flat", "fc.weight", "fc.bias"], ["logits"], name="fc", transB=1),
    ]
    graph = helper.make_graph(
        nodes, "digits_cnn",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="opmlc")
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    out = HERE / "digits_cnn.onnx"
    onnx.save(model, out)
    print(f"wrote {out}: train accuracy {accuracy(f32, x_train, y_train):.4f}, "
          f"test accuracy {accuracy(f32, x_test, y_test):.4f}, all {accuracy(f32, x, y):.4f}")


if __name__ == "__main__":
    main()
