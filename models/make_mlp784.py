"""Build mlp784.onnx: an MLP 784 → 512 → 512 → 10 with random weights (seed 0), PyTorch's Gemm
layout (transB=1). Used by bench/native_vs_ort.py; not committed (≈2.7 MB), made on demand.

Run: `python models/make_mlp784.py [OUT.onnx]`.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

SIZES = (784, 512, 512, 10)
SEED = 0


def build(path: str | Path) -> Path:
    rng = np.random.default_rng(SEED)
    inits, nodes, prev = [], [], "input"
    for i, (n_in, n_out) in enumerate(zip(SIZES, SIZES[1:], strict=False)):
        w = (rng.normal(0, 1, (n_out, n_in)) / np.sqrt(n_in)).astype(np.float32)  # He-like scale
        b = rng.normal(0, 0.1, (n_out,)).astype(np.float32)
        inits += [numpy_helper.from_array(w, f"fc{i}.weight"), numpy_helper.from_array(b, f"fc{i}.bias")]
        out = "logits" if i == len(SIZES) - 2 else f"fc{i}"
        nodes.append(helper.make_node("Gemm", [prev, f"fc{i}.weight", f"fc{i}.bias"], [out], transB=1, name=f"fc{i}"))
        if out != "logits":
            nodes.append(helper.make_node("Relu", [out], [f"relu{i}"], name=f"relu{i}"))
            prev = f"relu{i}"
    return save_float_model(path, "mlp784", nodes, inits, [SIZES[0]], [SIZES[-1]])


def save_float_model(path: str | Path, name: str, nodes: list, inits: list, input_shape: list,
                     output_shape: list) -> Path:
    """Write a graph from float32 `input` [N, *input_shape] to `logits` [N, *output_shape]
    (opset 13, IR version 8: onnxruntime and opmlc both read it); the bench models' writer."""
    graph = helper.make_graph(
        nodes, name,
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", *input_shape])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", *output_shape])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="opmlc")
    model.ir_version = 8
    path = Path(path)
    onnx.save(model, path)
    return path


if __name__ == "__main__":
    print(build(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).with_name("mlp784.onnx")))
