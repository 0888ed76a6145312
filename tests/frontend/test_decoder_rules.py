"""The decoder rules on one-op (or one-pattern) ONNX models against onnxruntime: Gather with
run-time indices, Pow, Erf, Gelu, LayerNormalization, RMSNormalization, Softmax on a middle
axis, a −inf mask, and LLaMA's written-out RMSNorm both fused into one `norm` node and, when
the pattern does not apply, lowered op by op. Every case also runs natively, bit for bit."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from opmlc.frontend import lower_model
from opmlc.ir.fixedpoint import dequantize, quantize
from opmlc.ir.types import DType
from tests.kernels.harness import interp_and_native

F = TensorProto.FLOAT


def model(nodes, inputs, outputs, inits=(), opset=17):
    g = helper.make_graph(nodes, "t", inputs, outputs, [numpy_helper.from_array(a, n) for n, a in inits])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


def check(tmp_path, m, feeds: dict, tol: float, ops: dict | None = None):
    """Lower `m`, run it on the interpreter and natively (same bits), compare with onnxruntime."""
    path = tmp_path / "m.onnx"
    path.write_bytes(m.SerializeToString())
    g = lower_model(path).graph
    if ops is not None:
        counts = {op: sum(n.op == op for n in g.nodes) for op in ops}
        assert counts == ops, g.to_text()
    args = []
    for v, x in zip(g.inputs, feeds.values(), strict=True):
        t = g.values[v].type
        args.append(quantize(x, t.frac) if t.dtype is DType.FX32 else x)
    out = interp_and_native(g, args)
    for v, (a, b) in enumerate(zip(out.values, out.native, strict=True)):
        assert np.array_equal(np.reshape(b, np.shape(a)), a), f"native differs at %{v}"
    want = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)
    for v, w in zip(g.outputs, want, strict=True):
        t = g.values[v].type
        got = dequantize(out.values[v], t.frac) if t.dtype is DType.FX32 else out.values[v]
        assert np.max(np.abs(got - w)) <= tol, np.max(np.abs(got - w))
    return g


def test_gather_with_run_time_indices(tmp_path):
    rng = np.random.default_rng(0)
    table = rng.normal(size=(10, 4)).astype(np.float32)
    m = model([helper.make_node("Gather", ["table", "ids"], ["emb"]),
               helper.make_node("Gather", ["x", "cols"], ["picked"], axis=1)],
              [helper.make_tensor_value_info("ids", TensorProto.INT64, [2, 3]),
               helper.make_tensor_value_info("x", F, [3, 5]),
               helper.make_tensor_value_info("cols", TensorProto.INT32, [2])],
              [helper.make_tensor_value_info("emb", F, [2, 3, 4]), helper.make_tensor_value_info("picked", F, [3, 2])],
              [("table", table)])
    feeds = {"ids": np.array([[0, 9, -1], [3, 3, -10]], np.int64), "x": rng.normal(size=(3, 5)).astype(np.float32),
             "cols": np.array([4, -5], np.int32)}
    g = check(tmp_path, m, feeds, 2e-5, {"gather": 2})
    assert g.values[g.inputs[0]].type.dtype is DType.I64


@pytest.mark.parametrize("p", [2.0, 3.0, 0.5, -1.0, -0.5, 1.0, 0.0, 1.5])
def test_pow_by_a_constant_exponent(tmp_path, p):
    x = np.linspace(0.3, 3.0, 24, dtype=np.float32).reshape(4, 6)
    m = model([helper.make_node("Pow", ["x", "p"], ["y"])], [helper.make_tensor_value_info("x", F, [4, 6])],
              [helper.make_tensor_value_info("y", F, [4, 6])], [("p", np.array(p, np.float32))])
    check(tmp_path, m, {"x": x}, 2e-3 * max(1.0, 3.0**p))


@pytest.mark.parametrize("p", [0.3, -2.7, 7.25])
def test_pow_by_any_other_exponent_is_exp_of_y_ln_x(tmp_path, p):
    x = np.linspace(0.3, 3.0, 24, dtype=np.float32).reshape(4, 6)
    m = model([helper.make_node("Pow", ["x", "p"], ["y"])], [helper.make_tensor_value_info("x", F, [4, 6])],
              [helper.make_tensor_value_info("y", F, [4, 6])], [("p", np.array(p, np.float32))])
    check(tmp_path, m, {"x": x}, 2e-3 * max(1.0, 3.0**p), {"unary": 4})  # abs, log, exp, neg


def test_pow_by_a_runtime_exponent_keeps_the_sign_of_odd_powers(tmp_path):
    m = model([helper.make_node("Pow", ["x", "e"], ["y"])],
              [helper.make_tensor_value_info("x", F, [5]), helper.make_tensor_value_info("e", F, [5])],
              [helper.make_tensor_value_info("y", F, [5])])
    feeds = {"x": np.array([-2, -1.5, 2, 3, 0], np.float32), "e": np.array([3, 2, 0.5, -1, 2], np.float32)}
    check(tmp_path, m, feeds, 2e-3)


def test_pow_of_an_integer_tensor_by_a_runtime_exponent_is_refused(tmp_path):
    from opmlc.errors import UnsupportedError

    m = model([helper.make_node("Pow", ["x", "e"], ["y"])],
              [helper.make_tensor_value_info("x", TensorProto.INT32, [2]),
               helper.make_tensor_value_info("e", TensorProto.INT32, [2])],
              [helper.make_tensor_value_info("y", TensorProto.INT32, [2])])
    (tmp_path / "m.onnx").write_bytes(m.SerializeToString())
    with pytest.raises(UnsupportedError, match="Pow of an integer tensor"):
        lower_model(tmp_path / "m.onnx")


def test_erf_and_both_gelus(tmp_path):
    x = np.linspace(-6, 6, 60, dtype=np.float32).reshape(5, 12)
    m = model([helper.make_node("Erf", ["x"], ["e"]), helper.make_node("Gelu", ["x"], ["g"]),
               helper.make_node("Gelu", ["x"], ["gt"], approximate="tanh")],
              [helper.make_tensor_value_info("x", F, [5, 12])],
              [helper.make_tensor_value_info(n, F, [5, 12]) for n in ("e", "g", "gt")], opset=20)
    check(tmp_path, m, {"x": x}, 1e-4)


@pytest.mark.parametrize("axis", [-1, -2])
def test_layer_normalization(tmp_path, axis):
    rng = np.random.default_rng(1)
    x = rng.normal(0.5, 2.0, (2, 3, 16)).astype(np.float32)
    shape = [16] if axis == -1 else [3, 16]
    scale, bias = rng.normal(1, 0.3, shape).astype(np.float32), rng.normal(0, 0.3, shape).astype(np.float32)
    m = model([helper.make_node("LayerNormalization", ["x", "s", "b"], ["y"], axis=axis, epsilon=1e-5)],
              [helper.make_tensor_value_info("x", F, [2, 3, 16])], [helper.make_tensor_value_info("y", F, [2, 3, 16])],
              [("s", scale), ("b", bias)])
    check(tmp_path, m, {"x": x}, 1e-4, {"norm": 1})


def test_rms_normalization(tmp_path):
    rng = np.random.default_rng(2)
    x = rng.normal(0.0, 3.0, (4, 64)).astype(np.float32)
    m = model([helper.make_node("RMSNormalization", ["x", "s"], ["y"], axis=-1, epsilon=1e-6)],
              [helper.make_tensor_value_info("x", F, [4, 64])], [helper.make_tensor_value_info("y", F, [4, 64])],
              [("s", rng.normal(1, 0.3, 64).astype(np.float32))], opset=23)
    check(tmp_path, m, {"x": x}, 1e-4, {"norm": 1})


def rmsnorm_chain(extra_use: bool):
    """LLaMA's RMSNorm as torch exports it; with `extra_use`, Sqrt's output is also an output,
    which stops the fusion."""
    nodes = [helper.make_node("Pow", ["x", "two"], ["p"]),
             helper.make_node("ReduceMean", ["p"], ["m"], axes=[-1], keepdims=1),
             helper.make_node("Add", ["m", "eps"], ["a"]), helper.make_node("Sqrt", ["a"], ["s"]),
             helper.make_node("Div", ["one", "s"], ["r"]), helper.make_node("Mul", ["x", "r"], ["n"]),
             helper.make_node("Mul", ["n", "w"], ["y"])]
    outs = [helper.make_tensor_value_info("y", F, [2, 8, 32])]
    if extra_use:
        outs.append(helper.make_tensor_value_info("s", F, [2, 8, 1]))
    w = np.linspace(0.5, 1.5, 32, dtype=np.float32)
    inits = [("two", np.array(2, np.float32)), ("eps", np.array(1e-5, np.float32)), ("one", np.array(1, np.float32)),
             ("w", w)]
    return model(nodes, [helper.make_tensor_value_info("x", F, [2, 8, 32])], outs, inits)


@pytest.mark.parametrize("extra_use", [False, True])
def test_written_out_rmsnorm_fused_or_lowered_op_by_op(tmp_path, extra_use):
    x = np.random.default_rng(3).normal(0, 1.5, (2, 8, 32)).astype(np.float32)
    check(tmp_path, rmsnorm_chain(extra_use), {"x": x}, 2e-3, {"norm": 0 if extra_use else 1})


def test_softmax_on_a_middle_axis_and_a_minus_inf_mask(tmp_path):
    rng = np.random.default_rng(4)
    x = rng.normal(0, 2, (2, 5, 5)).astype(np.float32)
    mask = np.triu(np.ones((5, 5), bool), 1)
    m = model([helper.make_node("Softmax", ["x"], ["s1"], axis=1),
               helper.make_node("Where", ["mask", "ninf", "x"], ["masked"]),
               helper.make_node("Softmax", ["masked"], ["s2"], axis=-1)],
              [helper.make_tensor_value_info("x", F, [2, 5, 5])],
              [helper.make_tensor_value_info("s1", F, [2, 5, 5]), helper.make_tensor_value_info("s2", F, [2, 5, 5])],
              [("mask", mask), ("ninf", np.array(-np.inf, np.float32))], opset=13)
    check(tmp_path, m, {"x": x}, 1e-4)


def test_layer_normalization_mean_and_inv_std_dev_outputs(tmp_path):
    rng = np.random.default_rng(5)
    x = rng.normal(0.5, 1.0, (3, 4, 8)).astype(np.float32)
    m = model([helper.make_node("LayerNormalization", ["x", "s"], ["y", "mean", "istd"], axis=1)],
              [helper.make_tensor_value_info("x", F, [3, 4, 8])],
              [helper.make_tensor_value_info("y", F, [3, 4, 8]), helper.make_tensor_value_info("mean", F, [3, 1, 1]),
               helper.make_tensor_value_info("istd", F, [3, 1, 1])],
              [("s", rng.normal(1, 0.2, (4, 8)).astype(np.float32))])
    check(tmp_path, m, {"x": x}, 2e-4)
