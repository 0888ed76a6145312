"""The tiny decoders (models/tiny_llama.onnx, models/tiny_gpt2.onnx) end to end: next-byte
argmax agreement with onnxruntime on 500 held-out positions, one output root on the
interpreter, the native build and model.elf in the VM (whole graph and every node as its own
task), `opmlc run --tokens`, and `opmlc demo` won by the challenger when the server lies about
an attention node."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest
from typer.testing import CliRunner

from models.tiny_decoders import CONTEXT, held_out_windows
from opmlc.api import encode_text, quantize_inputs, run
from opmlc.artifact import compile_model
from opmlc.backend.native import native_program, run_native
from opmlc.backend.program import build_program
from opmlc.cli import app
from opmlc.commit import tensor_root
from opmlc.ir.fixedpoint import dequantize
from tests.conftest import MODELS
from tests.kernels.harness import interp_and_native, run_vm

DECODERS = ("tiny_llama", "tiny_gpt2")
POSITIONS = 500
MAX_LOGIT_ERROR = 1e-3  # measured with the analysed bits: 1.4e-4 (llama), 1.5e-4 (gpt2); models/README.md


@pytest.fixture(scope="module", params=DECODERS)
def decoder(request, tmp_path_factory):
    name = request.param
    return name, compile_model(MODELS / f"{name}.onnx", tmp_path_factory.mktemp(name))


def held_out_positions() -> np.ndarray:
    """16 held-out windows [16, 33]; their first 500 positions (all 32 of each, in order) count."""
    return held_out_windows(-(-POSITIONS // CONTEXT))


def test_argmax_agrees_with_onnxruntime_on_500_held_out_positions(decoder):
    name, build = decoder
    g = build.graph
    sess = ort.InferenceSession(str(MODELS / f"{name}.onnx"), providers=["CPUExecutionProvider"])
    prog = native_program(g)
    frac = g.values[g.outputs[0]].type.frac
    agree = total = 0
    worst = 0.0
    for row in held_out_positions():
        x = row[None, :CONTEXT]
        want = sess.run(None, {"tokens": x})[0][0]
        got = dequantize(run_native(prog, g, quantize_inputs(build, [x]))[g.outputs[0]], frac)[0]
        k = min(CONTEXT, POSITIONS - total)
        agree += int((want[:k].argmax(-1) == got[:k].argmax(-1)).sum())
        worst = max(worst, float(np.abs(want[:k] - got[:k]).max()))
        total += k
    assert total == POSITIONS
    assert agree >= 0.99 * POSITIONS, f"{name}: {agree}/{POSITIONS} agree"
    assert worst <= MAX_LOGIT_ERROR, f"{name}: largest logit error {worst}"


def test_interpreter_and_native_agree_on_every_value(decoder):
    _, build = decoder
    g = build.graph
    out = interp_and_native(g, quantize_inputs(build, [held_out_windows(1, seed=5)[:, :CONTEXT]]))
    for v, (want, got) in enumerate(zip(out.values, out.native, strict=True)):
        t = g.values[v].type
        assert tensor_root(np.reshape(got, t.shape), t) == tensor_root(want, t), f"value %{v}"


@pytest.mark.slow
def test_vm_gives_the_interpreters_root_whole_graph_and_every_node(decoder):
    _, build = decoder
    g = build.graph
    program = build_program(g)
    out = interp_and_native(g, quantize_inputs(build, [held_out_windows(1, seed=6)[:, :CONTEXT]]))
    v = g.outputs[0]
    t = g.values[v].type
    state, (got,) = run_vm(g, program, out.values, max_steps=1 << 30)
    assert state.exit_code == 0 and tensor_root(got, t) == tensor_root(out.values[v], t)
    for k, node in enumerate(g.nodes):
        nt = g.values[node.output].type
        state, (got,) = run_vm(g, program, out.values, node=k, max_steps=1 << 30)
        assert state.exit_code == 0 and tensor_root(got, nt) == tensor_root(out.values[node.output], nt), k


def test_api_backends_give_one_root_for_a_text(decoder):
    _, build = decoder
    t = build.graph.values[build.graph.inputs[0]].type
    tokens = encode_text("for line in open(path):\n    ", t)
    roots = {b: run(build, [tokens], b).output_roots[0] for b in ("interp", "native")}
    assert len(set(roots.values())) == 1


def test_encode_text_keeps_the_last_bytes_and_pads_on_the_left(decoder):
    _, build = decoder
    t = build.graph.values[build.graph.inputs[0]].type
    assert encode_text("ab", t)[0, -3:].tolist() == [32, 97, 98] and encode_text("ab", t).shape == (1, CONTEXT)
    long = bytes(range(40, 40 + CONTEXT + 5))
    assert encode_text(long, t)[0].tolist() == list(long[-CONTEXT:])


def test_run_tokens_prints_the_predicted_next_byte(decoder):
    _, build = decoder
    r = CliRunner().invoke(app, ["run", str(build.directory), "--tokens", "import o", "--json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    logits = np.array(doc["output"])
    assert doc["next_token"]["id"] == int(logits[0, -1].argmax())
    assert doc["next_token"]["char"] == chr(doc["next_token"]["id"])


@pytest.mark.slow
def test_demo_with_a_server_lying_about_llama_attention_is_won_by_the_challenger():
    softmax = 29  # /blocks.0/attn/Softmax (node indices: `opmlc compile --emit ir`)
    r = CliRunner().invoke(app, ["demo", "--model", str(MODELS / "tiny_llama.onnx"), "--lie-node", str(softmax), "--json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["winner"] == "challenger" and doc["reason"] == "step proven" and doc["node"] == softmax


@pytest.mark.slow
@pytest.mark.parametrize("model,node", [("tiny_llama", 26), ("tiny_gpt2", 14)])
def test_demo_with_a_lie_about_qk_matmul_is_won_by_the_challenger(model, node):
    r = CliRunner().invoke(app, ["demo", "--model", str(MODELS / f"{model}.onnx"), "--lie-node", str(node), "--json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["winner"] == "challenger" and doc["node"] == node
