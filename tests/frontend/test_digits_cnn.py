"""The digits CNN (Conv → Relu → MaxPool → Flatten → Gemm) through the frontend and the golden
interpreter, against onnxruntime float on all 1797 digits; calibration of its tensors."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort

from models.make_digits_cnn import load_images
from opmlc.frontend import lower_model
from opmlc.frontend.calibrate import calibrate
from opmlc.ir.fixedpoint import dequantize, quantize
from opmlc.ir.interpreter import run_outputs
from tests.conftest import MODELS

MODEL = MODELS / "digits_cnn.onnx"
# The analysed bits (≥ 18 everywhere; 16 was the old default): inputs, weights and each rescale
# round by ≤ 2^-17; through 9 conv taps and 128 Gemm inputs (|w| sums of a few units) the
# logits stay well within 1e-3.
LOGIT_BOUND = 1e-3


def float_logits(x: np.ndarray) -> np.ndarray:
    return ort.InferenceSession(str(MODEL), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]


def test_interpreter_argmax_equals_onnxruntime_on_all_1797_digits():
    x, _ = load_images()
    fe = lower_model(MODEL, input_shapes={"input": x.shape})
    assert [n.op for n in fe.graph.nodes] == ["conv", "relu", "pool", "reshape", "matmul"]
    g = fe.graph  # the default bits: the range analysis's (opmlc/frontend/ranges.py)
    got = dequantize(run_outputs(g, [quantize(x, g.values[g.inputs[0]].type.frac)])[0],
                     g.values[g.outputs[0]].type.frac)
    want = float_logits(x)
    err = np.abs(got - want).max()
    print(f"max |logit error| over 1797 digits: {err:.3g}")
    assert err < LOGIT_BOUND
    differ = np.flatnonzero(got.argmax(1) != want.argmax(1))
    for i in differ:  # only near-ties may differ: the top two float logits within the bound
        top2 = np.sort(want[i])[-2:]
        assert top2[1] - top2[0] < 2 * LOGIT_BOUND, f"digit {i} differs but is no near-tie"
    assert len(differ) == 0, f"{len(differ)} near-ties differ: {differ.tolist()}"


def test_float_accuracy_recorded_in_models_readme_is_true():
    x, y = load_images()
    acc = (float_logits(x).argmax(1) == y).mean()
    assert f"{acc:.4f}" in (MODELS / "README.md").read_text()


def test_calibrated_bits_fit_the_observed_ranges_and_agree_with_onnxruntime():
    x, _ = load_images()
    policy = calibrate(MODEL, x[:200])
    for name in ("input", "conv1", "relu1", "pool1", "logits"):
        assert name in policy.overrides
    assert policy.overrides["input"] == 24  # |x| ≤ 1: capped at MAX_FRAC
    fe = lower_model(MODEL, policy, input_shapes={"input": x.shape})
    out_t = fe.graph.values[fe.graph.outputs[0]].type
    q = run_outputs(fe.graph, [quantize(x, fe.graph.values[fe.graph.inputs[0]].type.frac)])[0]
    assert np.abs(q).max() < 2**30  # nothing near saturation (headroom 2)
    got = dequantize(q, out_t.frac)
    assert np.abs(got - float_logits(x)).max() < LOGIT_BOUND
