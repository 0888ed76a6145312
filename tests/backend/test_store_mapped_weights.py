"""Quantized weights mapped straight from the tensor store (buildcheck.load_initializers,
ir/initializers.py): an i8 or i4 weight has no slot in native/weights.bin; a loaded build's
native session reads the store file's bytes as they are (an i4 weight packed, never unpacked by a
native run); outputs and saturation counts equal the interpreter's and those of fresh buffers
decoded from the store; a store file changed after it was checked is refused."""

from __future__ import annotations

import json
import mmap
import os

import numpy as np
import pytest

from opmlc.api import quantize_inputs, run
from opmlc.artifact import Build, compile_model
from opmlc.backend.native import native_program, run_native
from opmlc.commit import from_bytes
from opmlc.errors import BuildError
from opmlc.ir import initializers as ir_inits
from opmlc.ir.initializers import PackedI4, held
from opmlc.ir.types import DType
from tests.conftest import MODELS

CASES = (("digits_mlp", "int8"), ("digits_mlp", "int4"), ("tiny_llama", "int8"), ("tiny_llama", "int4"))


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("OPMLC_CACHE_DIR", str(tmp_path / "jit-cache"))


@pytest.fixture(scope="module")
def builds(tmp_path_factory):
    root = tmp_path_factory.mktemp("qmap")
    return {(m, w): compile_model(MODELS / f"{m}.onnx", root / f"{m}_{w}", weights=w).directory for m, w in CASES}


