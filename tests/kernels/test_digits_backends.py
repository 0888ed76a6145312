"""The digits MLP on every backend: the interpreter, the native build, and model.elf in unicorn
and in the VM give the same output root; every node as its own task too; builds reproduce."""

from __future__ import annotations

import hashlib
import json

import numpy as np
from typer.testing import CliRunner

from opmlc.api import quantize_inputs
from opmlc.artifact import compile_model
from opmlc.backend.program import build_program
from opmlc.cli import app
from opmlc.commit import tensor_root
from tests.conftest import MODELS
from tests.kernels.harness import interp_and_native, run_unicorn, run_vm


def test_interp_native_unicorn_and_vm_agree_on_digits(digits_build, digits):
    x, _ = digits
    g = digits_build.graph
    program = build_program(g)
    out_v = g.outputs[0]
    t = g.values[out_v].type
    for i in (0, 1, 17, 1796):
        inputs = quantize_inputs(digits_build, [x[i : i + 1]])
        out = interp_and_native(g, inputs)
        root = tensor_root(out.values[out_v], t)
        assert tensor_root(out.native[out_v], t) == root
        res, (uc,) = run_unicorn(g, program, out.values)
        assert res.exit_code == 0 and tensor_root(uc, t) == root
        state, (vm_out,) = run_vm(g, program, out.values)
        assert state.exit_code == 0 and tensor_root(vm_out, t) == root
        region = program.whole.region(out_v)
        assert state.memory.region_root(region.addr, region.size) == root


def test_every_digits_node_as_its_own_task(digits_build, digits):
    g = digits_build.graph
    program = build_program(g)
    out = interp_and_native(g, quantize_inputs(digits_build, [digits[0][:1]]))
    for k, node in enumerate(g.nodes):
        t = g.values[node.output].type
        state, (vm_out,) = run_vm(g, program, out.values, node=k)
        assert state.exit_code == 0 and tensor_root(vm_out, t) == tensor_root(out.values[node.output], t)
        res, (uc,) = run_unicorn(g, program, out.values, node=k)
        assert res.exit_code == 0 and np.array_equal(uc, out.values[node.output])


def test_two_compiles_give_the_same_elf(tmp_path):
    a = compile_model(MODELS / "digits_mlp.onnx", tmp_path / "a")
    compile_model(MODELS / "digits_mlp.onnx", tmp_path / "b")
    elf_a, elf_b = (tmp_path / d / "model.elf" for d in "ab")
    assert hashlib.sha256(elf_a.read_bytes()).hexdigest() == hashlib.sha256(elf_b.read_bytes()).hexdigest()
    assert a.manifest["program"]["sha256"] == hashlib.sha256(elf_a.read_bytes()).hexdigest()
    ma, mb = (json.loads((tmp_path / d / "manifest.json").read_text()) for d in "ab")
    assert ma == mb


def test_compile_check_passes_on_a_fresh_build_and_fails_on_a_tampered_one(tmp_path):
    runner = CliRunner()
    model = MODELS / "digits_mlp.onnx"
    assert runner.invoke(app, ["compile", str(model), "-o", str(tmp_path / "d")]).exit_code == 0
    ok = runner.invoke(app, ["compile", str(model), "--check", str(tmp_path / "d"), "--json"])
    assert ok.exit_code == 0 and json.loads(ok.stdout)["reproducible"] is True
    elf = tmp_path / "d" / "model.elf"
    data = bytearray(elf.read_bytes())
    data[-1] ^= 1
    elf.write_bytes(bytes(data))
    bad = runner.invoke(app, ["compile", str(model), "--check", str(tmp_path / "d"), "--json"])
    assert bad.exit_code == 1 and json.loads(bad.stdout)["differ"] == ["model.elf"]


def test_cli_native_prints_the_same_root_as_interp(digits_build, tmp_path):
    runner = CliRunner()
    roots = {}
    for backend in ("interp", "native"):
        r = runner.invoke(app, ["run", str(digits_build.directory), "--input", str(MODELS / "digit_sample.npy"),
                                "--backend", backend, "--json"])
        assert r.exit_code == 0, r.output
        roots[backend] = json.loads(r.stdout)["output_root"]
    assert roots["interp"] == roots["native"]
