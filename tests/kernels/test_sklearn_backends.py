"""The scikit-learn models (models/make_sklearn_models.py) on every backend: interpreter, native
build and model.elf in the VM give the same output roots, label (i64) and probability alike,
for the whole graph, and for every node as its own task for one model; the label's root is that
of its 8-byte big-endian encoding; `opmlc run` prints the predicted label; `opmlc demo` settles
a dispute over the random forest, on the label and on the tree walk itself."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from models.make_sklearn_models import MODELS
from opmlc.api import quantize_inputs, run
from opmlc.artifact import compile_model
from opmlc.backend.program import build_program
from opmlc.cli import app
from opmlc.commit import tensor_bytes, tensor_root
from opmlc.ir.types import DType
from tests.conftest import MODELS as MODEL_DIR
from tests.kernels.harness import interp_and_native, run_vm
from vm.merkle import subtree_root


@pytest.fixture(scope="module")
def builds(tmp_path_factory):
    return {name: compile_model(MODEL_DIR / f"{name}.onnx", tmp_path_factory.mktemp(name)) for name in MODELS}


def sample(name: str, i: int = 7) -> np.ndarray:
    x, _ = MODELS[name][0]()
    return x[i:i + 1]


@pytest.mark.parametrize("name", list(MODELS))
def test_interp_native_and_vm_give_one_output_root_per_output(builds, name):
    build = builds[name]
    results = {b: run(build, [sample(name)], b) for b in ("interp", "native", "vm")}
    roots = {b: r.output_roots for b, r in results.items()}
    assert roots["interp"] == roots["native"] == roots["vm"], name
    if MODELS[name][2]:  # classifiers: the label is i64 [1], committed as 8 big-endian bytes
        out = build.manifest["outputs"][0]
        assert out["dtype"] == "i64" and out["shape"] == [1]
        label = results["interp"].outputs[0]
        t = build.graph.values[build.graph.outputs[0]].type
        raw = tensor_bytes(label, t)
        assert raw == int(label[0]).to_bytes(8, "big", signed=True)
        assert roots["vm"][0] == subtree_root(raw + bytes(32 - 8))


def test_cancer_gboost_every_node_as_its_own_task_on_the_vm(builds):
    build = builds["cancer_gboost"]
    g = build.graph
    out = interp_and_native(g, quantize_inputs(build, [sample("cancer_gboost", 3)]))
    for v, (want, got) in enumerate(zip(out.values, out.native, strict=True)):
        got = got.reshape(want.shape)  # run_native hands 0-d values back as [1]
        assert tensor_root(got, g.values[v].type) == tensor_root(want, g.values[v].type), f"value %{v}"
    program = build_program(g)
    assert {n.op for n in g.nodes} >= {"tree_ensemble", "unary", "concat", "where"}
    for k, node in enumerate(g.nodes):
        t = g.values[node.output].type
        state, (got,) = run_vm(g, program, out.values, node=k)
        assert state.exit_code == 0 and tensor_root(got, t) == tensor_root(out.values[node.output], t), k
    assert g.values[g.outputs[0]].type.dtype is DType.I64


def test_opmlc_run_prints_the_predicted_label(builds, tmp_path):
    x = sample("iris_tree", 120)
    np.save(tmp_path / "x.npy", x)
    r = CliRunner().invoke(app, ["run", str(builds["iris_tree"].directory), "-i", str(tmp_path / "x.npy")])
    assert r.exit_code == 0, r.output
    assert "predicted label: 2" in r.stdout
    r = CliRunner().invoke(app, ["run", str(builds["iris_tree"].directory), "-i", str(tmp_path / "x.npy"),
                                 "--backend", "vm", "--json"])
    assert json.loads(r.stdout)["label"] == [2]


@pytest.mark.parametrize("lie_node", [None, pytest.param(0, marks=pytest.mark.slow)])
def test_demo_on_the_random_forest_is_won_by_the_challenger(lie_node):
    args = ["demo", "--model", str(MODEL_DIR / "digits_forest.onnx"), "--json"]
    if lie_node is not None:
        args += ["--lie-node", str(lie_node)]  # node 0 is the tree_ensemble walk itself
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["winner"] == "challenger" and doc["reason"] == "step proven"
    if lie_node == 0:
        assert doc["node"] == 0 and doc["vm_steps"] > 1000