def inputs_for(build: Build, seed: int, scale: float = 1.0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    t = build.graph.values[build.graph.inputs[0]].type
    if t.dtype.value in ("i32", "i64"):
        return [rng.integers(0, 256, t.shape)]
    return [rng.random(t.shape, dtype=np.float32) * 16 * scale]


def quantized(build: Build) -> list[dict]:
    return [r for r in build.manifest["initializers"] if DType(r["dtype"]).quantized]


def is_store_map(arr: np.ndarray) -> bool:
    """A read-only array over a memory map (TensorStore.view), not a copy."""
    base = arr
    while isinstance(base, np.ndarray):
        base = base.base
    return isinstance(base, memoryview) and isinstance(base.obj, mmap.mmap) and not arr.flags.writeable


@pytest.mark.parametrize("case", CASES)
def test_byte_weights_have_no_weights_bin_slot(builds, case):
    d = builds[case]
    host = json.loads((d / "native" / "host.json").read_text())
    build = Build.load(d)
    q = quantized(build)
    assert q and all(r["dtype"] == case[1].replace("int", "i") for r in q)
    assert not any(DType(s["dtype"]).byte_oriented for s in host["slots"])
    slotted = {s["value"] for s in host["slots"]}
    assert slotted == {r["value"] for r in build.manifest["initializers"] if not DType(r["dtype"]).byte_oriented}
    # weights.bin holds the other types only: its size is theirs (each slot padded to 64 bytes)
    end = max((s["offset"] + s["nbytes"] for s in host["slots"]), default=0)
    assert (d / "native" / "weights.bin").stat().st_size == end


@pytest.mark.parametrize("case", CASES)
def test_native_outputs_and_saturation_equal_the_interpreter_and_fresh_buffers(builds, case):
    build = Build.load(builds[case])
    g = build.graph
    store = [None] * len(g.values)  # fresh buffers decoded from the store, as a build was run before
    for r in build.manifest["initializers"]:
        store[r["value"]] = from_bytes(build.store.get(bytes.fromhex(r["root"][2:])), g.values[r["value"]].type)
    saturated_somewhere = False
    for seed, scale in ((3, 1.0), (4, 1e4)):
        x = inputs_for(build, seed, scale)
        got = run(build, x, "native")
        want = run(build, x, "interp")
        assert got.output_roots == want.output_roots and got.saturated == want.saturated
        sat: dict[int, int] = {}
        bufs = run_native(native_program(g), g, quantize_inputs(build, x), values=store, saturated=sat)
        assert all(np.array_equal(bufs[v], o) for v, o in zip(g.outputs, got.outputs, strict=True))
        assert got.saturated == sat
        saturated_somewhere |= bool(got.saturated)
    if case[0] == "digits_mlp":
        assert saturated_somewhere  # the counts are exercised


@pytest.mark.parametrize("case", CASES)
def test_the_session_reads_the_store_files_and_never_unpacks_an_i4_weight(builds, case, monkeypatch):
    def refuse(*_a, **_k):
        raise AssertionError("an i4 weight was unpacked")

    build = Build.load(builds[case])
    monkeypatch.setattr(ir_inits, "unpack_i4", refuse)
    g = build.graph
    run(build, inputs_for(build, 1), "native")
    session = build.native
    for r in quantized(build):
        v, t = r["value"], g.values[r["value"]].type
        h = held(g.initializers, v)
        buf = session.bufs[v]
        raw = build.store.get(bytes.fromhex(r["root"][2:]))[: t.nbytes]
        if t.dtype is DType.I4:
            assert isinstance(h, PackedI4) and buf is h.packed and buf.nbytes == t.nbytes == (t.numel + 1) // 2
        else:
            assert buf is h
        assert is_store_map(buf) and buf.tobytes() == raw


def test_the_interpreter_reads_an_i4_weight_unpacked_and_cached_weakly(builds):
    build = Build.load(builds["digits_mlp", "int4"])
    g = build.graph
    r = quantized(build)[0]
    t = g.values[r["value"]].type
    a = g.initializers[r["value"]]
    assert a.dtype == np.int8 and a.shape == t.shape and not a.flags.writeable
    assert np.array_equal(a, from_bytes(build.store.get(bytes.fromhex(r["root"][2:])), t))
    assert g.initializers[r["value"]] is a  # while held: the same array (identity checks hold)
    del a
    assert len(g.initializers._unpacked) == 0  # nobody holds it: freed


def test_region_tables_over_mapped_weights_share_their_derived_buffers(tmp_path, capsys):
    """The session and a dispute's tracer of one loaded build hold one copy of each derived
    buffer (kernels/native/__init__.py `_shared`), read-only, when the table that comes first
    derives them (here: no native/derived.bin to map); tables over a caller's writable arrays
    each derive their own; the shared copies are dropped with the last table."""
    from opmlc.backend.kernels.native import _SHARED_DERIVED
    from opmlc.backend.native import task_table
    from opmlc.dispute.native_trace import tracer

    d = compile_model(MODELS / "tiny_llama.onnx", tmp_path / "llama").directory
    (d / "native" / "derived.bin").unlink()
    build = Build.load(d)
    x = inputs_for(build, 5)
    want = run(build, x, "interp").output_roots
    assert run(build, x, "native").output_roots == want
    session, trace = build.native, tracer(build)
    assert session.table.derived and len(session.table.derived) == len(trace.derived)
    assert "derived.bin is missing; deriving them at load" in capsys.readouterr().err
    for a, b in zip(session.table.derived, trace.derived, strict=True):
        assert a is b and not a.flags.writeable and not isinstance(a, np.memmap)
    fresh = {v: np.array(session.bufs[v]) for v in build.graph.initializers}  # writable copies
    mine = [task_table(build.graph, [fresh.get(v, buf) for v, buf in enumerate(session.bufs)])[0] for _ in range(2)]
    for a, b, c in zip(session.table.derived, mine[0].derived, mine[1].derived, strict=True):
        assert a is not b and b is not c and np.array_equal(a, b) and np.array_equal(b, c)
    assert run(build, x, "native").output_roots == want
    del session, trace, build, mine
    import gc

    gc.collect()

    def dead() -> int:
        return sum(b() is None or any(r() is None for r in refs) for refs, b in _SHARED_DERIVED.values())

    assert dead() > 0
    again = Build.load(tmp_path / "llama").native  # a later derive drops the dead entries, makes new ones
    assert dead() == 0 and again.table.derived[0] is _SHARED_DERIVED[next(iter(_SHARED_DERIVED))][1]()


@pytest.mark.parametrize("weights", ["int8", "int4"])
def test_a_mapped_store_file_changed_after_it_was_checked_is_refused(builds, tmp_path, weights):
    import shutil

    d = tmp_path / "b"
    shutil.copytree(builds["digits_mlp", weights], d)
    build = Build.load(d)  # every file checked and remembered
    r = max(quantized(build), key=lambda r: build.graph.values[r["value"]].type.nbytes)
    path = build.store.path(bytes.fromhex(r["root"][2:]))
    data = bytearray(path.read_bytes())
    data[3] ^= 0x11  # inside the weight's bytes, the size unchanged
    st = path.stat()
    with open(path, "r+b") as f:
        f.write(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # mtime set back: ctime still moves on
    with pytest.raises(BuildError, match="does not hash to its root"):
        Build.load(d)


def test_damaged_page_roots_of_a_large_tensor_are_refused_though_its_encoding_was_checked(tmp_path):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from opmlc.commit import PAGED_TENSOR

    # one MatMul whose int8 weight is 1 MiB: the store keeps its page roots
    w = np.random.default_rng(0).standard_normal((1024, 1024)).astype(np.float32) / 32
    g = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "big",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1024])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1024])],
                          [numpy_helper.from_array(w, "w")])
    model = tmp_path / "big.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), model)
    d = compile_model(model, tmp_path / "b", weights="int8").directory
    pages = sorted((d / "tensors").glob("*.pages"))
    assert len(pages) == 1 and (d / "tensors" / (pages[0].stem + ".bin")).stat().st_size >= PAGED_TENSOR
    Build.load(d)  # the page roots were remembered by compile with their encoding
    data = bytearray(pages[0].read_bytes())
    data[0] ^= 1
    pages[0].write_bytes(bytes(data))
    with pytest.raises(BuildError, match="wrong page roots"):
        Build.load(d)
