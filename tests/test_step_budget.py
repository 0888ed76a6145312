"""The step budget per task (docs/DESIGN.md "Tasks: the step budget and node parts").

Every VM task of every example model, run to its exit, stays within the build's budget and
within the compiler's estimate (the cost model must never be too low: a task over the budget
would fail in a game, not at compile); a split node's parts give exactly the interpreter's
output slice; the manifest records the budget and `compile --check` replays it; a split node's
dispute descends its output tree to the lying part, on chain, and the contract refuses a part
root that is not a subtree of the claimed output, a split node started as one task, a wrong
part base root and a claim of more steps than the budget.
"""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from opmlc.artifact import check_build, compile_model
from opmlc.backend.parts import node_steps
from opmlc.cli import app
from opmlc.commit import padded_bytes, tensor_root
from opmlc.dispute.commitment import node_proof, part_levels
from opmlc.dispute.graph_trace import Tamper
from opmlc.dispute.onchain import Deployment, Phase
from opmlc.dispute.parties import Challenger, Requester, Server
from opmlc.dispute.session import settle
from opmlc.errors import BuildError
from opmlc.tasks import honest_values, initial_state, node_parts, program_of, read_part
from tests.conftest import MODELS
from toolchain.errors import ContractReverted
from vm.merkle import list_proof
from vm.run import run as run_vm

runner = CliRunner()
X = np.load(MODELS / "digit_sample.npy")
SMALL = 1 << 13  # splits the digits MLP's first matmul into 4 parts


@pytest.fixture(scope="module")
def small_build(tmp_path_factory):
    """The digits MLP at 2^13 steps: its first matmul in 4 parts (shared; never modified)."""
    return compile_model(MODELS / "digits_mlp.onnx", tmp_path_factory.mktemp("budget") / "b", step_budget=SMALL)


def sample_inputs(build) -> list[np.ndarray]:
    """Deterministic inputs: random fixed point for fx32 inputs, zeros (valid token ids) else."""
    g = build.graph
    rng = np.random.default_rng(0)
    out = []
    for v in g.inputs:
        t = g.values[v].type
        if t.dtype.name == "FX32":
            out.append(rng.integers(-(1 << t.frac), 1 << t.frac, size=t.shape).astype(np.int32))
        else:
            out.append(np.zeros(t.shape, t.dtype.numpy))
    return out


def check_every_task(build, budget: int) -> dict:
    """Runs every task (each part of a split node) to its exit: within the budget and the
    estimate, exit code 0, a part's region the interpreter's slice of the output."""
    g = build.graph
    values = honest_values(build, sample_inputs(build))
    program = program_of(build)
    tasks, most = 0, 0
    for k, node in enumerate(g.nodes):
        parts = node_parts(build, k)
        estimate = node_steps(g, k) if parts is None else node_steps(g, k, parts.part_elements)
        for j in [None] if parts is None else range(parts.count):
            state = initial_state(build, values, k, program, part=j)
            run_vm(state, budget + 1)
            assert state.exited and state.exit_code == 0, (k, j, state.step)
            assert state.step <= min(budget, estimate), (k, node.op, j, state.step, estimate)
            if j is not None:
                size = parts.part_bytes
                whole = padded_bytes(values[node.output], g.values[node.output].type)
                assert read_part(build, state, k, j) == whole[j * size:(j + 1) * size], (k, j)
            tasks, most = tasks + 1, max(most, state.step)
    return {"tasks": tasks, "max_steps": most}


FAST = ["digits_mlp", "digits_cnn", "iris_gboost", "digits_forest", "cancer_gboost", "diabetes_linear", "iris_tree",
        "iris_logreg"]


# Each model at the default budget, and at the smallest budget it compiles under where that
# splits something (elsewhere the same tasks run: a node of an op without parts sets the floor).
CASES = [(name, 24) for name in FAST] + [("digits_mlp", 14)]


