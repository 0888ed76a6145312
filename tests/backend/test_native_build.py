"""The native build ahead of time (opmlc/backend/native_build.py): `opmlc compile` writes this
host's object, native-endian weights and derived buffers; a run loads the object without code
generation and maps the weights and the derived buffers; another host, or a damaged object or weights file, falls back to the JIT or the
store with a note and the same bits; `opmlc.run` keeps one session per build whose repeated calls
give the results of fresh runs; Build.load hashes a file once and re-hashes it once changed."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest

from opmlc.api import quantize_inputs, run
from opmlc.artifact import Build, check_build, compile_model
from opmlc.backend import native_build, target
from opmlc.backend.native import native_program, run_native
from opmlc.commit import from_bytes
from opmlc.errors import BuildError
from opmlc.ir.interpreter import run_graph
from tests.conftest import MODELS

EXAMPLES = ("digits_mlp", "digits_cnn", "tiny_llama")


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """A JIT fallback caches into the test's own directory, never the user's."""
    monkeypatch.setenv("OPMLC_CACHE_DIR", str(tmp_path / "jit-cache"))


@pytest.fixture(scope="module")
def builds(tmp_path_factory):
    root = tmp_path_factory.mktemp("aot")
    return {name: compile_model(MODELS / f"{name}.onnx", root / name).directory for name in EXAMPLES}


def copy_of(builds, name, tmp_path):
    d = tmp_path / name
    shutil.copytree(builds[name], d)
    return d


def inputs_for(build: Build, seed: int, scale: float = 1.0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    t = build.graph.values[build.graph.inputs[0]].type
    if t.dtype.value in ("i32", "i64"):
        return [rng.integers(0, 256, t.shape)]
    return [rng.random(t.shape, dtype=np.float32) * 16 * scale]


def no_codegen(monkeypatch) -> None:
    """Any optimizer or code generation from here on fails the test."""
    def refuse(*_a, **_k):
        raise AssertionError("the native program was compiled at run time")

    monkeypatch.setattr(target, "optimize", refuse)
    monkeypatch.setattr(target.NativeProgram, "__init__", refuse)


def test_compile_writes_the_object_for_this_host_and_a_run_loads_it_without_codegen(builds, tmp_path, monkeypatch):
    d = copy_of(builds, "digits_mlp", tmp_path)
    host = json.loads((d / "native" / "host.json").read_text())
    assert host["host"] == target.host_description()
    assert (d / "native" / host["object"]).is_file()
    no_codegen(monkeypatch)
    build = Build.load(d)
    x = inputs_for(build, 0)
    assert run(build, x, "native").output_roots == run(build, x, "interp").output_roots
    assert build.native.program.from_object_file


def test_a_build_from_another_host_is_compiled_again_with_a_note_and_the_same_bits(builds, tmp_path, capsys):
    d = copy_of(builds, "digits_cnn", tmp_path)
    path = d / "native" / "host.json"
    host = json.loads(path.read_text())
    host["host"] = "othercpu|+avx512f|x86_64-unknown-linux-gnu|e-m:e"
    path.write_text(json.dumps(host))
    build = Build.load(d)
    x = inputs_for(build, 1)
    got = run(build, x, "native")
    assert "compiled for another host" in capsys.readouterr().err
    assert not build.native.program.from_object_file
    want = run(build, x, "interp")
    assert got.output_roots == want.output_roots and got.saturated == want.saturated


def test_an_object_from_another_code_generator_is_compiled_again_with_a_note(builds, tmp_path, capsys):
    d = copy_of(builds, "digits_mlp", tmp_path)
    path = d / "native" / "host.json"
    host = json.loads(path.read_text())
    assert host["generator"] == native_build.generator_digest()
    host["generator"] = "0" * 64  # the kernels changed since this build was compiled
    path.write_text(json.dumps(host))
    build = Build.load(d)
    x = inputs_for(build, 0)
    got = run(build, x, "native")
    assert "another version of opmlc's code generator" in capsys.readouterr().err
    assert not build.native.program.from_object_file
    assert got.output_roots == run(build, x, "interp").output_roots


@pytest.mark.parametrize("damage", ["flip", "truncate", "delete", "host.json"])
def test_a_damaged_object_is_compiled_again_with_a_note_never_used(builds, tmp_path, capsys, damage):
    d = copy_of(builds, "digits_mlp", tmp_path)
    host = json.loads((d / "native" / "host.json").read_text())
    obj = d / "native" / host["object"]
    data = bytearray(obj.read_bytes())
    if damage == "flip":
        data[len(data) // 2] ^= 0xFF
        obj.write_bytes(bytes(data))
    elif damage == "truncate":
        obj.write_bytes(bytes(data[:100]))
    elif damage == "delete":
        obj.unlink()
    else:
        (d / "native" / "host.json").write_text("{not json")
    build = Build.load(d)
    x = inputs_for(build, 2)
    got = run(build, x, "native")
    err = capsys.readouterr().err
    assert err.count("opmlc: note:") == 1 and "the native program for this host" in err
    assert not build.native.program.from_object_file
    assert got.output_roots == run(build, x, "interp").output_roots


@pytest.mark.parametrize("name", EXAMPLES)
def test_mapped_weights_give_todays_outputs_and_saturation_counts(builds, name):
    build = Build.load(builds[name])
    g = build.graph
    assert all(isinstance(a.base, np.memmap) for a in g.initializers.values())
    assert not any(a.flags.writeable for a in g.initializers.values())
    # today's path: fresh buffers, the initializers decoded from the tensor store and copied in
    store = [None] * len(g.values)
    for r in build.manifest["initializers"]:
        store[r["value"]] = from_bytes(build.store.get(bytes.fromhex(r["root"][2:])), g.values[r["value"]].type)
    for seed, scale in ((3, 1.0), (4, 1e4)):  # large inputs make the digits models saturate
        x = inputs_for(build, seed, scale)
        got = run(build, x, "native")
        sat: dict[int, int] = {}
        bufs = run_native(native_program(g), g, quantize_inputs(build, x), values=store, saturated=sat)
        assert all(np.array_equal(bufs[v], o) for v, o in zip(g.outputs, got.outputs, strict=True))
        assert got.saturated == sat
        want = run(build, x, "interp")
        assert got.output_roots == want.output_roots and got.saturated == want.saturated
        if name != "tiny_llama" and scale > 1:
            assert got.saturated  # the case is exercised


@pytest.mark.parametrize("name", EXAMPLES)
def test_repeated_calls_on_one_build_equal_fresh_runs(builds, name):
    build = Build.load(builds[name])
    session = build.native
    xs = [inputs_for(build, s, 1e4 if s % 2 else 1.0) for s in range(4)]
    first = [run(build, x, "native") for x in xs]
    # garbage in every activation buffer: a kernel that read its output, or a value left from
    # an earlier call, would show
    for v, buf in enumerate(session.bufs):
        if v not in build.graph.initializers and buf.size:
            buf.view(np.uint8)[...] = 0xA5
    again = [run(build, x, "native") for x in reversed(xs)][::-1]
    for x, a, b in zip(xs, first, again, strict=True):
        fresh = run_graph(build.graph, quantize_inputs(build, x))
        assert a.output_roots == b.output_roots
        assert all(np.array_equal(fresh[v], o) for v, o in zip(build.graph.outputs, a.outputs, strict=True))
        assert a.saturated == b.saturated
    assert build.native is session  # one session per build
    # outputs are copies: the next call does not change a result already returned
    keep = first[0].outputs[0].copy()
    run(build, xs[1], "native")
    assert np.array_equal(first[0].outputs[0], keep)


def test_node_tasks_on_a_session_equal_the_interpreter(builds):
    build = Build.load(builds["tiny_llama"])
    x = inputs_for(build, 5)
    n = len(build.graph.nodes)
    for k in (0, n // 3, n // 2, n - 1):
        got, want = run(build, x, "native", node=k), run(build, x, "interp", node=k)
        assert got.output_roots == want.output_roots and got.saturated == want.saturated
    assert run(build, x, "native").output_roots == run(build, x, "interp").output_roots


def test_compile_writes_the_derived_buffers_and_a_loaded_build_maps_them(builds, tmp_path, monkeypatch):
    """native/derived.bin holds what each region table would derive at load; the session and the
    dispute's tracer read its one mapping (nothing derived at load), byte for byte a fresh derive."""
    from dataclasses import replace

    from opmlc.backend.kernels import native as host_kernels
    from opmlc.backend.native import task_table
    from opmlc.dispute.native_trace import tracer

    d = copy_of(builds, "tiny_llama", tmp_path)
    host = json.loads((d / "native" / "host.json").read_text())
    assert host["derived"] and (d / "native" / "derived.bin").stat().st_size >= host["derived"][-1]["offset"]
    build = Build.load(d)
    fresh = task_table(build.graph, [np.array(build.graph.initializers[v]) if v in build.graph.initializers
                                     else np.zeros(1) for v in range(len(build.graph.values))])[0].derived

    def refuse(*_a, **_k):
        raise AssertionError("a derived buffer was derived at load")

    for op, hk in list(host_kernels.HOST_KERNELS.items()):
        monkeypatch.setitem(host_kernels.HOST_KERNELS, op, replace(hk, derive=refuse))
    session, trace = build.native, tracer(build)
    assert len(session.table.derived) == len(fresh) == len(host["derived"])
    for mapped, traced, want in zip(session.table.derived, trace.derived, fresh, strict=True):
        assert isinstance(mapped, np.memmap) and mapped is traced and mapped.tobytes() == want.tobytes()
    x = inputs_for(build, 7)
    assert run(build, x, "native").output_roots == run(build, x, "interp").output_roots


