"""ONNX external data (frontend/initializers.py): a model whose weights live in `model.onnx.data`
compiles to the same build as its inline twin, a broken reference is a one-line ModelError (exit
2), the model hash covers the data file, and the lowering reads weights as memory maps, one at a
time, keeping none of them."""

from __future__ import annotations

import gc
import hashlib
import json
import mmap
import subprocess
import sys
import weakref
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from opmlc.artifact import compile_model
from opmlc.errors import ModelError
from opmlc.frontend import initializers, lower_model

ROOT = Path(__file__).resolve().parents[2]


def mlp(seed: int = 0) -> onnx.ModelProto:
    """x [1, 256] → MatMul 256×1024 → Relu → MatMul 1024×512 → Reshape (shape initializer) → Add:
    3 MB of float32 weights, plus small tensors that stay inline."""
    rng = np.random.default_rng(seed)
    w1 = (rng.standard_normal((256, 1024)) * 0.05).astype(np.float32)
    w2 = (rng.standard_normal((1024, 512)) * 0.05).astype(np.float32)
    b = (rng.standard_normal(512) * 0.1).astype(np.float32)
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"]),
        helper.make_node("Relu", ["h"], ["r"]),
        helper.make_node("MatMul", ["r", "w2"], ["y0"]),
        helper.make_node("Reshape", ["y0", "shape"], ["y1"]),
        helper.make_node("Add", ["y1", "b"], ["y"]),
    ]
    inits = [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2"),
             numpy_helper.from_array(b, "b"), numpy_helper.from_array(np.array([1, 512], np.int64), "shape")]
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 256])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 512])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def save_external(model: onnx.ModelProto, folder: Path, location: str = "model.onnx.data") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "model.onnx"
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=location, size_threshold=4096)
    return path


def test_external_data_model_builds_as_its_inline_twin(tmp_path):
    m = mlp()
    inline = tmp_path / "inline.onnx"
    onnx.save(m, str(inline))
    ext = save_external(m, tmp_path / "ext")
    assert (tmp_path / "ext" / "model.onnx.data").stat().st_size > 3_000_000
    assert ext.stat().st_size < 10_000  # the weights are not in the .onnx
    a = compile_model(inline, tmp_path / "a").manifest
    b = compile_model(ext, tmp_path / "b").manifest
    for key in ("initializers", "program", "ir", "quantization", "inputs", "outputs"):
        assert a[key] == b[key], key
    assert a["model"]["sha256"] == hashlib.sha256(inline.read_bytes()).hexdigest()  # unchanged for inline models


def test_model_hash_covers_the_data_file(tmp_path):
    ext = save_external(mlp(), tmp_path / "m")
    data = tmp_path / "m" / "model.onnx.data"
    want = hashlib.sha256(ext.read_bytes() + data.read_bytes()).hexdigest()
    assert lower_model(ext).model_sha256 == want
    raw = bytearray(data.read_bytes())
    raw[100] ^= 1  # one bit of w1
    data.write_bytes(bytes(raw))
    assert lower_model(ext).model_sha256 != want


def test_quantized_weights_from_external_data_match_inline(tmp_path):
    m = mlp(1)
    inline = tmp_path / "inline.onnx"
    onnx.save(m, str(inline))
    ext = save_external(m, tmp_path / "ext")
    a = compile_model(inline, tmp_path / "a", weights="int4").manifest
    b = compile_model(ext, tmp_path / "b", weights="int4").manifest
    assert a["initializers"] == b["initializers"] and a["program"] == b["program"]


def _broken(tmp_path: Path, how: str) -> Path:
    ext = save_external(mlp(), tmp_path / "m")
    data = tmp_path / "m" / "model.onnx.data"
    if how == "missing":
        data.unlink()
    elif how == "truncated":
        data.write_bytes(data.read_bytes()[:1_000_000])
    else:  # a location outside the model's folder, relative or absolute
        model = onnx.load(str(ext), load_external_data=False)
        for t in model.graph.initializer:
            for e in t.external_data:
                if e.key == "location":
                    e.value = "../secret.data" if how == "outside" else str(data.resolve())
        onnx.save(model, str(ext))
        (tmp_path / "secret.data").write_bytes(data.read_bytes())
    return ext


