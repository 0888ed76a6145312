"""Quantized test models, made by onnxruntime's own quantizers from float models: the digits
CNN (models/digits_cnn.onnx) by `quantize_static` in QDQ and QOperator form, a small
BERT-style encoder (built here with onnx.helper, fixed-seed random weights) by
`quantize_dynamic`, and the tiny LLaMA decoder (models/tiny_llama.onnx) by
`MatMulNBitsQuantizer` (4 bits, block 32). Used by tests/frontend/test_onnx_quantized.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from tests.conftest import MODELS

VOCAB, SEQ, HIDDEN, HEADS, FFN, LAYERS, CLASSES = 64, 16, 32, 2, 64, 2, 4


def residual_cnn(out: Path, seed: int = 0) -> Path:
    """A small residual CNN on 8×8 digits (fixed-seed random weights): Conv → Relu → Conv,
    + the skip, Relu, GlobalAveragePool, Flatten, Gemm."""
    rng = np.random.default_rng(seed)
    inits = [_w(rng, "c1", (8, 1, 3, 3), 0.5), _w(rng, "c1b", (8,), 0.1), _w(rng, "c2", (8, 8, 3, 3), 0.2),
             _w(rng, "c2b", (8,), 0.1), _w(rng, "fc", (10, 8), 0.5), _w(rng, "fcb", (10,), 0.1)]
    nodes = [helper.make_node("Conv", ["input", "c1", "c1b"], ["a"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["a"], ["ar"]),
             helper.make_node("Conv", ["ar", "c2", "c2b"], ["b"], pads=[1, 1, 1, 1]),
             helper.make_node("Add", ["ar", "b"], ["s"]),
             helper.make_node("Relu", ["s"], ["sr"]),
             helper.make_node("GlobalAveragePool", ["sr"], ["g"]),
             helper.make_node("Flatten", ["g"], ["f"]),
             helper.make_node("Gemm", ["f", "fc", "fcb"], ["logits"], transB=1)]
    graph = helper.make_graph(nodes, "residual", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1, 8, 8])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, out)
    return out


def digits_cnn_quantized(out: Path, fmt: str, calibration: np.ndarray) -> Path:
    """The digits CNN through quantize_static: "QDQ" with int8 activations and weights per
    tensor, "QDQ-uint8" with uint8 activations and weights per channel, or "QOperator" with
    uint8 activations and int8 per-channel weights (QLinearConv, QGemm); "QOperator-residual":
    the residual CNN so (QLinearAdd and QLinearGlobalAveragePool too)."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.rows = iter([{"input": calibration[i:i + 1]} for i in range(len(calibration))])

        def get_next(self):
            return next(self.rows, None)

    int8 = fmt == "QDQ"
    src = residual_cnn(out.with_suffix(".float.onnx")) if fmt.endswith("residual") else MODELS / "digits_cnn.onnx"
    quantize_static(str(src), str(out), Reader(),
                    quant_format=QuantFormat.QDQ if fmt.startswith("QDQ") else QuantFormat.QOperator,
                    activation_type=QuantType.QInt8 if int8 else QuantType.QUInt8,
                    weight_type=QuantType.QUInt8 if fmt == "QDQ-uint8" else QuantType.QInt8, per_channel=not int8)
    return out


def _w(rng: np.random.Generator, name: str, shape: tuple[int, ...], scale: float) -> onnx.TensorProto:
    return numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name)


