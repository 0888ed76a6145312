"""The digits MLP through the frontend and the golden interpreter, against onnxruntime float."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort

from opmlc.frontend import lower_model
from opmlc.ir.fixedpoint import dequantize, quantize
from opmlc.ir.interpreter import run_outputs
from tests.conftest import MODELS

# Fixed-point error bound for this model with its analysed bits (inputs, weights and the hidden
# layer at 21..24, the logits at 17: each rounds by ≤ 2^-18); propagated through |W| sums it
# stays well below 1e-3 (it did at 16 bits everywhere too, the old default).
LOGIT_BOUND = 1e-3


def test_interpreter_argmax_equals_onnxruntime_on_all_1797_digits(digits):
    x, _ = digits
    model = MODELS / "digits_mlp.onnx"
    fe = lower_model(model, input_shapes={"input": x.shape})
    g = fe.graph  # the default bits: the range analysis's (opmlc/frontend/ranges.py)
    got = dequantize(run_outputs(g, [quantize(x, g.values[g.inputs[0]].type.frac)])[0],
                     g.values[g.outputs[0]].type.frac)
    want = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    err = np.abs(got - want).max()
    print(f"max |logit error| over 1797 digits: {err:.3g}")
    assert err < LOGIT_BOUND
    differ = np.flatnonzero(got.argmax(1) != want.argmax(1))
    for i in differ:  # only near-ties may differ: the top two float logits within the bound
        top2 = np.sort(want[i])[-2:]
        assert top2[1] - top2[0] < 2 * LOGIT_BOUND, f"digit {i} differs but is no near-tie"
    assert len(differ) == 0, f"{len(differ)} near-ties differ: {differ.tolist()}"


def test_float_accuracy_recorded_in_models_readme_is_true(digits):
    x, y = digits
    model = MODELS / "digits_mlp.onnx"
    logits = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    acc = (logits.argmax(1) == y).mean()
    assert f"{acc:.4f}" in (MODELS / "README.md").read_text()
