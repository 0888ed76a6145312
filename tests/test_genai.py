"""onnxruntime-genai models as published: the builder's int4 export of a random-init LLaMA,
Qwen2, Mistral, Phi-3, Gemma and Phi (tests/genai_models.py) compiles, `opmlc generate` gives onnxruntime-genai's greedy
tokens (but where onnxruntime's top-2 margin is within the stated bounds), the backends agree
bit for bit, and a generation is disputed over (decoding step, node) pairs."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

pytest.importorskip("onnxruntime_genai", reason="onnxruntime-genai makes and runs the reference models")
pytest.importorskip("transformers", reason="transformers makes the random-init models")
pytest.importorskip("tokenizers", reason="the models' tokenizer")
ort = pytest.importorskip("onnxruntime")

from opmlc.artifact import compile_model  # noqa: E402
from opmlc.errors import OpmlcError  # noqa: E402
from tests.genai_models import ARCHS, PROMPTS, Lazy, made_once, ort_greedy, shared_root  # noqa: E402

# opmlc's logits against the float computation of the same int4 model (onnxruntime with
# MatMulNBits at accuracy_level 0): measured 0.0046 on the LLaMA over the 10 prompts
OPMLC_BOUND = 0.01
# onnxruntime-genai's CPU int4 kernels (accuracy_level 4, the builder's) quantize activations
# to int8: its logits differ from the float computation by up to 0.07 on these models
ORT_BOUND = 0.1
TIE = 2 * (OPMLC_BOUND + ORT_BOUND)  # a top-2 margin below this may flip either way


@pytest.fixture(scope="session")
def genai_models(tmp_path_factory):
    """arch → the builder's export, made on first use, once per run (all xdist workers)."""
    from models.make_genai import make_genai

    root = shared_root(tmp_path_factory) / "genai_models"
    root.mkdir(exist_ok=True)
    return Lazy(lambda arch: made_once(root / arch, lambda p: make_genai(p, arch)))


@pytest.fixture(scope="session")
def genai_builds(genai_models, tmp_path_factory):
    """arch → its default build (context 128), compiled on first use, once per run."""
    from opmlc.artifact import Build

    root = shared_root(tmp_path_factory) / "genai_builds"
    root.mkdir(exist_ok=True)
    return Lazy(lambda arch: Build.load(made_once(root / arch, lambda p: compile_model(genai_models[arch], p))))


# the norms each export uses besides GroupQueryAttention and MatMulNBits
NORMS = {arch: {("com.microsoft", "SkipSimplifiedLayerNormalization"), ("", "SimplifiedLayerNormalization")}
         for arch in ARCHS}
NORMS["phi"] = {("com.microsoft", "SkipLayerNormalization"), ("", "LayerNormalization")}


def _tok(build):
    from opmlc.genai.tokenizer import load_tokenizer

    return load_tokenizer(build.manifest["genai"]["folder"])


@pytest.mark.parametrize("arch", ARCHS)
def test_builder_export_compiles_as_a_decoding_step(genai_builds, genai_models, arch):
    import onnx

    b = genai_builds[arch]
    m = onnx.load(str(genai_models[arch] / "model.onnx"), load_external_data=False)
    ops = {(n.domain, n.op_type) for n in m.graph.node}
    # the builder's format, including the default-domain op onnx's checker refuses
    assert {("com.microsoft", "GroupQueryAttention"), ("com.microsoft", "MatMulNBits")} | NORMS[arch] <= ops
    if ("", "SimplifiedLayerNormalization") in ops:
        with pytest.raises(onnx.checker.ValidationError, match="SimplifiedLayerNormalization"):
            onnx.checker.check_model(str(genai_models[arch] / "model.onnx"))
    rec = b.manifest["genai"]
    assert rec["context"] == 128 and len(rec["cache_inputs"]) == 4
    ins = {r["name"]: r for r in b.manifest["inputs"]}
    outs = {r["name"]: r for r in b.manifest["outputs"]}
    assert ins["input_ids"]["shape"] == [1, 1] and ins["attention_mask"]["shape"] == [1, 128]
    for cin, cout in zip(rec["cache_inputs"], rec["cache_outputs"], strict=True):
        assert ins[cin]["shape"] == [1, 2, 128, 64]
        assert {k: ins[cin][k] for k in ("dtype", "shape", "frac")} == {k: outs[cout][k] for k in ("dtype", "shape", "frac")}
    assert outs["next_token"]["dtype"] == ins["input_ids"]["dtype"]
    assert "qmatmul" in {n.op for n in b.graph.nodes}  # MatMulNBits kept as 4-bit weights