def bert_encoder(out: Path, seed: int = 0) -> Path:
    """Token + position embeddings, LAYERS post-norm blocks (multi-head self-attention, a
    Gelu MLP, LayerNorm after each residual), the first token's state into a classifier."""
    rng = np.random.default_rng(seed)
    inits = [_w(rng, "tok_emb", (VOCAB, HIDDEN), 1.0), _w(rng, "pos_emb", (1, SEQ, HIDDEN), 0.5)]
    nodes = [helper.make_node("Gather", ["tok_emb", "ids"], ["e"]), helper.make_node("Add", ["e", "pos_emb"], ["h0"])]
    dh = HIDDEN // HEADS

    def const(name, arr):
        inits.append(numpy_helper.from_array(np.asarray(arr), name))
        return name

    const("heads_shape", np.array([1, SEQ, HEADS, dh], np.int64))
    const("merge_shape", np.array([1, SEQ, HIDDEN], np.int64))
    const("inv_sqrt_d", np.array(1 / np.sqrt(dh), np.float32))
    h = "h0"
    for i in range(LAYERS):
        p = f"l{i}_"
        for nm in ("q", "k", "v", "o"):
            inits += [_w(rng, p + nm, (HIDDEN, HIDDEN), HIDDEN**-0.5), _w(rng, p + nm + "_b", (HIDDEN,), 0.1)]
        inits += [_w(rng, p + "f1", (HIDDEN, FFN), HIDDEN**-0.5), _w(rng, p + "f1_b", (FFN,), 0.1),
                  _w(rng, p + "f2", (FFN, HIDDEN), FFN**-0.5), _w(rng, p + "f2_b", (HIDDEN,), 0.1)]
        for ln in ("ln1", "ln2"):
            inits += [numpy_helper.from_array((1 + 0.1 * rng.standard_normal(HIDDEN)).astype(np.float32), p + ln + "_g"),
                      _w(rng, p + ln + "_b", (HIDDEN,), 0.1)]
        for nm in ("q", "k", "v"):
            nodes += [helper.make_node("MatMul", [h, p + nm], [p + nm + "_mm"]),
                      helper.make_node("Add", [p + nm + "_mm", p + nm + "_b"], [p + nm + "_x"]),
                      helper.make_node("Reshape", [p + nm + "_x", "heads_shape"], [p + nm + "_r"]),
                      helper.make_node("Transpose", [p + nm + "_r"], [p + nm + "_t"],
                                       perm=[0, 2, 3, 1] if nm == "k" else [0, 2, 1, 3])]
        nodes += [helper.make_node("MatMul", [p + "q_t", p + "k_t"], [p + "s"]),
                  helper.make_node("Mul", [p + "s", "inv_sqrt_d"], [p + "ss"]),
                  helper.make_node("Softmax", [p + "ss"], [p + "a"], axis=-1),
                  helper.make_node("MatMul", [p + "a", p + "v_t"], [p + "ctx"]),
                  helper.make_node("Transpose", [p + "ctx"], [p + "ctx_t"], perm=[0, 2, 1, 3]),
                  helper.make_node("Reshape", [p + "ctx_t", "merge_shape"], [p + "ctx_m"]),
                  helper.make_node("MatMul", [p + "ctx_m", p + "o"], [p + "o_mm"]),
                  helper.make_node("Add", [p + "o_mm", p + "o_b"], [p + "o_x"]),
                  helper.make_node("Add", [h, p + "o_x"], [p + "res1"]),
                  helper.make_node("LayerNormalization", [p + "res1", p + "ln1_g", p + "ln1_b"], [p + "h1"], axis=-1),
                  helper.make_node("MatMul", [p + "h1", p + "f1"], [p + "f1_mm"]),
                  helper.make_node("Add", [p + "f1_mm", p + "f1_b"], [p + "f1_x"]),
                  helper.make_node("Gelu", [p + "f1_x"], [p + "g"]),
                  helper.make_node("MatMul", [p + "g", p + "f2"], [p + "f2_mm"]),
                  helper.make_node("Add", [p + "f2_mm", p + "f2_b"], [p + "f2_x"]),
                  helper.make_node("Add", [p + "h1", p + "f2_x"], [p + "res2"]),
                  helper.make_node("LayerNormalization", [p + "res2", p + "ln2_g", p + "ln2_b"], [p + "h2"], axis=-1)]
        h = p + "h2"
    const("first", np.array([0], np.int64))
    const("axis1", np.array([1], np.int64))
    inits += [_w(rng, "cls", (HIDDEN, CLASSES), HIDDEN**-0.5), _w(rng, "cls_b", (CLASSES,), 0.1)]
    nodes += [helper.make_node("Gather", [h, "first"], ["cls_tok"], axis=1),
              helper.make_node("Squeeze", ["cls_tok", "axis1"], ["pooled"]),
              helper.make_node("MatMul", ["pooled", "cls"], ["cls_mm"]),
              helper.make_node("Add", ["cls_mm", "cls_b"], ["logits"])]
    graph = helper.make_graph(nodes, "bert_tiny", [helper.make_tensor_value_info("ids", TensorProto.INT64, [1, SEQ])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, CLASSES])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
    model.ir_version = 10
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, out)
    return out


def bert_dynamic(out: Path, float_model: Path) -> Path:
    """The encoder through quantize_dynamic (int8 weights per tensor; uint8 activations
    quantized at run time by DynamicQuantizeLinear; MatMulInteger)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(float_model), str(out), weight_type=QuantType.QInt8)
    return out


def llama_nbits(out: Path) -> Path:
    """models/tiny_llama.onnx with every MatMul weight as com.microsoft MatMulNBits (4 bits,
    block 32, asymmetric: packed uint4 zero points)."""
    from onnxruntime.quantization import matmul_nbits_quantizer as mnq

    cfg = mnq.DefaultWeightOnlyQuantConfig(block_size=32, is_symmetric=False, bits=4)
    q = mnq.MatMulNBitsQuantizer(onnx.load(MODELS / "tiny_llama.onnx"), algo_config=cfg)
    q.process()
    q.model.save_model_to_file(str(out), False)
    return out


def llama_qdq_int4(out: Path) -> Path:
    """models/tiny_llama.onnx (converted to opset 21, which int4 needs) through
    MatMulNBitsQuantizer in QDQ form: each MatMul weight a DequantizeLinear of int4 constants
    blocked along K (block 32, symmetric)."""
    from onnx import version_converter
    from onnxruntime.quantization import QuantFormat
    from onnxruntime.quantization import matmul_nbits_quantizer as mnq

    cfg = mnq.DefaultWeightOnlyQuantConfig(block_size=32, is_symmetric=True, bits=4, quant_format=QuantFormat.QDQ)
    q = mnq.MatMulNBitsQuantizer(version_converter.convert_version(onnx.load(MODELS / "tiny_llama.onnx"), 21),
                                 algo_config=cfg)
    q.process()
    q.model.save_model_to_file(str(out), False)
    return out
