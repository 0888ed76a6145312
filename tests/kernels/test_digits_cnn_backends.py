"""The digits CNN on every backend: interpreter, native build, and model.elf in the VM give the
same output root, for the whole graph and for every node as its own task (also via the API's
`--backend vm`)."""

from __future__ import annotations

import pytest

from models.make_digits_cnn import load_images
from opmlc.api import quantize_inputs, run
from opmlc.artifact import compile_model
from opmlc.backend.program import build_program
from opmlc.commit import tensor_root
from tests.conftest import MODELS
from tests.kernels.harness import interp_and_native, run_vm


@pytest.fixture(scope="module")
def cnn_build(tmp_path_factory):
    return compile_model(MODELS / "digits_cnn.onnx", tmp_path_factory.mktemp("cnn"))


def test_interp_native_and_vm_agree_on_digits_cnn_whole_graph_and_per_node(cnn_build):
    x, _ = load_images()
    g = cnn_build.graph
    program = build_program(g)
    out_v = g.outputs[0]
    t = g.values[out_v].type
    inputs = quantize_inputs(cnn_build, [x[5:6]])
    out = interp_and_native(g, inputs)
    for v, (want, got) in enumerate(zip(out.values, out.native, strict=True)):
        assert tensor_root(got, g.values[v].type) == tensor_root(want, g.values[v].type), f"value %{v}"
    state, (vm_out,) = run_vm(g, program, out.values)
    assert state.exit_code == 0 and tensor_root(vm_out, t) == tensor_root(out.values[out_v], t)
    for k, node in enumerate(g.nodes):
        nt = g.values[node.output].type
        state, (got,) = run_vm(g, program, out.values, node=k)
        assert state.exit_code == 0 and tensor_root(got, nt) == tensor_root(out.values[node.output], nt)


def test_api_backends_give_one_root(cnn_build):
    x, _ = load_images()
    roots = {b: run(cnn_build, [x[9:10]], b).output_roots[0] for b in ("interp", "native", "vm")}
    assert len(set(roots.values())) == 1
    node_roots = {b: run(cnn_build, [x[9:10]], b, node=0).output_roots[0] for b in ("interp", "vm")}
    assert len(set(node_roots.values())) == 1
