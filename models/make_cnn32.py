"""Build cnn32.onnx: a CIFAR-shaped CNN with random weights (seed 0), input float32 [N, 3, 32, 32].

Conv 3→32 (3×3, pad 1) → Relu → Conv 32→64 (3×3, stride 2) → Relu → Conv 64→64 (3×3) → Relu
→ Conv 64→128 (3×3, stride 2) → Relu → GlobalAveragePool → Flatten → Gemm 128→10: 0.2M
parameters, 20M multiply-adds an image, most of them in 3×3 convolutions of 32–128 channels.
`build_grouped`: one grouped or depthwise 3×3 layer. Used by bench/native_vs_ort.py (`cnn`);
not committed, made on demand.

Run: `python models/make_cnn32.py [OUT.onnx]`.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from onnx import helper, numpy_helper

from models.make_mlp784 import save_float_model

SEED = 0
LAYERS = ((3, 32, 1), (32, 64, 2), (64, 64, 1), (64, 128, 2))  # (in channels, out channels, stride)
CLASSES = 10


def build(path: str | Path) -> Path:
    rng = np.random.default_rng(SEED)
    inits, nodes, prev = [], [], "input"
    for i, (cin, cout, stride) in enumerate(LAYERS):
        w = (rng.normal(0, 1, (cout, cin, 3, 3)) / np.sqrt(cin * 9)).astype(np.float32)  # He-like scale
        b = rng.normal(0, 0.1, (cout,)).astype(np.float32)
        inits += [numpy_helper.from_array(w, f"conv{i}.weight"), numpy_helper.from_array(b, f"conv{i}.bias")]
        nodes.append(helper.make_node("Conv", [prev, f"conv{i}.weight", f"conv{i}.bias"], [f"conv{i}"],
                                      kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[stride, stride],
                                      name=f"conv{i}"))
        nodes.append(helper.make_node("Relu", [f"conv{i}"], [f"relu{i}"], name=f"relu{i}"))
        prev = f"relu{i}"
    width = LAYERS[-1][1]
    w = (rng.normal(0, 1, (CLASSES, width)) / np.sqrt(width)).astype(np.float32)
    inits += [numpy_helper.from_array(w, "fc.weight"),
              numpy_helper.from_array(rng.normal(0, 0.1, (CLASSES,)).astype(np.float32), "fc.bias")]
    nodes += [helper.make_node("GlobalAveragePool", [prev], ["pool"], name="pool"),
              helper.make_node("Flatten", ["pool"], ["flat"], name="flatten"),
              helper.make_node("Gemm", ["flat", "fc.weight", "fc.bias"], ["logits"], transB=1, name="fc")]
    return save_float_model(path, "cnn32", nodes, inits, [3, 32, 32], [CLASSES])


def build_grouped(path: str | Path, groups: int, channels: int = 64, side: int = 32) -> Path:
    """One 3×3 conv (pad 1) of `channels` → `channels` in `groups` groups, then ReLU, input float32
    [N, channels, side, side], output `logits` [N, channels, side, side]: groups = channels is a
    depthwise layer (MobileNet's), 4 a grouped one (ResNeXt's)."""
    rng = np.random.default_rng(SEED)
    cg = channels // groups
    w = (rng.normal(0, 1, (channels, cg, 3, 3)) / np.sqrt(cg * 9)).astype(np.float32)
    b = rng.normal(0, 0.1, (channels,)).astype(np.float32)
    nodes = [helper.make_node("Conv", ["input", "w", "b"], ["conv"], kernel_shape=[3, 3], pads=[1, 1, 1, 1],
                              group=groups, name="conv"),
             helper.make_node("Relu", ["conv"], ["logits"], name="relu")]
    inits = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")]
    return save_float_model(path, f"conv_g{groups}", nodes, inits, [channels, side, side], [channels, side, side])


if __name__ == "__main__":
    print(build(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).with_name("cnn32.onnx")))
