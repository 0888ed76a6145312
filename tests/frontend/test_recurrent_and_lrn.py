"""RNN, GRU, LSTM (unrolled, rules/recurrent.py) and LRN (rules/logs.py) against float64/float32
references within their stated bounds (docs/CONFORMANCE.md), on constant weights as models
have them; the run-time sequence_lens masking; and one lowered graph of each bit for bit on the
interpreter, natively and in the MIPS VM."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from opmlc.errors import UnsupportedError
from opmlc.frontend import lower_model
from opmlc.frontend.context import QuantPolicy
from opmlc.ir.fixedpoint import dequantize, quantize
from opmlc.ir.interpreter import run_graph
from tests.kernels.test_kernels import check_all_backends

GATES = {"RNN": 1, "GRU": 3, "LSTM": 4}
SLOTS = ["X", "W", "R", "B", "seq", "h0", "c0", "P"]


def recurrent_model(op, S, B, N_IN, H, attrs, consts, outs, seq_input=False):
    rng = np.random.default_rng(0)
    G, D = GATES[op], 2 if attrs.get("direction") == "bidirectional" else 1
    arrs = {"W": rng.normal(0, .5, (D, G * H, N_IN)), "R": rng.normal(0, .5, (D, G * H, H)),
            "B": rng.normal(0, .3, (D, 2 * G * H)), "h0": rng.normal(0, .5, (D, B, H)),
            "c0": rng.normal(0, .5, (D, B, H)), "P": rng.normal(0, .5, (D, 3 * H))}
    inits = [numpy_helper.from_array(arrs[n].astype(np.float32), n) for n in consts]
    slots = SLOTS[:8 if op == "LSTM" else 6]
    used = {"X", *consts} | ({"seq"} if seq_input else set())
    ins = [n if n in used else "" for n in slots]
    while not ins[-1]:
        ins.pop()
    node = helper.make_node(op, ins, list(outs), hidden_size=H, **attrs)
    shapes = {"Y": [S, D, B, H], "Y_h": [D, B, H], "Y_c": [D, B, H]}
    graph_in = [helper.make_tensor_value_info("X", TensorProto.FLOAT, [S, B, N_IN])]
    if seq_input:
        graph_in.append(helper.make_tensor_value_info("seq", TensorProto.INT32, [B]))
    g = helper.make_graph([node], "g", graph_in,
                          [helper.make_tensor_value_info(o, TensorProto.FLOAT, shapes[o]) for o in outs], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 22)])


def lower(model, tmp_path, frac):
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    return lower_model(path, QuantPolicy(default=frac)).graph


def run(graph, feeds):
    q = [quantize(a, graph.values[v].type.frac) if a.dtype.kind == "f" else a for a, v in zip(feeds, graph.inputs, strict=True)]
    vals = run_graph(graph, q)
    return q, [dequantize(vals[v], graph.values[v].type.frac) for v in graph.outputs]


CASES = [
    ("LSTM", {"direction": "bidirectional"}, ["W", "R", "B", "h0", "c0", "P"], ("Y", "Y_h", "Y_c")),
    ("GRU", {"direction": "bidirectional", "linear_before_reset": 1}, ["W", "R", "B", "h0"], ("Y", "Y_h")),
    ("GRU", {"direction": "reverse", "layout": 0}, ["W", "R", "B"], ("Y", "Y_h")),
    ("RNN", {"direction": "reverse"}, ["W", "R", "B", "h0"], ("Y", "Y_h")),  # onnx's reference ignores clip
]


@pytest.mark.parametrize("frac", [16, 24])
@pytest.mark.parametrize("op,attrs,consts,outs", CASES)
def test_recurrent_layers_within_the_stated_bound(tmp_path, op, attrs, consts, outs, frac):
    S, B, N_IN, H = 6, 2, 3, 4
    model = recurrent_model(op, S, B, N_IN, H, attrs, consts, outs)
    x = np.random.default_rng(1).normal(0, 1, (S, B, N_IN)).astype(np.float32)
    want = ReferenceEvaluator(model).run(None, {"X": x})
    _, got = run(lower(model, tmp_path, frac), [x])
    bound = S * 2.0 ** (1 - frac) + 1e-6  # docs/CONFORMANCE.md; 1e-6: the float32 reference
    for w, g in zip(want, got, strict=True):
        assert np.max(np.abs(g - w)) <= bound


def test_relu_activation_and_clip_follow_the_formula(tmp_path):
    S, B, N_IN, H = 4, 2, 3, 4
    model = recurrent_model("RNN", S, B, N_IN, H, {"activations": ["Relu"], "clip": 1.5}, ["W", "R", "B"], ("Y",))
    x = np.random.default_rng(2).normal(0, 1, (S, B, N_IN)).astype(np.float32)
    init = {t.name: numpy_helper.to_array(t).astype(np.float64) for t in model.graph.initializer}
    W, R, Bb = init["W"][0], init["R"][0], init["B"][0]
    h, want = np.zeros((B, H)), []
    for t in range(S):
        h = np.maximum(np.clip(x[t] @ W.T + h @ R.T + Bb[:H] + Bb[H:], -1.5, 1.5), 0)
        want.append(h)
    _, (got,) = run(lower(model, tmp_path, 20), [x])
    assert np.max(np.abs(got[:, 0] - np.stack(want))) <= S * 2.0**-19


def test_runtime_sequence_lens_keep_the_state_and_zero_the_tail(tmp_path):
    S, B, N_IN, H = 4, 2, 3, 3
    model = recurrent_model("LSTM", S, B, N_IN, H, {}, ["W", "R", "B"], ("Y", "Y_h", "Y_c"), seq_input=True)
    x = np.random.default_rng(3).normal(0, 1, (S, B, N_IN)).astype(np.float32)
    _, (y, yh, yc) = run(lower(model, tmp_path, 24), [x, np.array([4, 2], dtype=np.int32)])
    short = recurrent_model("LSTM", 2, 1, N_IN, H, {}, ["W", "R", "B"], ("Y", "Y_h", "Y_c"))
    w_y, w_h, w_c = ReferenceEvaluator(short).run(None, {"X": x[:2, 1:]})
    assert np.max(np.abs(y[:2, :, 1:] - w_y)) <= 1e-5
    assert np.all(y[2:, :, 1] == 0)
    assert np.max(np.abs(yh[:, 1:] - w_h)) <= 1e-5 and np.max(np.abs(yc[:, 1:] - w_c)) <= 1e-5


def test_unsupported_recurrent_attributes_are_named(tmp_path):
    model = recurrent_model("GRU", 2, 1, 2, 2, {"activations": ["HardSigmoid", "Tanh"]}, ["W", "R"], ("Y",))
    with pytest.raises(UnsupportedError, match="HardSigmoid"):
        lower(model, tmp_path, 16)
    model = recurrent_model("LSTM", 2, 1, 2, 2, {"direction": "reverse"}, ["W", "R"], ("Y",), seq_input=True)
    with pytest.raises(UnsupportedError, match="sequence_lens"):
        lower(model, tmp_path, 16)


def lrn_model(shape, **attrs):
    node = helper.make_node("LRN", ["X"], ["Y"], **attrs)
    g = helper.make_graph([node], "lrn", [helper.make_tensor_value_info("X", TensorProto.FLOAT, shape)],
                          [helper.make_tensor_value_info("Y", TensorProto.FLOAT, shape)])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])


def lrn_spec(x, size, alpha, beta, bias):
    """ONNX's formula in float64 (the window clipped at the channel edges)."""
    x = x.astype(np.float64)
    c, lo, hi = x.shape[1], (size - 1) // 2, size - 1 - (size - 1) // 2
    sq = np.stack([(x[:, max(0, k - lo):min(c - 1, k + hi) + 1] ** 2).sum(1) for k in range(c)], axis=1)
    return x / (bias + alpha / size * sq) ** beta


