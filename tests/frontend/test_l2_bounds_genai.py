"""L2 bounds (opmlc/frontend/l2bounds.py) through the IR the onnxruntime-genai rules lower to
(rules/genai.py): one decoder block of the builder's ops made with onnx.helper
(SimplifiedLayerNormalization, a packed QKV projection quantized to int4 blocks,
GroupQueryAttention with rotary and a static cache, the output projection and
SkipSimplifiedLayerNormalization's skip sum). The residual sum keeps its L2 bound through the
cache write (`where` over a run-time `gather`), the key/value cache inputs (their declared range)
and the grouped heads, so it gets several more bits than interval arithmetic alone gives, and
the interpreter's values stay inside the bound."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from opmlc.frontend import QuantPolicy, lower_model
from opmlc.frontend.l2bounds import L2Bounds
from opmlc.ir.fixedpoint import dequantize
from opmlc.ir.interpreter import run_outputs

F, I32 = TensorProto.FLOAT, TensorProto.INT32
D, H, KV, HD, C = 256, 4, 2, 64, 16
KV_RANGE = (-8.0, 8.0)


def block_model(path) -> None:
    rng = np.random.default_rng(0)
    freqs = np.outer(np.arange(C), 1.0 / 10000 ** (np.arange(HD // 2) / (HD // 2)))
    inits = {
        "g1": np.ones(D, np.float32), "g2": np.ones(D, np.float32),
        "wqkv": rng.normal(0, 0.08, (D, (H + 2 * KV) * HD)).astype(np.float32),
        "wo": rng.normal(0, 0.08, (H * HD, D)).astype(np.float32),
        "cos": np.cos(freqs).astype(np.float32), "sin": np.sin(freqs).astype(np.float32),
    }
    ms = "com.microsoft"
    nodes = [
        helper.make_node("SimplifiedLayerNormalization", ["x", "g1"], ["h"], epsilon=1e-5, axis=-1),
        helper.make_node("MatMul", ["h", "wqkv"], ["qkv"]),
        helper.make_node("GroupQueryAttention", ["qkv", "", "", "pk", "pv", "seqlens", "total", "cos", "sin"],
                         ["y", "present_k", "present_v"], domain=ms, num_heads=H, kv_num_heads=KV, do_rotary=1),
        helper.make_node("MatMul", ["y", "wo"], ["o"]),
        helper.make_node("SkipSimplifiedLayerNormalization", ["x", "o", "g2"], ["out", "", "", "sum"],
                         domain=ms, epsilon=1e-5),
    ]
    cache = [1, KV, C, HD]
    g = helper.make_graph(
        nodes, "block",
        [helper.make_tensor_value_info("x", F, [1, 1, D]), helper.make_tensor_value_info("pk", F, cache),
         helper.make_tensor_value_info("pv", F, cache), helper.make_tensor_value_info("seqlens", I32, [1]),
         helper.make_tensor_value_info("total", I32, [])],
        [helper.make_tensor_value_info("out", F, [1, 1, D]), helper.make_tensor_value_info("sum", F, [1, 1, D]),
         helper.make_tensor_value_info("present_k", F, cache), helper.make_tensor_value_info("present_v", F, cache)],
        [numpy_helper.from_array(a, n) for n, a in inits.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(ms, 1)])
    import onnx

    onnx.save(m, str(path))


def lower(path):
    ranges = {"x": (-1.0, 1.0), "pk": KV_RANGE, "pv": KV_RANGE}
    return lower_model(path, QuantPolicy(analyse=True, input_ranges=ranges, weights="int4"))


def test_genai_block_residual_keeps_its_l2_bound(tmp_path, monkeypatch):
    block_model(tmp_path / "m.onnx")
    fe = lower(tmp_path / "m.onnx")
    g = fe.graph
    vid = {x.name: i for i, x in enumerate(g.values)}
    s = vid["sum"]
    bound = fe.analysis.l2.at(s, D)
    assert bound is not None  # the rules reach through attention, the cache and the projections
    assert fe.analysis.l2.at(vid["present_k"], HD) is not None
    bits = g.values[s].type.frac
    # the rotary step (x1·c − x2·s, x2·c + x1·s) is bounded as a rotation: ‖x‖ plus roundings
    L = fe.analysis.l2
    rotated = [g.nodes[g.node_of(v)] for v, x in enumerate(g.values) if "rotated" in x.name]
    assert len(rotated) == 2
    for n in rotated:
        sub = g.nodes[g.node_of(n.inputs[0])]
        x = g.nodes[g.node_of(g.nodes[g.node_of(sub.inputs[0])].inputs[0])].inputs[0]
        assert L.at(n.output, HD) <= L.at(x, HD) + 1e-3

    # the interpreter's residual rows lie within the bound on random inputs and caches
    rng = np.random.default_rng(1)
    for pos in (0, 5, C - 1):
        feeds = []
        for v in g.inputs:
            t = g.values[v].type
            if t.dtype.value == "fx32":
                lo, hi = (-1.0, 1.0) if g.values[v].name == "x" else KV_RANGE
                feeds.append(np.round(rng.uniform(lo, hi, t.shape) * 2.0**t.frac).astype(np.int32))
            else:
                feeds.append(np.full(t.shape, pos, dtype=np.int32 if t.dtype.value == "i32" else np.int64))
        outs = dict(zip([g.values[v].name for v in g.outputs], run_outputs(g, feeds), strict=True))
        row = dequantize(outs["sum"], bits).reshape(-1, D)
        assert float(np.sqrt(np.square(row).sum(-1)).max()) <= bound

    # without the L2 rules (interval arithmetic alone) the same sum keeps far fewer bits
    monkeypatch.setattr(L2Bounds, "at", lambda self, v, seg: None)
    plain = lower(tmp_path / "m.onnx")
    plain_bits = plain.graph.values[{x.name: i for i, x in enumerate(plain.graph.values)}["sum"]].type.frac
    print(f"residual sum: {plain_bits} bits by intervals, {bits} with L2 bounds (row bound {bound:.4g})")
    assert bits >= plain_bits + 3