@pytest.mark.parametrize("name,log2_budget", CASES)
def test_every_task_of_the_small_models_fits_the_budget(tmp_path, name, log2_budget):
    build = compile_model(MODELS / f"{name}.onnx", tmp_path / "b", step_budget=1 << log2_budget)
    assert build.manifest["program"]["log2_step_budget"] == log2_budget
    check_every_task(build, 1 << log2_budget)


@pytest.mark.slow
@pytest.mark.parametrize("name,weights", [("tiny_gpt2", None), ("tiny_llama", "int8")])
def test_every_task_of_the_decoders_fits_the_budget(tmp_path, name, weights):
    # at 2^20 steps their matmuls, norms, softmaxes and SwiGLU/GELU nodes split (at the default
    # 2^24 no node of theirs needs to). One weight kind per model: both models and both kinds
    # are covered (the other two pairs add ~30 s of VM runs to the suite and no new op)
    build = compile_model(MODELS / f"{name}.onnx", tmp_path / "b", weights=weights, step_budget=1 << 20)
    g = build.graph
    split = {g.nodes[k].op for k in range(len(g.nodes)) if node_parts(build, k)}
    assert {"qmatmul" if weights else "matmul", "unary", "binary"} <= split, split
    check_every_task(build, 1 << 20)


def test_a_split_node_s_parts_are_subtrees_of_its_output(small_build):
    build = small_build
    parts = node_parts(build, 0)
    assert parts is not None and parts.count == 4 and parts.part_bytes == 32  # 32 outputs, 8 a part
    assert node_parts(build, 1) is None and node_parts(build, 2) is None
    rec = build.manifest["program"]["tasks"]["nodes"][0]["parts"]
    assert rec["log2"] == 2 and len(rec["base_roots"]) == 4 and len(set(rec["base_roots"])) == 4
    values = honest_values(build, sample_inputs(build))
    g = build.graph
    out = g.nodes[0].output
    levels = part_levels(padded_bytes(values[out], g.values[out].type), 2)
    assert levels[-1] == [tensor_root(values[out], g.values[out].type)]
    assert check_build(MODELS / "digits_mlp.onnx", build.directory) == []  # compile --check replays the budget


def test_the_budget_is_a_power_of_two_and_a_node_that_cannot_split_is_refused(tmp_path):
    r = runner.invoke(app, ["compile", str(MODELS / "digits_mlp.onnx"), "-o", str(tmp_path / "b"),
                            "--step-budget", "100000"])
    assert r.exit_code == 2 and "--step-budget 100000: must be a power of two" in r.output
    # a tree ensemble has no ranged kernel: too large for 2^12 steps, it is refused by name
    with pytest.raises(BuildError, match=r"node 0 \(tree_ensemble .*cannot be split into parts yet"):
        compile_model(MODELS / "digits_forest.onnx", tmp_path / "c", step_budget=1 << 12)
    # a ranged op whose smallest part (8 outputs) is over the budget, a long reduction, is split
    # into exact partial sums instead (tests/test_psums.py)
    build = compile_model(MODELS / "digits_mlp.onnx", tmp_path / "d", step_budget=1 << 12)
    assert any(n.attrs.get("accumulate") for n in build.graph.nodes) and any(n.op == "psum" for n in build.graph.nodes)
    check_every_task(build, 1 << 12)


@pytest.fixture
def split_game(small_build):
    build = small_build
    d = Deployment.create()
    a = d.chain.accounts
    req = Requester(d, a[0], build)
    req.register()
    task = req.request([X])

    def start(part: int):
        lie = Tamper(0, element=node_parts(build, 0).element_range(part)[0])
        server = Server(d, a[1], build, tamper=lie)
        server.submit(task, [X])
        challenger = Challenger(d, a[2], build)
        return server, challenger, challenger.check(task, [X])

    return build, d, start