@pytest.mark.parametrize("frac", [16, 24])
@pytest.mark.parametrize("attrs", [dict(size=5, alpha=1e-4, beta=0.75, bias=1.0),  # AlexNet, Inception-v1
                                   dict(size=3, alpha=0.02, beta=0.5, bias=2.0),
                                   dict(size=4, alpha=0.1, beta=1.25, bias=0.5)])
def test_lrn_within_the_stated_bound(tmp_path, attrs, frac):
    shape = [2, 7, 3, 3]
    lim = 2.0 ** (30 - frac)
    x = np.clip(np.random.default_rng(4).normal(0, 4, shape), -lim, lim).astype(np.float32)
    want = lrn_spec(x, **attrs)
    _, (got,) = run(lower(lrn_model(shape, **attrs), tmp_path, frac), [x])
    g = 2 * frac - 31  # the squares' bits
    rel = 2e-7 + attrs["beta"] * attrs["alpha"] * 2.0 ** (2 - g) / attrs["bias"]  # docs/CONFORMANCE.md
    assert np.all(np.abs(got - want) <= 2.0 ** -(frac + 1) + rel * np.abs(want))


@pytest.fixture(scope="module")
def small_graphs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("rec")
    graphs = []
    for k, (op, attrs, consts, outs) in enumerate(CASES[:2]):
        model = recurrent_model(op, 2, 1, 2, 2, attrs, consts, outs)
        (tmp / str(k)).mkdir()
        graphs.append((lower(model, tmp / str(k), 20), [np.random.default_rng(k).normal(0, 1, (2, 1, 2)).astype(np.float32)]))
    (tmp / "lrn").mkdir()
    graphs.append((lower(lrn_model([1, 4, 2, 1], size=3, alpha=0.01, beta=0.75, bias=1.0), tmp / "lrn", 20),
                   [np.random.default_rng(9).normal(0, 2, (1, 4, 2, 1)).astype(np.float32)]))
    return graphs


@pytest.mark.parametrize("k", range(3))
def test_lowered_lstm_gru_lrn_are_bit_exact_natively_and_in_the_vm(small_graphs, k):
    graph, feeds = small_graphs[k]
    q, _ = run(graph, feeds)
    check_all_backends(graph, q)