@pytest.mark.parametrize("arch", ARCHS)
def test_opmlc_logits_within_the_stated_bound_of_the_float_model(genai_builds, genai_models, tmp_path, arch):
    """Teacher-forced on opmlc's own generation, every step's logits are within OPMLC_BOUND of
    onnxruntime's float computation of the same int4 model (MatMulNBits accuracy_level 0)."""
    import onnx

    from opmlc.genai.generate import StepRunner, generate_ids
    from opmlc.ir.fixedpoint import dequantize

    b = genai_builds[arch]
    m = onnx.load(str(genai_models[arch] / "model.onnx"), load_external_data=False)
    for n in m.graph.node:
        for a in n.attribute:
            if a.name == "accuracy_level":
                a.i = 0
    onnx.save(m, str(tmp_path / "model.onnx"))
    shutil.copy(genai_models[arch] / "model.onnx.data", tmp_path / "model.onnx.data")
    sess = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    runner = StepRunner(b, "native")
    fl = b.graph.values[b.graph.outputs[0]].type.frac
    worst = 0.0
    for prompt in PROMPTS[:4]:
        for _, step in generate_ids(b, _tok(b).encode(prompt), 8, stop_at_eos=False, runner=runner):
            feeds = {n: dequantize(a, t.frac).astype(np.float32) if t.dtype.value == "fx32" else a.astype(np.int64)
                     for n, a, t in zip(runner.names, step.inputs, runner.types, strict=True)}
            ref = sess.run(["logits"], feeds)[0]
            worst = max(worst, float(np.abs(dequantize(step.outputs[0], fl) - ref).max()))
    print(f"{arch}: largest logit error against the float int4 model: {worst:.4g}")
    assert 0 < worst <= OPMLC_BOUND


@pytest.mark.parametrize("arch", ARCHS)
def test_generate_gives_onnxruntime_genai_greedy_tokens(genai_builds, genai_models, arch):
    from opmlc.genai.generate import generate

    b = genai_builds[arch]
    tok = _tok(b)
    same, ties = 0, []
    for prompt in PROMPTS:
        ids = tok.encode(prompt)
        ref, margins = ort_greedy(genai_models[arch], ids, 16)
        got = generate(b, ids, 16, "native").generated_ids
        if got == ref:
            same += 1
            continue
        first = next(i for i, (x, y) in enumerate(zip(got, ref, strict=False)) if x != y)
        assert margins[first] <= TIE, (prompt, first, margins[first])
        ties.append((prompt, first, round(margins[first], 4)))
    print(f"{arch}: {same}/10 prompts give onnxruntime-genai's 16 tokens; near ties: {ties}")
    assert same >= 5


# ONNX nodes whose lowering only some architectures use, run as VM tasks too (by name)
ARCH_NODES = {"gemma": ("Gelu",), "phi": ("input_layernorm", "FastGelu")}