@pytest.mark.parametrize("part", [2, 0])
def test_a_lie_in_one_part_is_found_by_descending_to_that_part(split_game, part):
    build, d, start = split_game
    server, challenger, gid = start(part)
    g = settle(d, server, challenger, gid)
    assert g.winner == "challenger" and g.reason == 1 and g.node == 0
    assert g.task_part == part and g.parts_log2 == 2
    assert len(d.events("PartResponded", gameId=gid)) == 2
    (started,) = d.events("PartStarted", gameId=gid)
    assert started["args"]["part"] == part and started["args"]["log2Steps"] <= 13
    # the game record (`opmlc demo --record`) and its picture show the descent as its own phase
    from opmlc import report
    from opmlc.dispute.game_record import game_record

    rec = game_record(d, gid, len(build.graph.nodes))
    descent = [m for m in rec["moves"] if m["phase"] == "parts"]
    assert [m["move"] for m in descent] == ["splitNode", "bisectPart", "respondPart", "bisectPart", "respondPart"]
    assert (descent[0]["lo"], descent[0]["hi"]) == (0, 4) and (descent[-1]["lo"], descent[-1]["hi"]) == (part, part + 1)
    assert rec["parts_log2"] == 2 and rec["rounds"]["parts"] == 2 and rec["rounds"]["nodes"] >= 1
    assert all(m["phase"] == 1 for m in rec["moves"] if m["move"] in ("bisectTrace", "respondTrace"))
    picture = report.from_game(rec)
    assert picture.parts[0] == (0, 4) and picture.parts[-1] == (part, part + 1) and picture.part == part
    svg = report.render_svg(picture)
    assert "2 over parts" in svg and f"descent over its output&#x27;s 2^2 = 4 parts: part {part}" in svg
    # a record written before the descent had its own phase (its moves in phase 1 at node 0) draws the same
    legacy = {**rec, "moves": [{k: v for k, v in m.items() if k not in ("parts_log2", "depth", "right", "mid", "node")}
                               | {"phase": 1, "lo": 0, "hi": 1} if m["phase"] == "parts" else m for m in rec["moves"]]}
    del legacy["parts_log2"], legacy["rounds"]
    assert report.render_svg(report.from_game(legacy)) == svg


def _to_split(d, server, challenger, gid):
    """Plays the game up to the server's first bisectPart."""
    for _ in range(100):
        g = d.game(gid)
        if g.phase is Phase.BISECT_PART:
            return g
        assert server.act(gid) or challenger.act(gid)
    raise AssertionError("no split")


def test_the_contract_rejects_a_part_root_that_is_not_a_subtree_of_the_output(split_game):
    build, d, start = split_game
    server, challenger, gid = start(2)
    g = _to_split(d, server, challenger, gid)
    f = d.registry.functions
    c = server.claimant(g.task_id)
    left, right = c.bisect_part(0, 0, 0)
    forged = bytes(31) + b"\x01"
    for pair in [(left, forged), (forged, right), (right, left)]:
        with pytest.raises(ContractReverted, match="InvalidPartSplit"):
            server.send(f.bisectPart(gid, *pair))
    assert d.game(gid).phase is Phase.BISECT_PART  # nothing moved: the honest split still wins for the challenger
    g = settle(d, server, challenger, gid)
    assert g.winner == "challenger" and g.task_part == 2


def test_the_contract_refuses_a_split_node_as_one_task_a_wrong_part_and_too_many_steps(split_game):
    build, d, start = split_game
    server, challenger, gid = start(1)
    f = d.registry.functions
    for _ in range(100):  # up to the hand-off of node 0
        g = d.game(gid)
        if g.phase is Phase.START_NODE:
            break
        assert server.act(gid) or challenger.act(gid)
    c = server.claimant(g.task_id)
    info = c.infos[0]
    leaves = c.trace.leaves(0)
    n_in = len(info.input_values)
    with pytest.raises(ContractReverted, match="PartsMismatch"):  # checked before any splice or state
        server.send(f.startNode(gid, info.as_tuple(), node_proof(build, 0), c.trace.roots[info.output_value],
                                list_proof(leaves, info.output_value), [c.trace.roots[v] for v in info.input_values],
                                [list_proof(leaves, v) for v in info.input_values], [b""] * n_in, bytes(186), b"", 10))
    for _ in range(100):  # the descent, to part 1's hand-off
        g = d.game(gid)
        if g.phase is Phase.START_PART:
            break
        assert server.act(gid) or challenger.act(gid)
    assert g.part == 1
    sp = c.start_part(0, 1)
    args = [sp.info.as_tuple(), sp.node_proof, (sp.part_base, sp.out_proof), sp.input_roots, sp.input_proofs,
            sp.splice_proofs, sp.final_state, sp.out_region_proof, sp.log2_steps]
    other = c.start_part(0, 3)
    with pytest.raises(ContractReverted, match="InvalidPartBaseRoot"):
        server.send(f.startPart(gid, *args[:2], (other.part_base, other.out_proof), *args[3:]))
    with pytest.raises(ContractReverted, match="StepBudgetExceeded"):
        server.send(f.startPart(gid, *args[:-1], 15))
    g = settle(d, server, challenger, gid)
    assert g.winner == "challenger" and g.task_part == 1


