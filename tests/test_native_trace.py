"""Phase 1 from the native build (opmlc/dispute/native_trace.py): the streaming native trace
equals the interpreter's, root for root, on every example model and on a decoder's int8/int4
builds; the lies of tests and demos are the same lies; a node's VM task gets the same operands;
values are freed once no later node reads them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from opmlc.api import quantize_inputs
from opmlc.artifact import Build, compile_model
from opmlc.dispute.demo import default_input
from opmlc.dispute.graph_trace import Tamper
from opmlc.dispute.native_trace import party_roots, task_operands, tracer
from opmlc.dispute.offchain import play
from opmlc.dispute.roles import Claimant, Verifier

MODELS = Path(__file__).resolve().parents[1] / "models"
CASES = [(p.stem, None) for p in sorted(MODELS.glob("*.onnx"))] + [("tiny_llama", "int8"), ("tiny_llama", "int4")]


@pytest.fixture(scope="module")
def builds(tmp_path_factory):
    made: dict[tuple[str, str | None], Build] = {}

    def get(name: str, weights: str | None) -> Build:
        if (name, weights) not in made:
            out = tmp_path_factory.mktemp(f"{name}_{weights}")
            made[name, weights] = compile_model(MODELS / f"{name}.onnx", out, weights=weights)
        return made[name, weights]

    return get


def inputs_of(build: Build) -> list[np.ndarray]:
    return quantize_inputs(build, default_input(build))


@pytest.mark.parametrize("name,weights", CASES, ids=[f"{n}-{w or 'fx32'}" for n, w in CASES])
def test_the_native_trace_equals_the_interpreters_on_every_example_model(builds, name, weights):
    build = builds(name, weights)
    q = inputs_of(build)
    sat_native, sat_interp = {}, {}
    native = party_roots(build, q, saturated=sat_native)
    interp = party_roots(build, q, engine="interp", saturated=sat_interp)
    assert len(native) == len(build.graph.values)
    for v, (a, b) in enumerate(zip(native, interp, strict=True)):
        assert a == b, f"{name} {weights}: value %{v} has another root natively"
    assert sat_native == sat_interp


@pytest.mark.parametrize("name,weights", [("digits_cnn", None), ("tiny_llama", "int4")])
@pytest.mark.parametrize("propagate", [True, False])
def test_a_lie_is_the_same_lie_natively(builds, name, weights, propagate):
    build = builds(name, weights)
    q = inputs_of(build)
    n = len(build.graph.nodes)
    for node in (0, n // 2, n - 1):
        tamper = Tamper(node, propagate=propagate)
        lied = party_roots(build, q, tamper)
        assert lied == party_roots(build, q, tamper, engine="interp")
        honest = party_roots(build, q)
        first = build.graph.first_node_value
        assert [k for k in range(n) if lied[first + k] != honest[first + k]][0] == node


def test_a_node_task_gets_the_interpreters_operands(builds):
    build = builds("tiny_llama", "int4")
    q = inputs_of(build)
    g = build.graph
    for k in (0, 17, len(g.nodes) - 1):
        native = task_operands(build, q, k)
        interp = task_operands(build, q, k, engine="interp")
        for v in range(len(g.values)):
            if v in g.nodes[k].inputs:
                assert np.array_equal(native[v], interp[v]), f"node {k}: operand %{v} differs"
                assert native[v].dtype == interp[v].dtype
                if v in g.initializers:  # spliced by the manifest's root, never hashed again
                    assert native[v] is g.initializers[v]
            else:
                assert native[v] is None


def test_the_trace_frees_values_no_later_node_reads(builds):
    build = builds("tiny_llama", None)
    party_roots(build, inputs_of(build))
    g = build.graph
    every = sum(g.values[n.output].type.nbytes for n in g.nodes)
    peak = tracer(build).peak_live_bytes
    assert 0 < peak < every / 4, (peak, every)


def test_a_dispute_on_native_traces_ends_at_the_lying_node(builds):
    build = builds("digits_cnn", None)
    q = inputs_of(build)
    g = build.graph
    node = next(k for k, n in enumerate(g.nodes) if n.op == "relu") if any(n.op == "relu" for n in g.nodes) else 1
    rec = play(Claimant(build, q, Tamper(node)), Verifier(build, q))
    assert rec.node == node and rec.winner == "challenger"


def test_an_unknown_engine_is_refused(builds):
    build = builds("digits_mlp", None)
    with pytest.raises(ValueError, match="engine"):
        Verifier(build, inputs_of(build), engine="gpu")


@pytest.mark.parametrize("weights", ["int8", "int4"])
def test_a_loaded_build_traces_on_its_mapped_weights(builds, weights):
    made = builds("tiny_llama", weights)
    loaded = Build.load(made.directory)
    q = inputs_of(made)
    assert party_roots(loaded, q) == party_roots(made, q, engine="interp")
    t = tracer(loaded)
    mapped = [v for v, a in loaded.graph.initializers.items() if isinstance(a.base, np.memmap)]
    assert mapped and all(t.weights[v] is loaded.graph.initializers[v] for v in mapped)
    from opmlc.ir.initializers import PackedI4, held

    packed = [v for v in loaded.graph.initializers if isinstance(held(loaded.graph.initializers, v), PackedI4)]
    assert bool(packed) == (weights == "int4")  # a 4-bit weight: its mapped packed bytes, never unpacked
    assert all(t.weights[v] is held(loaded.graph.initializers, v).packed for v in packed)


@pytest.mark.parametrize("propagate", [True, False])
def test_a_reshape_takes_its_operands_root_unless_a_lie_sits_between(builds, propagate):
    """The native trace gives a reshape its operand's root without hashing (the same bytes):
    still the interpreter's root when the operand, or the reshape itself, is lied about."""
    build = builds("tiny_llama", "int4")
    q = inputs_of(build)
    g = build.graph
    first = g.first_node_value
    reshapes = [k for k, n in enumerate(g.nodes) if n.op == "reshape" and n.inputs[0] >= first]
    assert reshapes
    k = reshapes[len(reshapes) // 2]
    honest = party_roots(build, q)
    assert honest[g.nodes[k].output] == honest[g.nodes[k].inputs[0]]
    for node in (g.nodes[k].inputs[0] - first, k):
        tamper = Tamper(node, propagate=propagate)
        assert party_roots(build, q, tamper) == party_roots(build, q, tamper, engine="interp"), node


def test_a_repeat_views_root_from_its_operands_blocks_is_the_hashed_one():
    """repeat_root (a stride-0 repeat of whole power-of-two blocks, as the GQA's key/value heads)
    gives the root of the view's own bytes, and declines every other view."""
    from opmlc.commit import tensor_root
    from opmlc.dispute.native_trace import repeat_root
    from opmlc.ir.graph import Node
    from opmlc.ir.ops.view import View
    from opmlc.ir.types import DType, TensorType

    rng = np.random.default_rng(0)
    cases = [((1, 4, 16, 64), [1, 4, 8, 16, 64], [4096, 1024, 0, 64, 1], True),   # GQA: 8 queries per KV head
             ((3, 8), [3, 4, 8], [8, 0, 1], True),                                 # 3 blocks: a padded output
             ((2, 8), [2, 2, 8], [8, 0, 1], True),
             ((1, 4, 24, 64), [1, 4, 8, 24, 64], [6144, 1536, 0, 64, 1], False),  # a block of 6 KiB
             ((2, 8), [2, 3, 8], [8, 0, 1], False),                                # 3 copies
             ((2, 8), [2, 8, 2], [8, 1, 0], False)]                                # repeats single elements
    for src, shape, strides, expected in cases:
        t_in = TensorType(DType.FX32, src, 10)
        x = rng.integers(-2**31, 2**31, size=src, dtype=np.int64).astype(np.int32)
        attrs = {"shape": shape, "offset": 0, "strides": strides}
        t_out = View().infer([t_in], attrs)
        node = Node("view", [0], 1, attrs, "v")
        got = repeat_root(node, x, t_in, t_out)
        if not expected:
            assert got is None, (src, shape)
            continue
        out = View().evaluate([x], [t_in], attrs, t_out)
        assert got == tensor_root(out, t_out), (src, shape)
