"""ONNX's quantized formats as onnxruntime's quantizers export them (tests/frontend/
quant_models.py): each model compiles, agrees with onnxruntime running the same quantized
model (labels/argmax equal on every test input, the rest within the bound docs/DESIGN.md
"ONNX quantized formats" states), keeps the model's integers as quantized weights, and gives
the same bits on the interpreter, the native build and the MIPS VM (per node)."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from models.make_digits_cnn import load_images
from models.tiny_decoders import CONTEXT, held_out_windows
from opmlc.backend.program import build_program
from opmlc.commit import tensor_root
from opmlc.errors import UnsupportedError
from opmlc.frontend import lower_model
from opmlc.frontend.context import QuantPolicy
from opmlc.frontend.ranges import at_risk, coarse
from opmlc.ir.fixedpoint import dequantize, quantize
from opmlc.ir.interpreter import run_outputs
from opmlc.ir.types import DType
from tests.frontend import quant_models as qm
from tests.kernels.harness import interp_and_native, run_vm

BERT_INPUTS = 32
BERT_LOGIT_BOUND = 0.1  # measured 0.031: one-step flips of run-time quantized activations
LLAMA_WINDOWS = 4  # 128 positions
LLAMA_LOGIT_BOUND = 0.01  # measured 9e-4, as the float decoder's fixed point (docs/DECODERS.md)
VM_OPS = {"quantize_linear", "qconv", "qmatmul", "pool", "cast"}


def ort_run(path, feeds: dict) -> list[np.ndarray]:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)


def out_frac(g) -> int:
    return g.values[g.outputs[0]].type.frac


def lower_checked(path, **kw):
    """lower_model, asserting the range analysis proves every tensor safe and precise enough
    (nothing the compile would report as "may saturate" or "coarse")."""
    fe = lower_model(path, **kw)
    assert not at_risk(fe.analysis) and not coarse(fe.analysis), [r.name for r in at_risk(fe.analysis) + coarse(fe.analysis)]
    return fe


def check_backends(g, inputs: list[np.ndarray], max_vm_nodes: int = 6) -> None:
    """interp == native on every value; VM == interp on the first nodes of the quantized ops."""
    out = interp_and_native(g, inputs)
    for v, (want, got) in enumerate(zip(out.values, out.native, strict=True)):
        t = g.values[v].type
        assert tensor_root(np.reshape(got, t.shape), t) == tensor_root(want, t), f"native differs at value %{v}"
    program = build_program(g)
    picked = [k for k, n in enumerate(g.nodes) if n.op in VM_OPS][:max_vm_nodes]
    assert picked
    for k in picked:
        t = g.values[g.nodes[k].output].type
        state, (got,) = run_vm(g, program, out.values, node=k, max_steps=1 << 28)
        assert state.exit_code == 0 and tensor_root(got, t) == tensor_root(out.values[g.nodes[k].output], t), k


# -- the digits CNN through quantize_static ----------------------------------------------------

@pytest.fixture(scope="module")
def digits():
    return load_images()


@pytest.fixture(scope="module", params=["QDQ", "QDQ-uint8", "QOperator", "QOperator-residual"])
def cnn(request, tmp_path_factory, digits):
    x, _ = digits
    path = qm.digits_cnn_quantized(tmp_path_factory.mktemp("cnn") / f"cnn_{request.param}.onnx",
                                   request.param, x[:100])
    return request.param, path


def test_cnn_labels_equal_onnxruntime_on_all_1797_digits(cnn, digits):
    fmt, path = cnn
    x, _ = digits
    fe = lower_checked(path, input_shapes={"input": x.shape})
    g = fe.graph
    ms_ops = {n.op_type for n in onnx.load(path).graph.node if n.domain == "com.microsoft"}
    assert ms_ops == ({"QGemm", "QLinearAdd", "QLinearGlobalAveragePool"} if fmt.endswith("residual")
                      else {"QGemm"} if fmt == "QOperator" else set())
    ops = {n.op for n in g.nodes}
    assert {"quantize_linear", "qconv", "qmatmul"} <= ops and not ops & {"conv", "matmul"}, ops
    got = dequantize(run_outputs(g, [quantize(x, g.values[g.inputs[0]].type.frac)])[0], out_frac(g))
    want = ort_run(path, {"input": x})[0]
    # the final DequantizeLinear's scale: one step of the quantized logits
    model = onnx.load(path)
    step = float(onnx.numpy_helper.to_array(next(t for t in model.graph.initializer
                                                 if t.name == model.graph.node[-1].input[1])))
    err = np.abs(got - want)
    flips = int((err > step / 2).sum())
    print(f"{fmt}: max |logit error| {err.max():.3g} (step {step:.3g}), {flips} of {err.size} logits one step off")
    assert err.max() <= step * 1.01  # at most one quantization step (docs/DESIGN.md)
    assert np.array_equal(got.argmax(1), want.argmax(1))


def test_cnn_weights_are_the_models_integers(cnn):
    fmt, path = cnn
    g = lower_model(path).graph
    qs = [g.initializers[n.inputs[1]] for n in g.nodes if n.op in ("qconv", "qmatmul")]
    assert all(g.values[n.inputs[1]].type.dtype is DType.I8 for n in g.nodes if n.op in ("qconv", "qmatmul"))
    model = onnx.load(path)
    ints = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer
            if t.data_type in (TensorProto.INT8, TensorProto.UINT8)}
    conv_w = next(a for name, a in ints.items() if a.ndim == 4)
    shift = 128 if conv_w.dtype == np.uint8 else 0  # uint8 is held as int8 shifted by 128, zero point alike
    assert np.array_equal(qs[0].astype(np.int64), conv_w.astype(np.int64) - shift)  # the model's integers


def test_cnn_interp_native_and_vm_agree(cnn, digits):
    _, path = cnn
    x, _ = digits
    g = lower_model(path).graph  # batch 1
    check_backends(g, [quantize(x[7:8], g.values[g.inputs[0]].type.frac)])


# -- a BERT-style encoder through quantize_dynamic ---------------------------------------------

@pytest.fixture(scope="module")
def bert(tmp_path_factory):
    d = tmp_path_factory.mktemp("bert")
    return qm.bert_dynamic(d / "bert_dynamic.onnx", qm.bert_encoder(d / "bert.onnx"))


def bert_inputs() -> np.ndarray:
    return np.random.default_rng(11).integers(0, qm.VOCAB, (BERT_INPUTS, 1, qm.SEQ)).astype(np.int64)


def test_bert_dynamic_argmax_equals_onnxruntime(bert):
    ops = {n.op_type for n in onnx.load(bert).graph.node}
    assert {"DynamicQuantizeLinear", "MatMulInteger", "DequantizeLinear"} <= ops
    g = lower_checked(bert).graph
    assert sum(n.op == "qmatmul" for n in g.nodes) == 13  # every MatMulInteger keeps its int8 weight
    table = next(n for n in g.nodes if n.op == "qgather")  # and the uint8 embedding stays 8-bit
    assert g.values[table.inputs[0]].type.dtype is DType.I8
    worst, sess = 0.0, ort.InferenceSession(str(bert), providers=["CPUExecutionProvider"])
    for ids in bert_inputs():
        got = dequantize(run_outputs(g, [ids])[0], out_frac(g))
        want = sess.run(None, {"ids": ids})[0]
        assert got.argmax() == want.argmax()
        worst = max(worst, float(np.abs(got - want).max()))
    print(f"bert dynamic: max |logit error| {worst:.3g} over {BERT_INPUTS} inputs")
    assert worst <= BERT_LOGIT_BOUND


def test_bert_dynamic_interp_native_and_vm_agree(bert):
    g = lower_model(bert).graph
    check_backends(g, [bert_inputs()[0]])


# -- the tiny LLaMA through MatMulNBitsQuantizer -----------------------------------------------

@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    return qm.llama_nbits(tmp_path_factory.mktemp("llama") / "llama_nbits.onnx")


def test_llama_nbits_keeps_4_bit_weights_and_agrees_with_onnxruntime(llama):
    model = onnx.load(llama)
    nbits = [n for n in model.graph.node if n.op_type == "MatMulNBits"]
    assert len(nbits) == 15
    g = lower_checked(llama).graph
    q = [n for n in g.nodes if n.op == "qmatmul"]
    assert len(q) == 15 and all(g.values[n.inputs[1]].type.dtype is DType.I4 for n in q)
    assert all(n.attrs["block_size"] == 32 for n in q)
    sess = ort.InferenceSession(str(llama), providers=["CPUExecutionProvider"])
    worst, positions = 0.0, 0
    for row in held_out_windows(LLAMA_WINDOWS):
        toks = row[None, :CONTEXT]
        got = dequantize(run_outputs(g, [toks])[0], out_frac(g))
        want = sess.run(None, {"tokens": toks})[0]
        assert np.array_equal(got.argmax(-1), want.argmax(-1))
        worst = max(worst, float(np.abs(got - want).max()))
        positions += CONTEXT
    print(f"llama MatMulNBits: max |logit error| {worst:.3g} over {positions} positions")
    assert worst <= LLAMA_LOGIT_BOUND


def test_llama_nbits_interp_native_and_vm_agree(llama):
    g = lower_model(llama).graph
    check_backends(g, [held_out_windows(1, seed=3)[:, :CONTEXT]], max_vm_nodes=2)


# -- single ops against onnxruntime, and what is refused -----------------------------------------

def _model(nodes, inputs, outputs, inits=(), opset=21, ms=False):
    imports = [helper.make_opsetid("", opset)] + ([helper.make_opsetid("com.microsoft", 1)] if ms else [])
    m = helper.make_model(helper.make_graph(nodes, "g", inputs, outputs, list(inits)), opset_imports=imports)
    m.ir_version = 10
    return m


def test_quantize_linear_rounds_half_to_even_and_saturates_like_onnxruntime(tmp_path):
    x = np.array([[-300, -2.5, -1.5, -0.5, 0.5, 1.5, 2.5, 3.5, 127.5, 300]], np.float32) * 0.5
    cases = [(TensorProto.UINT8, 3), (TensorProto.INT8, -1), (TensorProto.INT4, 0), (TensorProto.UINT4, 1),
             (TensorProto.INT16, 5)]
    for k, (ty, zp) in enumerate(cases):
        inits = [helper.make_tensor("s", TensorProto.FLOAT, [], [0.5]), helper.make_tensor("z", ty, [], [zp])]
        nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),  # onnxruntime gives no int4 arrays:
                 helper.make_node("Cast", ["q"], ["y"], to=TensorProto.INT32)]  # compared as int32
        m = _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x.shape))],
                   [helper.make_tensor_value_info("y", TensorProto.INT32, list(x.shape))], inits)
        path = tmp_path / f"q{k}.onnx"
        onnx.save(m, path)
        g = lower_model(path, QuantPolicy(analyse=True, input_ranges={"x": (-160.0, 160.0)})).graph
        got = run_outputs(g, [quantize(x, g.values[g.inputs[0]].type.frac)])[0]
        want = ort_run(path, {"x": x})[0]
        assert np.array_equal(got, want.astype(np.int64)), (ty, got, want)


def test_per_axis_quantize_dequantize_and_qlinear_matmul_match_onnxruntime(tmp_path):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((3, 4)).astype(np.float32)
    w = rng.integers(-128, 128, (4, 5)).astype(np.int8)
    # scales whose ratios make no exact ties (an exact tie in float may round the other way in
    # fixed point: the one-step difference docs/DESIGN.md bounds)
    inits = [helper.make_tensor("s", TensorProto.FLOAT, [4], [0.0113, 0.0217, 0.0311, 0.0473]),
             helper.make_tensor("z", TensorProto.UINT8, [4], [128, 120, 130, 127]),
             helper.make_tensor("xs", TensorProto.FLOAT, [], [0.0193]), helper.make_tensor("xz", TensorProto.UINT8, [], [128]),
             onnx.numpy_helper.from_array(w, "w"), helper.make_tensor("ws", TensorProto.FLOAT, [5], [0.01, 0.02, 0.005, 0.04, 0.03]),
             helper.make_tensor("wz", TensorProto.INT8, [5], [0] * 5), helper.make_tensor("ys", TensorProto.FLOAT, [], [0.05]),
             helper.make_tensor("yz", TensorProto.UINT8, [], [100])]
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], axis=1),
             helper.make_node("DequantizeLinear", ["q", "s", "z"], ["d"], axis=1),
             helper.make_node("QuantizeLinear", ["d", "xs", "xz"], ["qx"]),
             helper.make_node("QLinearMatMul", ["qx", "xs", "xz", "w", "ws", "wz", "ys", "yz"], ["y"])]
    m = _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 4])],
               [helper.make_tensor_value_info("y", TensorProto.UINT8, [3, 5]),
                helper.make_tensor_value_info("d", TensorProto.FLOAT, [3, 4])], inits)
    path = tmp_path / "qmm.onnx"
    onnx.save(m, path)
    g = lower_model(path).graph
    got = run_outputs(g, [quantize(x, g.values[g.inputs[0]].type.frac)])
    want = ort_run(path, {"x": x})
    assert np.array_equal(got[0], want[0])
    assert np.abs(dequantize(got[1], g.values[g.outputs[1]].type.frac) - want[1]).max() < 1e-6


def test_other_contrib_ops_are_refused_by_name(tmp_path):
    inits = [helper.make_tensor(n, TensorProto.FLOAT, [], [0.1]) for n in ("xs", "ys")] + \
            [helper.make_tensor(n, TensorProto.UINT8, [], [0]) for n in ("xz", "yz")]
    node = helper.make_node("QLinearSigmoid", ["x", "xs", "xz", "ys", "yz"], ["y"], domain="com.microsoft")
    m = _model([node], [helper.make_tensor_value_info("x", TensorProto.UINT8, [2])],
               [helper.make_tensor_value_info("y", TensorProto.UINT8, [2])], inits, ms=True)
    path = tmp_path / "qsigmoid.onnx"
    onnx.save(m, path)
    with pytest.raises(UnsupportedError, match=r"com\.microsoft:QLinearSigmoid is not supported.*QLinearAdd"):
        lower_model(path)


def test_matmul_nbits_with_g_idx_is_refused(tmp_path):
    b = np.zeros((4, 1, 16), np.uint8)
    inits = [onnx.numpy_helper.from_array(b, "b"), onnx.numpy_helper.from_array(np.ones(4, np.float32), "s"),
             onnx.numpy_helper.from_array(np.zeros(32, np.int32), "g")]
    node = helper.make_node("MatMulNBits", ["a", "b", "s", "", "g"], ["y"], domain="com.microsoft",
                            K=32, N=4, bits=4, block_size=32)
    m = _model([node], [helper.make_tensor_value_info("a", TensorProto.FLOAT, [1, 32])],
               [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], inits, ms=True)
    path = tmp_path / "gidx.onnx"
    onnx.save(m, path)
    with pytest.raises(UnsupportedError, match="g_idx"):
        lower_model(path)


def test_llama_qdq_int4_blocked_weights_are_kept_and_agree_with_onnxruntime(tmp_path):
    path = qm.llama_qdq_int4(tmp_path / "llama_qdq4.onnx")
    g = lower_checked(path).graph
    q = [n for n in g.nodes if n.op == "qmatmul"]
    assert len(q) == 15 and all(g.values[n.inputs[1]].type.dtype is DType.I4 for n in q)
    # onnxruntime's graph optimizer fuses DequantizeLinear + MatMul into a kernel that moves the
    # logits by 0.2 from its own unfused result; the model's semantics is the unfused one
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    worst = 0.0
    for row in held_out_windows(2):
        toks = row[None, :CONTEXT]
        got = dequantize(run_outputs(g, [toks])[0], out_frac(g))
        want = sess.run(None, {"tokens": toks})[0]
        assert np.array_equal(got.argmax(-1), want.argmax(-1))
        worst = max(worst, float(np.abs(got - want).max()))
    print(f"llama QDQ int4: max |logit error| {worst:.3g}")
    assert worst <= LLAMA_LOGIT_BOUND


def test_qlinear_mul_and_add_match_onnxruntime(tmp_path):
    rng = np.random.default_rng(4)
    a = rng.integers(0, 256, (2, 3, 4)).astype(np.uint8)
    b = rng.integers(0, 256, (2, 3, 4)).astype(np.uint8)
    scalars = {"as": 0.0213, "bs": 0.0177, "cs": 0.0391}
    inits = [helper.make_tensor(n, TensorProto.FLOAT, [], [v]) for n, v in scalars.items()] + \
            [helper.make_tensor(n, TensorProto.UINT8, [], [v]) for n, v in (("az", 121), ("bz", 130), ("cz", 128))]
    ins = [helper.make_tensor_value_info(n, TensorProto.UINT8, [2, 3, 4]) for n in ("a", "b")]
    for op in ("QLinearMul", "QLinearAdd"):
        node = helper.make_node(op, ["a", "as", "az", "b", "bs", "bz", "cs", "cz"], ["y"], domain="com.microsoft")
        m = _model([node], ins, [helper.make_tensor_value_info("y", TensorProto.UINT8, [2, 3, 4])], inits, ms=True)
        path = tmp_path / f"{op}.onnx"
        onnx.save(m, path)
        g = lower_checked(path).graph
        got = run_outputs(g, [a.astype(np.int32), b.astype(np.int32)])[0]
        want = ort_run(path, {"a": a, "b": b})[0]
        assert np.abs(got.astype(np.int64) - want).max() <= 1, op  # one step at most (docs/DESIGN.md)
        assert np.mean(got == want) >= 0.95, op