def test_the_off_chain_model_descends_to_the_lying_part(small_build):
    from opmlc.dispute.offchain import play
    from opmlc.dispute.roles import Claimant, Verifier

    build = small_build
    lie = Tamper(0, element=node_parts(build, 0).element_range(3)[0])
    from opmlc.api import quantize_inputs

    q = quantize_inputs(build, [X])
    rec = play(Claimant(build, q, lie), Verifier(build, q))
    assert rec.winner == "challenger" and rec.node == 0 and rec.start_node.part == 3
    assert [r["right_chosen"] for r in rec.parts] == [True, True]
    from opmlc import report

    picture = report.from_trace({**rec.to_json(), "commitment": {"n_nodes": len(build.graph.nodes)}})
    assert picture.parts == [(0, 4), (2, 4), (3, 4)] and picture.part == 3
    assert [m.move for m in picture.moves if m.phase == "parts"] == ["splitNode"] + ["bisectPart", "respondPart"] * 2
    assert "startPart" in [m.move for m in picture.moves]


def vgg_fc6(path) -> None:
    """VGG-19's first fully-connected layer, 25088 → 4096 (random weights, fixed seed)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    k, n = 25088, 4096
    w = rng.standard_normal((k, n), dtype=np.float32) * np.float32(0.01)
    b = rng.standard_normal(n, dtype=np.float32) * np.float32(0.01)
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "w", "b"], ["y"], name="fc6")], "vgg_fc6",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, n])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


@pytest.mark.slow
def test_a_vgg_sized_layer_splits_and_a_lie_in_one_part_loses(tmp_path):
    from opmlc.dispute.demo import run_demo

    model = tmp_path / "fc6.onnx"
    vgg_fc6(model)
    build = compile_model(model, tmp_path / "b", weights="int8")
    (k,) = [k for k in range(len(build.graph.nodes)) if node_parts(build, k)]
    parts = node_parts(build, k)
    assert build.graph.nodes[k].op == "qmatmul" and parts.count >= 64
    assert node_steps(build.graph, k, parts.part_elements) <= 1 << 24  # every part's estimate fits
    part = parts.count // 3
    result = run_demo(model, "server", lie_node=k, weights="int8", lie_part=part)
    assert result["winner"] == "challenger" and result["reason"] == "step proven"
    assert result["node"] == k and result["part"] == part and result["rounds_parts"] == parts.log2
    assert 0 < result["vm_steps"] <= 1 << 24  # the one part's task, run to its exit, within the budget


def test_a_tampered_part_record_is_refused_on_load(tmp_path):
    import json

    from opmlc.artifact import Build

    compile_model(MODELS / "digits_mlp.onnx", tmp_path / "b", step_budget=SMALL)
    path = tmp_path / "b" / "manifest.json"
    original = json.loads(path.read_text())
    for mutate in (lambda p: p["base_roots"].reverse(), lambda p: p.update(log2=3), lambda p: p.clear()):
        m = json.loads(json.dumps(original))
        mutate(m["program"]["tasks"]["nodes"][0]["parts"])
        path.write_text(json.dumps(m))
        with pytest.raises(BuildError, match="base roots do not match"):
            Build.load(tmp_path / "b")


def ranged_ops_model(path) -> None:
    """x[1, 256] → MatMul 256×2048 → Relu → Sigmoid → Add(·, MatMul) → Reshape [2048]."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(1)
    w = rng.standard_normal((256, 2048), dtype=np.float32) * np.float32(0.05)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("Sigmoid", ["r"], ["s"]), helper.make_node("Add", ["s", "h"], ["a"]),
             helper.make_node("Reshape", ["a", "shape"], ["y"])]
    graph = helper.make_graph(
        nodes, "ranged", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 256])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2048])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(np.array([2048], np.int64), "shape")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