@pytest.mark.parametrize("arch", ARCHS)
def test_backends_agree_bit_for_bit_on_every_step_and_task(genai_builds, arch):
    """interp == native on every value of every step of a generation; the VM == interp on one
    step's node tasks: one node of each IR op in the attention (rotary, cache write, scores,
    softmax…) and the architecture's own nodes (ARCH_NODES), and for the LLaMA the whole step
    as one task too."""
    from opmlc.api import run
    from opmlc.backend.native import native_program, run_native
    from opmlc.genai.generate import StepRunner, generate_ids
    from opmlc.ir.fixedpoint import dequantize
    from opmlc.ir.interpreter import run_graph

    b = genai_builds[arch]
    ids = _tok(b).encode(PROMPTS[0])[:4]
    steps = [s for _, s in generate_ids(b, ids, 3, "interp", stop_at_eos=False)]
    native = StepRunner(b, "native")
    prog = native_program(b.graph)
    for s in steps:
        assert all(np.array_equal(x, y) for x, y in zip(s.outputs, native.run(s.inputs), strict=True))
        values = run_graph(b.graph, s.inputs)
        bufs = run_native(prog, b.graph, s.inputs)
        assert all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(values, bufs, strict=True))
    mid = steps[3]
    if arch == "llama":
        vm_out = StepRunner(b, "vm").run(mid.inputs)
        assert all(np.array_equal(x, y) for x, y in zip(mid.outputs, vm_out, strict=True))
    first_of_op = {}
    for k, n in enumerate(b.graph.nodes):
        if "GroupQueryAttention" in n.name:
            first_of_op.setdefault(n.op, k)
    own = [k for pat in ARCH_NODES.get(arch, ()) for k in
           [k for k, n in enumerate(b.graph.nodes) if pat in n.name][:2]]
    tasks = sorted(set(first_of_op.values()) | set(own))
    assert {"gather", "where", "softmax", "matmul", "concat"} <= set(first_of_op)
    assert len(own) == 2 * len(ARCH_NODES.get(arch, ()))
    floats = [dequantize(a, t.frac) if t.dtype.value == "fx32" else a for a, t in zip(mid.inputs, native.types, strict=True)]
    for k in tasks:
        assert run(b, floats, "vm", k).output_roots == run(b, floats, "interp", k).output_roots, b.graph.nodes[k].name


