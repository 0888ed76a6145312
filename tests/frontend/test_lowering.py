"""Each lowering rule on small ONNX graphs, against onnxruntime float within the fixed-point
bound of the inputs' bits (values here are O(1), so 16 bits give errors ≤ ~1e-3)."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from opmlc.frontend import lower_model
from opmlc.ir.fixedpoint import dequantize, quantize
from opmlc.ir.interpreter import run_outputs

BOUND = 2e-3


def make(tmp_path, nodes, inputs, outputs, inits=(), opset=13):
    graph = helper.make_graph(
        nodes,
        "t",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in outputs],
        [numpy_helper.from_array(np.asarray(v, dtype=np.float32), k) for k, v in inits],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    return path


def check(path, feeds):
    fe = lower_model(path, input_shapes={k: v.shape for k, v in feeds.items()})
    q = [quantize(feeds[name], fe.graph.values[v].type.frac) for name, v in zip(fe.input_names, fe.graph.inputs, strict=True)]
    outs = run_outputs(fe.graph, q)
    want = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)
    for o, v, w in zip(outs, fe.graph.outputs, want, strict=True):
        got = dequantize(o, fe.graph.values[v].type.frac)
        assert got.shape == w.shape
        assert np.max(np.abs(got - w)) <= BOUND
    return fe


RNG = np.random.default_rng(0)
W = RNG.normal(0, 0.5, (4, 3)).astype(np.float32)
B = RNG.normal(0, 0.5, (3,)).astype(np.float32)
X = RNG.normal(0, 1, (2, 4)).astype(np.float32)


@pytest.mark.parametrize("trans_b,alpha,beta", [(0, 1.0, 1.0), (1, 1.0, 1.0), (0, 0.5, 2.0)])
def test_gemm_with_constant_weights(tmp_path, trans_b, alpha, beta):
    w = W.T if trans_b else W
    node = helper.make_node("Gemm", ["x", "w", "b"], ["y"], transB=trans_b, alpha=alpha, beta=beta)
    fe = check(make(tmp_path, [node], [("x", [2, 4])], [("y", [2, 3])], [("w", w), ("b", B)]), {"x": X})
    assert [n.op for n in fe.graph.nodes] == ["matmul"]  # bias fused, transpose folded


def test_gemm_with_a_full_bias_matrix_adds_it(tmp_path):
    c = RNG.normal(size=(2, 3)).astype(np.float32)
    node = helper.make_node("Gemm", ["x", "w", "c"], ["y"])
    fe = check(make(tmp_path, [node], [("x", [2, 4])], [("y", [2, 3])], [("w", W), ("c", c)]), {"x": X})
    assert [(n.op, n.attrs.get("kind")) for n in fe.graph.nodes] == [("matmul", None), ("binary", "add")]


def test_matmul_add_relu_and_runtime_operands(tmp_path):
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["h"]),
        helper.make_node("Add", ["h", "b"], ["hb"]),
        helper.make_node("Relu", ["hb"], ["r"]),
        helper.make_node("MatMul", ["r", "z"], ["y"]),  # both operands computed at run time
    ]
    z = RNG.normal(size=(3, 2)).astype(np.float32)
    check(make(tmp_path, nodes, [("x", [2, 4]), ("z", [3, 2])], [("y", [2, 2])], [("w", W), ("b", B)]),
          {"x": X, "z": z})


def test_matmul_with_a_vector_operand(tmp_path):
    node = helper.make_node("MatMul", ["v", "w"], ["y"])
    check(make(tmp_path, [node], [("v", [4])], [("y", [3])], [("w", W)]), {"v": X[0]})


def test_reshape_flatten_identity_dropout_and_folded_shape_arithmetic(tmp_path):
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Constant", [], ["minus1"], value=numpy_helper.from_array(np.array([-1], np.int64))),
        helper.make_node("Gather", ["s", "zero"], ["batch"], axis=0),
        helper.make_node("Unsqueeze", ["batch", "axes0"], ["batch1"]),
        helper.make_node("Concat", ["batch1", "minus1"], ["shape2"], axis=0),
        helper.make_node("Reshape", ["x", "shape2"], ["flat"]),
        helper.make_node("Identity", ["flat"], ["same"]),
        helper.make_node("Dropout", ["same"], ["dropped"]),
        helper.make_node("Flatten", ["dropped"], ["y"], axis=1),
    ]
    inits = [("zero", np.array(0, np.int64)), ("axes0", np.array([0], np.int64))]
    graph = helper.make_graph(
        nodes, "t", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 6])],
        [numpy_helper.from_array(v, k) for k, v in inits],
    )
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)
    x = RNG.normal(size=(2, 3, 2)).astype(np.float32)
    fe = check(path, {"x": x})
    assert [n.op for n in fe.graph.nodes] == ["reshape"]  # the shape subgraph is folded away


@pytest.mark.parametrize("opset,axis,shape", [(13, -1, [2, 5]), (11, 1, [2, 3, 4]), (13, 2, [2, 3, 4])])
def test_softmax(tmp_path, opset, axis, shape):
    node = helper.make_node("Softmax", ["x"], ["y"], axis=axis)
    x = RNG.normal(0, 2, size=shape).astype(np.float32)
    check(make(tmp_path, [node], [("x", shape)], [("y", shape)], opset=opset), {"x": x})


def test_an_output_that_is_an_input_gets_its_own_value(tmp_path):
    node = helper.make_node("Identity", ["x"], ["y"])
    fe = check(make(tmp_path, [node], [("x", [2, 4])], [("y", [2, 4])]), {"x": X})
    assert fe.graph.outputs[0] != fe.graph.inputs[0]
