"""TopK and Scan lowered onto existing IR ops: TopK's values and indices equal onnxruntime's
exactly (ties lower index first, largest and smallest, any axis, values equal to the masking
sentinel), Scan's unrolling keeps directions and axes, both refuse what they cannot do by
name, and interpreter, native build and VM agree on them bit for bit."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from opmlc.api import run
from opmlc.artifact import compile_model
from opmlc.errors import UnsupportedError
from opmlc.frontend import lower_model
from opmlc.ir.fixedpoint import dequantize, quantize
from opmlc.ir.interpreter import run_outputs
from opmlc.ir.types import DType


def save(tmp_path, nodes, inputs, outputs, inits=(), name="m.onnx"):
    g = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(inits))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    path = tmp_path / name
    onnx.save(m, path)
    return path


def topk_model(tmp_path, shape, k, axis, largest, elem=TensorProto.FLOAT):
    out_shape = list(shape)
    out_shape[axis] = k
    node = helper.make_node("TopK", ["X", "k"], ["values", "indices"], axis=axis, largest=largest)
    return save(tmp_path, [node], [helper.make_tensor_value_info("X", elem, shape)],
                [helper.make_tensor_value_info("values", elem, out_shape),
                 helper.make_tensor_value_info("indices", TensorProto.INT64, out_shape)],
                [onnx.numpy_helper.from_array(np.array([k], np.int64), "k")])


def ours(path, x):
    g = lower_model(path).graph
    t = g.values[g.inputs[0]].type
    xin = quantize(x, t.frac) if t.dtype is DType.FX32 else x
    outs = run_outputs(g, [xin])
    return [dequantize(o, g.values[v].type.frac) if g.values[v].type.dtype is DType.FX32 else o
            for o, v in zip(outs, g.outputs, strict=True)]


def onnxruntime(path, x):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"X": x})


@pytest.mark.parametrize("axis", [-1, 0])
@pytest.mark.parametrize("largest", [0, 1])
def test_topk_with_many_ties_equals_onnxruntime(tmp_path, axis, largest):
    rng = np.random.default_rng(3 + axis + 2 * largest)
    x = rng.integers(-3, 4, size=(5, 12)).astype(np.float32) / 4  # exact in fixed point, full of ties
    path = topk_model(tmp_path, list(x.shape), 4, axis, largest)
    (values, indices), (ref_v, ref_i) = ours(path, x), onnxruntime(path, x)
    assert np.array_equal(indices, ref_i) and np.array_equal(values, ref_v)


def test_topk_values_equal_to_the_sentinel_are_still_taken_in_index_order(tmp_path):
    big = np.iinfo(np.int32).max
    x = np.array([[big, 5, big, big, -7]], np.int32)
    path = topk_model(tmp_path, [1, 5], 5, -1, 0, TensorProto.INT32)
    (values, indices), (ref_v, ref_i) = ours(path, x), onnxruntime(path, x)
    assert indices.tolist() == ref_i.tolist() == [[4, 1, 0, 2, 3]]
    assert np.array_equal(values, ref_v)


def test_topk_refuses_a_run_time_k(tmp_path):
    node = helper.make_node("TopK", ["X", "K"], ["v", "i"])
    path = save(tmp_path, [node], [helper.make_tensor_value_info("X", TensorProto.FLOAT, [2, 6]),
                                   helper.make_tensor_value_info("K", TensorProto.INT64, [1])],
                [helper.make_tensor_value_info("v", TensorProto.FLOAT, [2, "k"]),
                 helper.make_tensor_value_info("i", TensorProto.INT64, [2, "k"])])
    with pytest.raises(UnsupportedError, match="TopK's k"):
        lower_model(path)


def scan_model(tmp_path):
    """A running sum over the rows of S (read in reverse), with a scan output that records the
    state times X, stacked in reverse along axis 1."""
    body = helper.make_graph(
        [helper.make_node("Add", ["acc_in", "row"], ["acc_out"]),
         helper.make_node("Mul", ["acc_out", "X"], ["scaled"])],
        "body",
        [helper.make_tensor_value_info("acc_in", TensorProto.FLOAT, [3]),
         helper.make_tensor_value_info("row", TensorProto.FLOAT, [3])],
        [helper.make_tensor_value_info("acc_out", TensorProto.FLOAT, [3]),
         helper.make_tensor_value_info("scaled", TensorProto.FLOAT, [3])])
    node = helper.make_node("Scan", ["init", "S"], ["final", "ys"], body=body, num_scan_inputs=1,
                            scan_input_directions=[1], scan_input_axes=[1],
                            scan_output_axes=[1], scan_output_directions=[1])
    return save(tmp_path, [node],
                [helper.make_tensor_value_info("X", TensorProto.FLOAT, [3]),
                 helper.make_tensor_value_info("S", TensorProto.FLOAT, [3, 4])],
                [helper.make_tensor_value_info("final", TensorProto.FLOAT, [3]),
                 helper.make_tensor_value_info("ys", TensorProto.FLOAT, [3, 4])],
                [onnx.numpy_helper.from_array(np.array([0.5, -1.0, 2.0], np.float32), "init")], "scan.onnx")


def test_scan_unrolled_keeps_directions_and_axes(tmp_path):
    path = scan_model(tmp_path)
    x = np.array([1.0, 0.5, -2.0], np.float32)
    s = np.arange(12, dtype=np.float32).reshape(3, 4) / 8
    g = lower_model(path).graph
    outs = run_outputs(g, [quantize(x, g.values[g.inputs[0]].type.frac), quantize(s, g.values[g.inputs[1]].type.frac)])
    ref = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"X": x, "S": s})
    for o, r, v in zip(outs, ref, g.outputs, strict=True):
        assert np.abs(dequantize(o, g.values[v].type.frac) - r).max() <= 2.0**-14


def test_topk_and_scan_agree_on_interpreter_native_and_vm(tmp_path):
    rng = np.random.default_rng(5)
    x = (rng.integers(-8, 8, size=(3, 10)) / 8).astype(np.float32)
    build = compile_model(topk_model(tmp_path, [3, 10], 3, -1, 0), tmp_path / "topk")
    roots = {b: run(build, [x], b).output_roots for b in ("interp", "native", "vm")}
    assert roots["interp"] == roots["native"] == roots["vm"]
    scan = compile_model(scan_model(tmp_path), tmp_path / "scan")
    ins = [np.array([1.0, 0.5, -2.0], np.float32), rng.normal(size=(3, 4)).astype(np.float32)]
    roots = {b: run(scan, ins, b).output_roots for b in ("interp", "native", "vm")}
    assert roots["interp"] == roots["native"] == roots["vm"]