@pytest.mark.parametrize("weights", [None, "int8"])
def test_every_ranged_kernel_splits_bit_exactly(tmp_path, weights):
    model = tmp_path / "ranged.onnx"
    ranged_ops_model(model)
    build = compile_model(model, tmp_path / "b", step_budget=1 << 17, weights=weights)
    g = build.graph
    split = {g.nodes[k].op for k in range(len(g.nodes)) if node_parts(build, k)}
    assert {"matmul" if weights is None else "qmatmul", "relu", "unary", "binary"} <= split
    check_every_task(build, 1 << 17)


def test_demo_lie_part_names_a_part_of_a_split_node():
    r = runner.invoke(app, ["demo", "--lie-node", "1", "--lie-part", "0", "--step-budget", str(SMALL)])
    assert r.exit_code == 2 and "--lie-part 0: node 1 is not split into parts" in r.output
    r = runner.invoke(app, ["demo", "--lie-node", "0", "--lie-part", "4", "--step-budget", str(SMALL)])
    assert r.exit_code == 2 and "--lie-part 4: node 0 has parts 0..3" in r.output


def test_a_split_build_still_runs_whole_nodes_and_the_whole_graph(small_build):
    from opmlc.api import run

    build = small_build
    want = run(build, [X], "interp").outputs
    for backend, node in [("vm", None), ("native", None)]:
        got = run(build, [X], backend, node).outputs
        assert all(np.array_equal(a, b) for a, b in zip(got, want, strict=True)), backend
    node0 = run(build, [X], "interp", 0).outputs
    assert all(np.array_equal(a, b) for a, b in zip(run(build, [X], "vm", 0).outputs, node0, strict=True))


