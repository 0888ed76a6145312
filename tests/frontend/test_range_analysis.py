"""Fractional bits chosen by range analysis (opmlc/frontend/ranges.py), the frontend's default:
a deep CNN whose logits pass 32,768 (where 16 bits saturate) agrees with onnxruntime; every
analysed bound holds what a float run observes; the manifest records the choice and --check
replays it; --frac-bits and --calibrate report tensors that may saturate and their headroom."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from typer.testing import CliRunner

from opmlc.cli import app
from opmlc.frontend import QuantPolicy, lower_model
from opmlc.frontend.calibrate import float_values
from opmlc.frontend.ranges import DEFAULT_INPUT_BOUND, at_risk
from opmlc.ir.fixedpoint import dequantize, quantize
from opmlc.ir.interpreter import run_outputs
from tests.conftest import MODELS

CHANNELS, SIDE, CLASSES = 8, 4, 10
# (conv layers, gain): each conv's He-initialised weights times the gain, so activations grow with
# depth. The analysis proves the first safe; the second is too deep for interval bounds (they grow
# ~8× per layer, the activations ~3×), so it reports tensors that may saturate (it still agrees).
PROVEN, TOO_DEEP = (4, 6.0), (6, 5.0)


def deep_cnn(layers: int, gain: float) -> onnx.ModelProto:
    """Conv(3×3, pad 1) + Relu × layers → GlobalAveragePool → Flatten → Gemm, He-initialised
    (normal, std √(2 / fan_in)) with a fixed seed, each conv scaled by `gain`."""
    rng = np.random.default_rng(0)
    nodes, inits, x = [], [], "input"
    c_in = 3
    for i in range(layers):
        w = rng.normal(0, np.sqrt(2 / (c_in * 9)), (CHANNELS, c_in, 3, 3)) * gain
        b = rng.normal(0, 0.1, CHANNELS)
        inits += [numpy_helper.from_array(w.astype(np.float32), f"w{i}"),
                  numpy_helper.from_array(b.astype(np.float32), f"b{i}")]
        nodes += [helper.make_node("Conv", [x, f"w{i}", f"b{i}"], [f"conv{i}"], pads=[1, 1, 1, 1]),
                  helper.make_node("Relu", [f"conv{i}"], [f"relu{i}"])]
        x, c_in = f"relu{i}", CHANNELS
    wf = rng.normal(0, np.sqrt(2 / CHANNELS), (CLASSES, CHANNELS)) * gain
    inits.append(numpy_helper.from_array(wf.astype(np.float32), "wf"))
    nodes += [helper.make_node("GlobalAveragePool", [x], ["gap"]),
              helper.make_node("Flatten", ["gap"], ["flat"]),
              helper.make_node("Gemm", ["flat", "wf"], ["logits"], transB=1)]
    graph = helper.make_graph(
        nodes, "deep_cnn", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, SIDE, SIDE])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, CLASSES])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


@pytest.fixture(scope="module", params=[PROVEN, TOO_DEEP], ids=["proven", "too_deep"])
def cnn(request, tmp_path_factory):
    path = tmp_path_factory.mktemp("deep_cnn") / "deep_cnn.onnx"
    onnx.save(deep_cnn(*request.param), str(path))
    rng = np.random.default_rng(1)
    xs = rng.uniform(-DEFAULT_INPUT_BOUND, DEFAULT_INPUT_BOUND, (10, 1, 3, SIDE, SIDE)).astype(np.float32)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return path, xs, [sess.run(None, {"input": x})[0] for x in xs], request.param


def interpret(fe, x: np.ndarray) -> np.ndarray:
    g = fe.graph
    q = run_outputs(g, [quantize(x, g.values[g.inputs[0]].type.frac)])[0]
    return dequantize(q, g.values[g.outputs[0]].type.frac)


def test_deep_cnn_with_logits_past_32768_agrees_with_onnxruntime_by_default(cnn):
    path, xs, want, config = cnn
    peak = max(float(np.abs(w).max()) for w in want)
    print(f"deep CNN: largest |float logit| {peak:.4g}")
    assert peak > 32768  # where 16 fractional bits saturate
    fixed = lower_model(path, QuantPolicy(default=16))  # the old default saturates, and argmax suffers
    assert any(np.abs(interpret(fixed, x)).max() >= 32767 for x in xs)
    assert sum(int(interpret(fixed, x).argmax() == w.argmax()) for x, w in zip(xs, want, strict=True)) < 10
    fe = lower_model(path)
    agree = sum(int(interpret(fe, x).argmax() == w.argmax()) for x, w in zip(xs, want, strict=True))
    worst = max(float(np.abs(interpret(fe, x) - w).max() / np.abs(w).max()) for x, w in zip(xs, want, strict=True))
    print(f"deep CNN, analysed bits: argmax {agree}/10 agree; largest logit error {worst:.2g} of the largest logit; "
          f"bits {[fe.graph.values[v].type.frac for v in fe.graph.inputs + [n.output for n in fe.graph.nodes]]}")
    assert agree == 10
    risky = at_risk(fe.analysis)  # what the compile warns of: none where the bounds prove safety
    assert (not risky) if config == PROVEN else (risky and risky[-1].name == "logits")


def test_analysed_bounds_hold_every_value_a_float_run_observes(cnn):
    path, xs, _, config = cnn
    fe = lower_model(path)
    bounds = {r.name: r for r in fe.analysis.ranges()}
    model = onnx.load(str(path))
    for x in xs:
        for name, arr in float_values(model, {"input": x}).items():
            if name in bounds:
                r = bounds[name]
                assert r.lo <= float(arr.min()) and float(arr.max()) <= r.hi, name
                if config == PROVEN:
                    assert r.bound < r.capacity, name  # and its bits hold it


runner = CliRunner()


def test_compile_records_the_analysed_choice_and_check_replays_it(tmp_path):
    out = tmp_path / "mlp"
    r = runner.invoke(app, ["compile", str(MODELS / "digits_mlp.onnx"), "-o", str(out), "--input-range", "input=0,1",
                            "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["quantization"] == "analysis"
    q = json.loads((out / "manifest.json").read_text())["quantization"]
    assert q["method"] == "analysis" and q["declared_ranges"] == {"input": [0.0, 1.0]}
    assert q["input_ranges"] == {"input": [0.0, 1.0]}
    assert q["per_tensor"]["input"] == 24 and 0 < q["per_tensor"]["logits"] < 24
    inputs = json.loads((out / "manifest.json").read_text())["inputs"]
    assert inputs[0]["frac"] == 24
    r = runner.invoke(app, ["compile", str(MODELS / "digits_mlp.onnx"), "--check", str(out)])
    assert r.exit_code == 0, r.output


def test_frac_bits_override_warns_of_the_regressor_outputs_it_saturates(tmp_path):
    model = str(MODELS / "diabetes_gboost.onnx")  # outputs 79..299: 24 bits hold ±128 only
    r = runner.invoke(app, ["compile", model, "-o", str(tmp_path / "b24"), "--frac-bits", "24"])
    assert r.exit_code == 0, r.output
    assert "warning: tensor 'variable' may saturate" in r.stderr and "drop --frac-bits" in r.stderr
    r = runner.invoke(app, ["compile", model, "-o", str(tmp_path / "default")])
    assert r.exit_code == 0 and "warning" not in r.stderr, r.output
    q = json.loads((tmp_path / "b24" / "manifest.json").read_text())["quantization"]
    assert q["method"] == "fixed" and q["default_frac"] == 24


def test_calibrate_reports_each_tensors_headroom(tmp_path):
    from models.make_digits_cnn import load_images

    x, _ = load_images()
    np.save(tmp_path / "samples.npy", x[:100])
    args = ["compile", str(MODELS / "digits_cnn.onnx"), "-o", str(tmp_path / "cal"), "--calibrate",
            str(tmp_path / "samples.npy")]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    assert "headroom" in r.stdout and any(line.split()[:1] == ["logits"] for line in r.stdout.splitlines())
    rows = {row["name"]: row for row in json.loads(runner.invoke(app, [*args, "--json"]).stdout)["headroom"]}
    assert set(rows) == {"input", "conv1", "relu1", "pool1", "flat", "logits"}
    for row in rows.values():  # calibrated: every observed peak fits with at least the factor 2
        assert row["peak"] is not None and row["peak_headroom_bits"] >= 1
        assert row["holds"] == 2.0 ** (31 - row["frac"])


@pytest.mark.parametrize("spec,message", [("input=1", "NAME=LO,HI"), ("input=2,1", "NAME=LO,HI"),
                                          ("nope=0,1", "--input-range names ['nope']")])
def test_input_range_mistakes_are_one_line_errors(tmp_path, spec, message):
    r = runner.invoke(app, ["compile", str(MODELS / "digits_mlp.onnx"), "--emit", "ir", "--input-range", spec])
    assert r.exit_code == 2 and message in r.stderr, r.output


def test_run_warns_of_an_input_outside_the_range_the_build_assumed(tmp_path):
    out = tmp_path / "mlp"
    assert runner.invoke(app, ["compile", str(MODELS / "digits_mlp.onnx"), "-o", str(out),
                               "--input-range", "input=0,1"]).exit_code == 0
    np.save(tmp_path / "in.npy", np.full((1, 64), 0.5, np.float32))
    np.save(tmp_path / "big.npy", np.full((1, 64), 3.0, np.float32))
    r = runner.invoke(app, ["run", str(out), "--input", str(tmp_path / "in.npy")])
    assert r.exit_code == 0 and "warning" not in r.stderr, r.output
    r = runner.invoke(app, ["run", str(out), "--input", str(tmp_path / "big.npy")])
    assert r.exit_code == 0 and "input 'input' holds values in [3, 3], outside the range [0, 1]" in r.stderr


def example_inputs(name: str) -> list[dict[str, np.ndarray]]:
    if name in ("tiny_llama", "tiny_gpt2"):
        from models.tiny_decoders import CONTEXT, held_out_windows

        return [{"tokens": row[None, :CONTEXT].astype(np.int64)} for row in held_out_windows(2, seed=3)]
    if name == "digits_cnn":
        from models.make_digits_cnn import load_images

        return [{"input": x[None]} for x in load_images()[0][::60]]
    if name == "digits_mlp":
        from sklearn.datasets import load_digits

        return [{"input": (load_digits().data[::60] / 16).astype(np.float32)}]
    from models.make_sklearn_models import MODELS as SKLEARN

    return [{"X": SKLEARN[name][0]()[0]}]


@pytest.mark.parametrize("name", ["digits_mlp", "digits_cnn", "tiny_llama", "tiny_gpt2", "iris_logreg",
                                  "diabetes_linear", "diabetes_gboost", "iris_gboost"])
def test_example_models_values_lie_within_their_analysed_ranges(name):
    model = onnx.load(str(MODELS / f"{name}.onnx"))
    feeds = example_inputs(name)
    fe = lower_model(MODELS / f"{name}.onnx", input_shapes={k: v.shape for k, v in feeds[0].items()})
    assert not at_risk(fe.analysis)
    bounds = {r.name: r for r in fe.analysis.ranges()}
    checked = 0
    for feed in feeds:
        for tensor, arr in float_values(model, feed).items():
            r = bounds.get(tensor)
            if r is None or not np.issubdtype(arr.dtype, np.floating):
                continue
            arr = arr[np.isfinite(arr)]  # an attention mask's −inf saturates by design (DECODERS.md)
            assert r.lo - 1e-6 <= float(arr.min()) and float(arr.max()) <= r.hi + 1e-6, (tensor, r)
            checked += 1
    assert checked >= len(feeds)


def test_forcing_16_bits_on_the_deep_cnn_warns_at_compile_and_run(cnn, tmp_path):
    path, xs, want, _ = cnn
    r = runner.invoke(app, ["compile", str(path), "-o", str(tmp_path / "b16"), "--frac-bits", "16"])
    assert r.exit_code == 0 and "may saturate" in r.stderr, r.output
    np.save(tmp_path / "x.npy", xs[int(np.argmax([np.abs(w).max() for w in want]))])  # logits past 32768
    r = runner.invoke(app, ["run", str(tmp_path / "b16"), "--input", str(tmp_path / "x.npy"), "--json"])
    assert r.exit_code == 0, r.output
    assert "fixed-point saturation" in r.stderr and json.loads(r.stdout)["saturated"]
