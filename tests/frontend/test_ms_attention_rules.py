"""onnxruntime's com.microsoft RotaryEmbedding and MultiHeadAttention (rules/rotary.py,
rules/mha.py) on one-op models made with onnx.helper, against onnxruntime's CPU kernels: the
values within the rules' stated bounds, and the interpreter and the native build bit for bit
(tests/frontend/test_decoder_rules.check)."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from opmlc.errors import OpmlcError
from tests.frontend.test_decoder_rules import check

pytest.importorskip("onnxruntime")

F, I64 = TensorProto.FLOAT, TensorProto.INT64
MS = "com.microsoft"


def ms_model(nodes, inputs, outputs, inits=()):
    g = helper.make_graph(nodes, "t", inputs, outputs, [numpy_helper.from_array(a, n) for n, a in inits])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(MS, 1)])


def rope_cache(n_pos: int, half: int, theta: float = 10000.0) -> tuple[np.ndarray, np.ndarray]:
    freqs = np.outer(np.arange(n_pos), 1.0 / theta ** (np.arange(half) / half))
    return np.cos(freqs).astype(np.float32), np.sin(freqs).astype(np.float32)


# inputs in ±4 at 24 bits: a rotated value is two products rounded once each (2^−24) and the
# cos/sin constants' own rounding (2·4·2^−25), plus float32's; measured 3.0e-7
ROPE_BOUND = 1e-6


@pytest.mark.parametrize("case", [
    dict(layout="3d", interleaved=0, rot=0, pos="2d"),
    dict(layout="3d", interleaved=1, rot=0, pos="2d"),
    dict(layout="4d", interleaved=0, rot=0, pos="2d"),
    dict(layout="4d", interleaved=1, rot=0, pos="1d"),
    dict(layout="3d", interleaved=0, rot=8, pos="1d"),  # partial rotary: 8 of 16 features
    dict(layout="3d", interleaved=1, rot=8, pos="2d", batch=2),
])
def test_rotary_embedding_matches_onnxruntime(tmp_path, case):
    rng = np.random.default_rng(1)
    B, S, N, hd, P = case.get("batch", 1), 5, 3, 16, 32
    rot = case["rot"] or hd
    cos, sin = rope_cache(P, rot // 2)
    shape = [B, S, N * hd] if case["layout"] == "3d" else [B, N, S, hd]
    attrs = dict(interleaved=case["interleaved"])
    if case["rot"]:
        attrs.update(rotary_embedding_dim=rot, num_heads=N)
    elif case["layout"] == "3d":
        attrs.update(num_heads=N)
    pos_shape = [B, S] if case["pos"] == "2d" else [1]
    pos = (rng.integers(0, P, size=(B, S)) if case["pos"] == "2d" else np.array([7])).astype(np.int64)
    m = ms_model([helper.make_node("RotaryEmbedding", ["x", "pos", "cos", "sin"], ["y"], domain=MS, **attrs)],
                 [helper.make_tensor_value_info("x", F, shape), helper.make_tensor_value_info("pos", I64, pos_shape)],
                 [helper.make_tensor_value_info("y", F, shape)], [("cos", cos), ("sin", sin)])
    x = rng.uniform(-4, 4, size=shape).astype(np.float32)
    check(tmp_path, m, {"x": x, "pos": pos}, ROPE_BOUND)


def test_rotary_embedding_refuses_what_it_does_not_lower(tmp_path):
    from opmlc.frontend import lower_model

    cos, sin = rope_cache(8, 4)
    m = ms_model([helper.make_node("RotaryEmbedding", ["x", "pos", "cos", "sin"], ["y"], domain=MS, scale=0.5)],
                 [helper.make_tensor_value_info("x", F, [1, 2, 8]), helper.make_tensor_value_info("pos", I64, [1, 2])],
                 [helper.make_tensor_value_info("y", F, [1, 2, 8])], [("cos", cos), ("sin", sin)])
    (tmp_path / "m.onnx").write_bytes(m.SerializeToString())
    with pytest.raises(OpmlcError, match="RotaryEmbedding with scale 0.5"):
        lower_model(tmp_path / "m.onnx")


# scores of head 8 over inputs in ±2: one rounding each for scale·Q, the scores and the weighted
# sum, softmax within 2^−31 + 3e-7 per probability (× |v| ≤ 2 over ≤ 7 keys); measured 4.0e-7
MHA_BOUND = 5e-6


@pytest.mark.parametrize("case", ["causal", "cache", "padding mask", "attention bias", "scale"])
def test_multi_head_attention_matches_onnxruntime(tmp_path, case):
    rng = np.random.default_rng(2)
    B, S, N, d, P = (2 if case == "padding mask" else 1), 4, 2, 8, (3 if case == "cache" else 0)
    T = P + S
    inputs = [helper.make_tensor_value_info(nm, F, [B, S, N * d]) for nm in ("q", "k", "v")]
    feeds = {nm: rng.uniform(-2, 2, size=(B, S, N * d)).astype(np.float32) for nm in ("q", "k", "v")}
    names = ["q", "k", "v", "", "", "", "", ""]
    outputs = [helper.make_tensor_value_info("y", F, [B, S, N * d])]
    attrs = dict(num_heads=N)
    if case in ("causal", "cache"):
        attrs["unidirectional"] = 1
    if case == "scale":
        attrs["scale"] = 0.2
    if case == "cache":
        names[6:8] = ["past_k", "past_v"]
        for nm in ("past_k", "past_v"):
            inputs.append(helper.make_tensor_value_info(nm, F, [B, N, P, d]))
            feeds[nm] = rng.uniform(-2, 2, size=(B, N, P, d)).astype(np.float32)
        outputs += [helper.make_tensor_value_info(nm, F, [B, N, T, d]) for nm in ("present_k", "present_v")]
    if case == "padding mask":
        names[4] = "mask"
        inputs.append(helper.make_tensor_value_info("mask", TensorProto.INT32, [B, T]))
        feeds["mask"] = np.array([[1, 1, 1, 1], [1, 0, 1, 0]], np.int32)
    if case == "attention bias":
        names[5] = "bias"
        inputs.append(helper.make_tensor_value_info("bias", F, [1, N, S, T]))
        feeds["bias"] = rng.uniform(-3, 0, size=(1, N, S, T)).astype(np.float32)
    while names and not names[-1]:
        names.pop()
    outs = ["y"] + (["present_k", "present_v"] if case == "cache" else [])
    m = ms_model([helper.make_node("MultiHeadAttention", names, outs, domain=MS, **attrs)], inputs, outputs)
    check(tmp_path, m, feeds, MHA_BOUND)


def test_multi_head_attention_refuses_what_it_does_not_lower(tmp_path):
    from opmlc.frontend import lower_model

    B, S, N, d = 1, 2, 2, 4
    m = ms_model([helper.make_node("MultiHeadAttention", ["q", "k", "v", "bias"], ["y"], domain=MS, num_heads=N)],
                 [helper.make_tensor_value_info(nm, F, [B, S, N * d]) for nm in ("q", "k", "v")],
                 [helper.make_tensor_value_info("y", F, [B, S, N * d])],
                 [("bias", np.zeros(3 * N * d, np.float32))])
    (tmp_path / "m.onnx").write_bytes(m.SerializeToString())
    with pytest.raises(OpmlcError, match="MultiHeadAttention with a bias input"):
        lower_model(tmp_path / "m.onnx")


def test_group_query_attention_refuses_an_attribute_it_does_not_read(tmp_path):
    """The builder's ring-buffer cache for sliding layers (sliding_window_cache=1) changes the
    cache's meaning: refused by name, never lowered as a full-length cache."""
    from opmlc.frontend import lower_model

    N, KV, d, C = 2, 1, 4, 8
    node = helper.make_node("GroupQueryAttention", ["qkv", "", "", "pk", "pv", "seqlens", "total"],
                            ["y", "present_k", "present_v"], domain=MS, num_heads=N, kv_num_heads=KV,
                            local_window_size=4, sliding_window_cache=1)
    m = ms_model([node],
                 [helper.make_tensor_value_info("qkv", F, [1, 1, (N + 2 * KV) * d]),
                  helper.make_tensor_value_info("pk", F, [1, KV, C, d]), helper.make_tensor_value_info("pv", F, [1, KV, C, d]),
                  helper.make_tensor_value_info("seqlens", TensorProto.INT32, [1]),
                  helper.make_tensor_value_info("total", TensorProto.INT32, [])],
                 [helper.make_tensor_value_info("y", F, [1, 1, N * d])])
    (tmp_path / "m.onnx").write_bytes(m.SerializeToString())
    with pytest.raises(OpmlcError, match="GroupQueryAttention with attribute.s. sliding_window_cache"):
        lower_model(tmp_path / "m.onnx")


def test_onnx_rotary_embedding_node_cases_pass_natively():
    """ONNX's RotaryEmbedding (opset 23) shares the rotation: every backend node case passes,
    the native build bit for bit with the interpreter (the _expanded cases lower op by op)."""
    from opmlc import conformance

    per_op = conformance.run(["RotaryEmbedding"], native=True).per_op()
    assert per_op["RotaryEmbedding"] == {"passed": 16, "failed": 0, "unsupported": 0}