def test_generate_cli_streams_text_and_reports_json(genai_builds, tmp_path):
    from typer.testing import CliRunner

    from opmlc.cli import app

    b = genai_builds["llama"]
    r = CliRunner().invoke(app, ["generate", str(b.directory), "--prompt", PROMPTS[0], "--max-new-tokens", "5", "--json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.output)
    assert len(doc["generated_ids"]) <= 5 and doc["prompt_ids"] == _tok(b).encode(PROMPTS[0])
    assert doc["text"] == _tok(b).decode(doc["generated_ids"])
    r2 = CliRunner().invoke(app, ["generate", str(b.directory), "--prompt", PROMPTS[0], "--max-new-tokens", "5",
                                  "--backend", "interp"])
    assert r2.exit_code == 0 and r2.output.rstrip("\n") == doc["text"]
    # bad input: one line, exit 2
    too_long = CliRunner().invoke(app, ["generate", str(b.directory), "--prompt", "x " * 200, "--max-new-tokens", "4"])
    assert too_long.exit_code == 2 and "--max-context" in too_long.output
    bad_backend = CliRunner().invoke(app, ["generate", str(b.directory), "--prompt", "x", "--backend", "gpu"])
    assert bad_backend.exit_code == 2 and "--backend" in bad_backend.output
    from tests.conftest import MODELS

    plain = compile_model(MODELS / "digits_mlp.onnx", tmp_path / "digits")
    not_genai = CliRunner().invoke(app, ["generate", str(plain.directory), "--prompt", "x"])
    assert not_genai.exit_code == 2 and "onnxruntime-genai" in not_genai.output


def test_max_context_and_its_errors(genai_models, tmp_path, monkeypatch):
    from opmlc.artifact import check_build

    b = compile_model(genai_models["llama"], tmp_path / "b", max_context=16)
    assert b.manifest["genai"]["context"] == 16
    assert check_build(genai_models["llama"], b.directory) == []  # --check replays the static shapes
    assert {r["name"]: r["shape"] for r in b.manifest["inputs"]}["past_key_values.0.key"] == [1, 2, 16, 64]
    with pytest.raises(OpmlcError, match="--max-context 1000"):
        compile_model(genai_models["llama"], tmp_path / "c", max_context=1000)
    from tests.conftest import MODELS

    with pytest.raises(OpmlcError, match="not an onnxruntime-genai model"):
        compile_model(MODELS / "digits_mlp.onnx", tmp_path / "d", max_context=16)
    # without the optional tokenizers package: one line naming the install command
    import sys

    from opmlc.genai.generate import generate

    monkeypatch.setitem(sys.modules, "tokenizers", None)
    with pytest.raises(OpmlcError, match=r"pip install 'opmlc\[llm\]'"):
        generate(b, "def f(", 2)


@pytest.fixture(scope="module")
def small_build(genai_models, tmp_path_factory):
    """The LLaMA at a context of 16: the disputes' node tasks stay small, and a KV head's cache
    is a 4 KiB block (so the native trace hashes the GQA's repeat views from those blocks)."""
    return compile_model(genai_models["llama"], tmp_path_factory.mktemp("small") / "b", max_context=16)


def _lies(gb):
    kv = gb.step_node("present.0.value")
    last = gb.k - 1  # the greedy token
    return {"first step": (0, last), "middle step": (gb.n_steps // 2, last),
            "last step": (gb.n_steps - 1, last), "kv cache only": (2, kv)}


def test_generation_disputes_offchain_are_won_by_the_challenger(small_build):
    """A lie at the first, a middle and the last decoding step, and one that only alters a key/
    value cache entry: bisection over (step, node) ends at the altered node, and its step."""
    from opmlc.dispute.generation import GenerationBuild, prompt_inputs
    from opmlc.dispute.graph_trace import Tamper, compute_values
    from opmlc.dispute.offchain import play
    from opmlc.dispute.roles import Claimant, Verifier
    from opmlc.genai.generate import generate

    ids = _tok(small_build).encode(PROMPTS[3])[:4]
    gb = GenerationBuild(small_build, len(ids), 4)
    inputs = prompt_inputs(gb, ids)
    values = compute_values(gb, inputs)
    # the unrolled trace holds the generation's tokens
    assert [int(values[v].reshape(-1)[0]) for v in gb.generated_values] == \
        generate(small_build, ids, 4, "interp", stop_at_eos=False).generated_ids
    for what, (step, k) in _lies(gb).items():
        node = gb.node_of(step, k)
        rec = play(Claimant(gb, inputs, Tamper(node, propagate=what != "kv cache only")), Verifier(gb, inputs))
        assert rec.winner == "challenger", what
        assert gb.step_of(rec.node) == (step, k), what
    # an honest server wins against a lying challenger
    rec = play(Claimant(gb, inputs), Verifier(gb, inputs, Tamper(gb.node_of(1, 5))))
    assert rec.winner == "server"


def test_claim_and_prove_cli_over_a_generation(small_build, tmp_path):
    from typer.testing import CliRunner

    from opmlc.cli import app

    d = str(small_build.directory)
    args = ["--prompt", "for i in", "--max-new-tokens", "3"]
    r = CliRunner().invoke(app, ["claim", d, "-o", str(tmp_path / "c.json"), *args, "--tamper-step", "2"])
    assert r.exit_code == 0, r.output
    claim = json.loads((tmp_path / "c.json").read_text())
    assert claim["generation"]["prompt_ids"] == _tok(small_build).encode("for i in")
    assert len(claim["generation"]["generated_ids"]) == 3
    r = CliRunner().invoke(app, ["prove", d, "-o", str(tmp_path / "d.json"), *args, "--claim", str(tmp_path / "c.json"),
                                 "--json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.output)
    k = claim["generation"]["nodes_per_step"]
    assert doc["winner"] == "challenger" and doc["node"] == 2 * k + k - 1
    bad = CliRunner().invoke(app, ["claim", d, "-o", str(tmp_path / "x.json"), "--tamper-step", "1"])
    assert bad.exit_code == 2


@pytest.mark.slow
@pytest.mark.parametrize("lie", ["first step", "middle step", "last step", "kv cache only"])
def test_demo_on_chain_challenger_wins(genai_models, lie):
    from opmlc.dispute.demo import run_demo

    folder = genai_models["llama"]
    ids = [5, 300, 12]
    n_steps = len(ids) + 3 - 1
    step, node = {"first step": (0, None), "middle step": (n_steps // 2, None), "last step": (n_steps - 1, None),
                  "kv cache only": (1, "present.1.key")}[lie]
    if node is not None:
        from opmlc.artifact import Build  # noqa: F401  (the node index comes from a compile of the same model)

        b = compile_model(folder, folder.parent / f"kv_{lie.replace(' ', '_')}", max_context=16)
        from opmlc.dispute.generation import GenerationBuild

        node = GenerationBuild(b, len(ids), 3).step_node(node)
    r = run_demo(folder, prompt=ids, max_new_tokens=3, lie_step=step, lie_node=node, max_context=16)
    assert r["winner"] == "challenger" and r["reason"] == "step proven"
    assert r["decoding_step"] == step
    assert r["generation"]["steps"] == n_steps


def test_generation_refuses_a_step_build_with_split_nodes(small_build, monkeypatch):
    """A generation disputes whole step nodes: the default genai budget splits none; a step build
    whose manifest records a split node (as a small --step-budget gives a larger model) is
    refused in one line."""
    import copy

    from opmlc.dispute.generation import GenerationBuild

    assert all(t.get("parts") is None for t in small_build.manifest["program"]["tasks"]["nodes"])
    gb = GenerationBuild(small_build, 2, 2)
    assert gb.manifest["program"]["log2_step_budget"] == small_build.manifest["program"]["log2_step_budget"]
    m = copy.deepcopy(small_build.manifest)
    m["program"]["tasks"]["nodes"][3]["parts"] = {"log2": 1}
    monkeypatch.setattr(small_build, "manifest", m)
    with pytest.raises(OpmlcError, match="step node 3 is split into parts under the build's step budget"):
        GenerationBuild(small_build, 2, 2)


def test_a_generations_native_trace_equals_the_interpreters(small_build):
    """Phase 1 of a generation natively (dispute/generation_trace.py: the step build's program per
    decoding step, the cache carried): every value root, the saturation counts, every lie (first,
    middle, last step, cache only; propagated or not) and a node task's operands are the
    interpreter's over the unrolled graph."""
    from opmlc.dispute.generation import GenerationBuild, prompt_inputs
    from opmlc.dispute.generation_trace import generation_tracer
    from opmlc.dispute.graph_trace import Tamper
    from opmlc.dispute.native_trace import party_roots, task_operands
    from opmlc.genai.generate import generate

    ids = _tok(small_build).encode(PROMPTS[4])[:3]
    gb = GenerationBuild(small_build, len(ids), 4)
    q = prompt_inputs(gb, ids)
    sat_native, sat_interp = {}, {}
    native = party_roots(gb, q, saturated=sat_native)
    assert native == party_roots(gb, q, engine="interp", saturated=sat_interp)
    assert sat_native == sat_interp
    assert generation_tracer(gb).generated == generate(small_build, ids, 4, "native", stop_at_eos=False).generated_ids
    first = gb.graph.first_node_value
    for what, (step, k) in _lies(gb).items():
        for propagate in (True, False):
            tamper = Tamper(gb.node_of(step, k), propagate=propagate)
            lied = party_roots(gb, q, tamper)
            assert lied == party_roots(gb, q, tamper, engine="interp"), (what, propagate)
            diff = [n for n in range(len(gb.graph.nodes)) if lied[first + n] != native[first + n]]
            assert diff[0] == gb.node_of(step, k), what
            if not propagate:
                assert diff == [gb.node_of(step, k)]
    g = gb.graph
    kv = gb.step_node("present.0.key")
    # a step's first node, the attention reading the carried cache, the last step's greedy token
    for node in (gb.node_of(2, 0), gb.node_of(2, kv + 2), len(g.nodes) - 1):
        native_ops = task_operands(gb, q, node)
        interp_ops = task_operands(gb, q, node, engine="interp")
        for v in range(len(g.values)):
            if v in g.nodes[node].inputs:
                assert np.array_equal(native_ops[v], interp_ops[v]) and native_ops[v].dtype == interp_ops[v].dtype
                if v in g.initializers:  # spliced by the manifest's root, never hashed again
                    assert native_ops[v] is g.initializers[v]
            else:
                assert native_ops[v] is None


def test_generation_stops_at_eos_and_its_claim_commits_to_where(small_build, monkeypatch, tmp_path):
    """`generate` stops at genai_config's eos_token_id (here: made the token the model emits
    third) unless told not to; a claim covers exactly the tokens made and says why it ended; a
    claim that ends elsewhere is refused even when its trace is right; a lie in it is disputed."""
    import copy

    from opmlc.dispute.claims import dispute_record, make_claim, read_claim
    from opmlc.dispute.generation import GenerationBuild, generation_of, prompt_inputs
    from opmlc.dispute.graph_trace import Tamper
    from opmlc.genai.generate import generate

    ids = _tok(small_build).encode(PROMPTS[6])[:3]
    free = generate(small_build, ids, 6, "native", stop_at_eos=False).generated_ids
    eos = free[2]
    stop = free.index(eos)  # the first time the model emits it
    m = copy.deepcopy(small_build.manifest)
    m["genai"]["eos_token_ids"] = [eos]
    monkeypatch.setattr(small_build, "manifest", m)
    gen = generate(small_build, ids, 6, "native")
    assert gen.generated_ids == free[: stop + 1] and gen.stopped == "eos"
    assert generate(small_build, ids, 6, "native", stop_at_eos=False).stopped == "max_new_tokens"
    gb = generation_of(small_build, ids, 6)
    assert (gb.max_new_tokens, gb.limit) == (stop + 1, 6)
    q = prompt_inputs(gb, ids)
    claim = make_claim(gb, q)
    assert claim["generation"]["generated_ids"] == free[: stop + 1]
    assert claim["generation"]["stopped"] == "eos" and claim["generation"]["max_new_tokens"] == 6
    assert generation_of(small_build, ids, 6, stop_at_eos=False).max_new_tokens == 6
    path = tmp_path / "c.json"
    path.write_text(json.dumps(claim))
    with pytest.raises(OpmlcError, match="the claim is correct"):
        dispute_record(gb, q, read_claim(path, gb))
    # a claim with a right trace that stops short of both the limit and an end-of-sequence token
    if stop >= 1:
        short = GenerationBuild(small_build, len(ids), stop, limit=6)
        path.write_text(json.dumps(make_claim(short, q)))
        with pytest.raises(OpmlcError, match="not an end-of-sequence token"):
            dispute_record(short, q, read_claim(path, short))
    # one that runs on past the end-of-sequence token
    longer = GenerationBuild(small_build, len(ids), stop + 2, limit=6)
    path.write_text(json.dumps(make_claim(longer, q)))
    with pytest.raises(OpmlcError, match="is the end-of-sequence token"):
        dispute_record(longer, q, read_claim(path, longer))
    # a server that lies about the stopping token: disputed and lost
    path.write_text(json.dumps(make_claim(gb, q, Tamper(gb.node_of(gb.n_steps - 1, gb.k - 1)))))
    doc = dispute_record(gb, q, read_claim(path, gb))
    assert doc["winner"] == "challenger" and doc["node"] == len(gb.graph.nodes) - 1


def test_ignore_eos_options(small_build, tmp_path):
    from typer.testing import CliRunner

    from opmlc.cli import app

    d = str(small_build.directory)
    r = CliRunner().invoke(app, ["generate", d, "--prompt", "for i in", "--max-new-tokens", "3", "--ignore-eos",
                                 "--json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.output)
    assert len(doc["generated_ids"]) == 3 and doc["stopped"] == "max_new_tokens"
    r = CliRunner().invoke(app, ["claim", d, "-o", str(tmp_path / "c.json"), "--prompt", "for i in",
                                 "--max-new-tokens", "3", "--ignore-eos"])
    assert r.exit_code == 0, r.output
    gen = json.loads((tmp_path / "c.json").read_text())["generation"]
    assert gen["generated_ids"] == doc["generated_ids"] and gen["stop_at_eos"] is False
    from tests.conftest import MODELS

    plain = compile_model(MODELS / "digits_mlp.onnx", tmp_path / "digits")
    bad = CliRunner().invoke(app, ["claim", str(plain.directory), "-o", str(tmp_path / "x.json"), "--ignore-eos"])
    assert bad.exit_code == 2 and "--ignore-eos" in bad.output