@pytest.mark.parametrize("how, words", [
    ("missing", "no such file"),
    ("truncated", "truncated"),
    ("outside", "outside the model's folder"),
    ("absolute", "relative to the model's folder"),
])
def test_bad_external_data_is_a_one_line_model_error(tmp_path, how, words):
    ext = _broken(tmp_path, how)
    with pytest.raises(ModelError) as err:
        lower_model(ext)
    msg = str(err.value)
    assert "\n" not in msg and words in msg and "model.onnx" in msg and "'w1'" in msg


def test_bad_external_data_exits_2_at_the_cli(tmp_path):
    ext = _broken(tmp_path, "truncated")
    p = subprocess.run([sys.executable, "-m", "opmlc.cli", "compile", str(ext), "-o", str(tmp_path / "b")],
                       cwd=ROOT, capture_output=True, text=True)
    assert p.returncode == 2
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "truncated" in lines[0] and "Traceback" not in p.stderr


def test_lowering_reads_external_weights_as_maps_and_keeps_none(tmp_path, monkeypatch):
    """Every external weight the rules see is a read-only view of a memory map of the data file
    (no float copy of the model is made), and none is still alive after the node that read it:
    at most the current node's weights are in memory at any time."""
    ext = save_external(mlp(), tmp_path / "m")
    seen: list[tuple[str, weakref.ref]] = []
    alive_at_read: list[int] = []
    real = initializers.read_tensor

    def spy(t, folder):
        arr = real(t, folder)
        if initializers.is_external(t):
            gc.collect()
            alive_at_read.append(sum(r() is not None for n, r in seen if n != t.name))
            base = arr
            while isinstance(base, np.ndarray) and base.base is not None:
                base = base.base
            base = base.obj if isinstance(base, memoryview) else base
            assert isinstance(base, mmap.mmap) and not arr.flags.writeable, t.name
            seen.append((t.name, weakref.ref(base)))  # the map lives while any view of it does
        return arr

    monkeypatch.setattr(initializers, "read_tensor", spy)
    fe = lower_model(ext)
    assert {name for name, _ in seen} == {"w1", "w2"}  # b and shape are inline (small)
    gc.collect()
    assert all(r() is None for _, r in seen)  # nothing of the float model is kept
    assert max(alive_at_read) == 0  # w1 is gone (its node done) before w2 is read
    assert fe.graph.initializers  # the quantized weights are what the build keeps


def test_make_llama_model_lowers_with_grouped_query_attention(tmp_path):
    pytest.importorskip("torch")
    ort = pytest.importorskip("onnxruntime")
    from models.make_llama import LlamaShape, llama_reference, write_model

    shape = LlamaShape(hidden=64, layers=2, heads=4, kv_heads=2, mlp=96, vocab=100, context=8)
    path = write_model(shape, tmp_path / "llama", log=lambda *_: None)
    assert (tmp_path / "llama" / "model.onnx.data").is_file()
    tokens = np.random.default_rng(0).integers(0, shape.vocab, (1, shape.context)).astype(np.int64)
    ref = ort.InferenceSession(str(path)).run(None, {"tokens": tokens})[0]
    np.testing.assert_allclose(ref, llama_reference(shape, tokens), atol=1e-5)  # the graph is LLaMA's forward
    import opmlc

    build = compile_model(path, tmp_path / "b")
    assert any(n.op == "norm" for n in build.graph.nodes)  # RMSNorm fused
    out = opmlc.run(build, [tokens], backend="interp").dequantized()[0]
    assert np.abs(out - ref).max() < 1e-3 and (out.argmax(-1) == ref.argmax(-1)).all()
    assert json.loads((tmp_path / "b" / "manifest.json").read_text())["model"]["file"] == "model.onnx"