def test_a_damaged_derived_file_is_not_mapped_the_tables_derive_with_a_note(builds, tmp_path, capsys):
    d = copy_of(builds, "tiny_llama", tmp_path)
    path = d / "native" / "derived.bin"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x10
    path.write_bytes(bytes(data))
    build = Build.load(d)
    x = inputs_for(build, 8)
    got = run(build, x, "native")
    assert "derived.bin does not hold this build's derived buffers (damaged?)" in capsys.readouterr().err
    assert not any(isinstance(a, np.memmap) for a in build.native.table.derived)
    assert got.output_roots == run(build, x, "interp").output_roots


def test_a_weights_file_that_disagrees_with_the_store_is_not_used(builds, tmp_path, capsys):
    d = copy_of(builds, "digits_mlp", tmp_path)
    w = d / "native" / "weights.bin"
    data = bytearray(w.read_bytes())
    data[8] ^= 0x40  # inside the first slot
    w.write_bytes(bytes(data))
    build = Build.load(d)
    assert "does not hold the tensor store's" in capsys.readouterr().err
    x = inputs_for(build, 6)
    assert run(build, x, "native").output_roots == run(Build.load(builds["digits_mlp"]), x, "interp").output_roots


def test_load_hashes_a_checked_file_once_and_again_once_it_changed(tmp_path, monkeypatch):
    from opmlc import buildcheck

    d = compile_model(MODELS / "digits_mlp.onnx", tmp_path / "b").directory
    calls = []
    real = buildcheck.paged_root
    monkeypatch.setattr(buildcheck, "paged_root", lambda data: calls.append(1) or real(data))
    Build.load(d)
    assert calls == []  # compile recorded every file it wrote as checked
    tensor = sorted((d / "tensors").glob("*.bin"))[0]
    st = tensor.stat()
    os.utime(tensor, ns=(st.st_atime_ns, st.st_mtime_ns - 10**9))  # changes ctime too
    Build.load(d)
    assert calls == [1]
    Build.load(d)
    assert calls == [1]  # and remembered again