def more_ranged_ops_model(path) -> None:
    """One node of every other op with a ranged kernel, each large enough to split at 2^16 steps:
    softmax, layer norm, a batched matmul (4 heads of x·xᵀ), a transpose (view), an embedding
    gather, concat, where (and a comparison: bool parts), a reduction, conv, max and average
    pools, quantize_linear. Rows of 24: a softmax's or norm's parts cut rows."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(2)

    def f32(*shape, scale=0.3):
        return (rng.standard_normal(shape, dtype=np.float32) * np.float32(scale)).astype(np.float32)

    inits = [numpy_helper.from_array(a, n) for n, a in [
        ("gamma", f32(24, scale=1.0)), ("beta", f32(24)), ("table", f32(100, 24)),
        ("heads", np.array([4, 16, 24], np.int64)), ("w", f32(4, 2, 3, 3)), ("cb", f32(4)),
        ("zero", np.array(0, np.float32)), ("qs", np.array(0.02, np.float32)), ("qz", np.array(3, np.int8)),
        ("axes", np.array([2], np.int64))]]
    node = helper.make_node
    nodes = [
        node("Softmax", ["x"], ["sm"], axis=-1),
        node("LayerNormalization", ["sm", "gamma", "beta"], ["ln"], axis=-1),
        node("Reshape", ["ln", "heads"], ["hd"]),
        node("Transpose", ["hd"], ["hdt"], perm=[0, 2, 1]),
        node("MatMul", ["hd", "hdt"], ["att"]),
        node("Gather", ["table", "ids"], ["emb"], axis=0),
        node("Concat", ["x", "emb"], ["cat"], axis=1),
        node("Greater", ["cat", "zero"], ["pos"]),
        node("Concat", ["emb", "emb"], ["emb2"], axis=1),
        node("Where", ["pos", "cat", "emb2"], ["wh"]),
        node("ReduceSum", ["wh", "axes"], ["red"], keepdims=1),
        node("Conv", ["img", "w", "cb"], ["cv"], pads=[1, 1, 1, 1]),
        node("MaxPool", ["cv"], ["mp"], kernel_shape=[2, 2], strides=[1, 1]),
        node("AveragePool", ["cv"], ["ap"], kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1]),
        node("QuantizeLinear", ["x", "qs", "qz"], ["q"]),
        node("DequantizeLinear", ["q", "qs", "qz"], ["dq"]),
    ]
    fl = TensorProto.FLOAT
    graph = helper.make_graph(
        nodes, "more_ranged",
        [helper.make_tensor_value_info("x", fl, [1, 64, 24]),
         helper.make_tensor_value_info("ids", TensorProto.INT64, [1, 64]),
         helper.make_tensor_value_info("img", fl, [1, 2, 16, 16])],
        [helper.make_tensor_value_info(n, fl, shape) for n, shape in [
            ("att", [4, 16, 16]), ("red", [1, 128, 1]), ("mp", [1, 4, 15, 15]), ("ap", [1, 4, 16, 16]),
            ("dq", [1, 64, 24])]],
        inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


@pytest.mark.parametrize("weights", [None, "int8"])
def test_every_op_s_ranged_kernel_splits_bit_exactly(tmp_path, weights):
    model = tmp_path / "more_ranged.onnx"
    more_ranged_ops_model(model)
    build = compile_model(model, tmp_path / "b", step_budget=1 << 16, weights=weights)
    g = build.graph
    split = [k for k in range(len(g.nodes)) if node_parts(build, k)]
    want = {"softmax", "norm", "matmul", "view", "concat", "where", "reduce", "pool", "quantize_linear",
            "qgather" if weights else "gather", "qconv" if weights else "conv"}
    assert want <= {g.nodes[k].op for k in split}, want - {g.nodes[k].op for k in split}
    assert any(g.nodes[k].op == "matmul" and len(g.values[g.nodes[k].output].type.shape) == 3 for k in split)
    assert any(g.values[g.nodes[k].output].type.dtype.name == "BOOL" for k in split)  # 1-byte elements
    assert all(node_parts(build, k).part_elements % 24 for k in split if g.nodes[k].op in ("softmax", "norm"))
    check_every_task(build, 1 << 16)


@pytest.mark.slow
def test_a_decoder_of_llama_1_1b_widths_plans_every_task_within_the_default_budget(tmp_path):
    """One layer of TinyLlama-1.1B's widths (hidden 2048, 32 heads, 4 key/value heads, MLP 5632,
    32 tokens; a small vocabulary, which changes only the head's width) with int8 weights: no
    node raises the default budget, and every task's estimate (a part's, for a split node) fits
    2^24. Planned from the lowered graph: compiling adds nothing the plan has not decided."""
    pytest.importorskip("torch", reason="models/make_llama.py draws the weights with torch")
    from models.make_llama import LlamaShape, write_model
    from opmlc.backend.parts import DEFAULT_LOG2_BUDGET, fitting_log2_budget, plan
    from opmlc.frontend import QuantPolicy, lower_model
    from opmlc.frontend.calibrate import DEFAULT_FRAC

    path = write_model(LlamaShape(layers=1, vocab=512), tmp_path, log=lambda *_: None)
    policy = QuantPolicy(default=DEFAULT_FRAC, overrides={}, analyse=True, input_ranges={}, weights="int8",
                         block_size=None)
    g = lower_model(path, policy, None).graph
    assert fitting_log2_budget(g) == DEFAULT_LOG2_BUDGET
    plans = plan(g, DEFAULT_LOG2_BUDGET)
    split = {g.nodes[p.node].op for p in plans if p is not None}
    assert {"qmatmul", "matmul"} <= split  # the projections, and the 32 heads' batched q·kᵀ and p·v
    for k, p in enumerate(plans):
        assert node_steps(g, k, None if p is None else p.part_elements) <= 1 << DEFAULT_LOG2_BUDGET, k