def test_a_tensor_corrupted_right_after_compile_is_still_refused(tmp_path):
    """The racy case: the change lands within the timestamp tick of the compile's record."""
    d = compile_model(MODELS / "digits_mlp.onnx", tmp_path / "b").directory
    tensor = sorted((d / "tensors").iterdir(), key=lambda p: p.stat().st_size)[-1]
    data = bytearray(tensor.read_bytes())
    data[0] ^= 1
    with open(tensor, "r+b") as f:
        f.write(bytes(data))
    with pytest.raises(BuildError, match="does not hash to its root"):
        Build.load(d)


def test_compile_check_passes_whatever_native_holds(builds, tmp_path):
    d = copy_of(builds, "digits_mlp", tmp_path)
    path = d / "native" / "host.json"
    host = json.loads(path.read_text())
    host["host"] = "another host"
    path.write_text(json.dumps(host))
    (d / "native" / "stray.o").write_bytes(b"x")
    assert check_build(MODELS / "digits_mlp.onnx", d) == []


def test_native_dir_is_not_in_the_manifest(builds):
    text = (builds["digits_mlp"] / "manifest.json").read_text()
    assert target.host_description() not in text and native_build.NATIVE_DIR + "/" not in text


def test_cli_run_right_after_compile_uses_the_object(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from opmlc.cli import app

    runner = CliRunner()
    d = tmp_path / "b"
    assert runner.invoke(app, ["compile", str(MODELS / "digits_mlp.onnx"), "-o", str(d)]).exit_code == 0
    no_codegen(monkeypatch)
    roots = {}
    for backend in ("native", "interp"):
        r = runner.invoke(app, ["run", str(d), "--input", str(MODELS / "digit_sample.npy"), "--backend", backend,
                                "--json"])
        assert r.exit_code == 0 and "note:" not in r.output, r.output
        roots[backend] = json.loads(r.stdout)["output_root"]
    assert roots["native"] == roots["interp"]


def test_a_truncated_weights_file_is_not_mapped_and_the_store_serves(builds, tmp_path):
    d = copy_of(builds, "digits_cnn", tmp_path)
    w = d / "native" / "weights.bin"
    w.write_bytes(w.read_bytes()[:-100])
    build = Build.load(d)
    assert not any(isinstance(a.base, np.memmap) for a in build.graph.initializers.values())
    x = inputs_for(build, 7)
    assert run(build, x, "native").output_roots == run(build, x, "interp").output_roots


def test_compiling_again_over_a_damaged_store_does_not_vouch_for_it(tmp_path):
    d = compile_model(MODELS / "digits_mlp.onnx", tmp_path / "b").directory
    tensor = sorted((d / "tensors").iterdir(), key=lambda p: p.stat().st_size)[-1]
    data = bytearray(tensor.read_bytes())
    data[-1] ^= 1  # same size; the store keeps the file on the next compile
    tensor.write_bytes(bytes(data))
    compile_model(MODELS / "digits_mlp.onnx", d)
    with pytest.raises(BuildError, match="does not hash to its root"):
        Build.load(d)
