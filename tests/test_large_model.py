"""A model whose values exceed 2 GiB compiles, runs natively and in the interpreter, and runs per
task in the VM (docs/DESIGN.md "Per-task memory maps"), with interp == native == VM.

The model: two int32 embedding tables of 1 GiB each (2^28 elements: 2 GiB of values with the
inputs and outputs on top), each gathered by its own index input, and the two gathered rows
added. The ONNX file holds each table as two small random factors, A [1, K, D] + B [R, 1, D],
that compile folds into the [R·K, D] table (the frontend cannot yet read an ONNX file over
protobuf's 2 GB); the IR, the build's tensor store, the interpreter, the native build and the VM
see the full tables. No whole-graph task exists; each gather node maps its 1 GiB table, its
indices and its output, and the VM reads only the table pages holding the gathered rows.
"""

from __future__ import annotations

import gc

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from opmlc.api import run
from opmlc.artifact import Build, compile_model
from opmlc.errors import OpmlcError
from opmlc.store import TensorStore

R, K, D = 512, 512, 1024  # a table of R·K = 262144 rows of 1024 int32: 2^30 bytes
ROWS = R * K


def make_model(path, rng: np.random.Generator, n: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    factors, inits, nodes = {}, [], []
    for t in ("t1", "t2"):
        a = rng.integers(-1000, 1000, size=(1, K, D), dtype=np.int32)
        b = rng.integers(-(1 << 20), 1 << 20, size=(R, 1, D), dtype=np.int32)
        factors[t] = (a, b)
        inits += [numpy_helper.from_array(a, f"{t}_a"), numpy_helper.from_array(b, f"{t}_b")]
        nodes += [helper.make_node("Add", [f"{t}_a", f"{t}_b"], [f"{t}_3d"]),
                  helper.make_node("Reshape", [f"{t}_3d", "rows"], [t])]
    inits.append(numpy_helper.from_array(np.array([ROWS, D], dtype=np.int64), "rows"))
    nodes += [helper.make_node("Gather", ["t1", "i1"], ["g1"], axis=0),
              helper.make_node("Gather", ["t2", "i2"], ["g2"], axis=0),
              helper.make_node("Add", ["g1", "g2"], ["y"])]
    graph = helper.make_graph(
        nodes, "two_gigabyte_tables",
        [helper.make_tensor_value_info(i, TensorProto.INT64, [n]) for i in ("i1", "i2")],
        [helper.make_tensor_value_info("y", TensorProto.INT32, [n, D])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return factors


def table_rows(factors: tuple[np.ndarray, np.ndarray], rows: np.ndarray) -> np.ndarray:
    a, b = factors
    return a[0, rows % K].astype(np.int64) + b[rows // K, 0]


@pytest.mark.slow
def test_a_model_over_2_gib_runs_natively_and_per_task_in_the_vm(tmp_path, monkeypatch):
    rng = np.random.default_rng(12)
    i1 = np.array([0, ROWS - 1, 131071, 77777])
    i2 = rng.integers(0, ROWS, size=4)
    factors = make_model(tmp_path / "big.onnx", rng, len(i1))

    build = compile_model(tmp_path / "big.onnx", tmp_path / "build", frac_bits=16)
    g = build.graph
    assert sum(v.type.nbytes for v in g.values) > 1 << 31  # the values themselves, not padding
    assert [n.op for n in g.nodes] == ["gather", "gather", "binary"]
    assert build.manifest["program"]["tasks"]["whole"] is None
    del build, g
    gc.collect()  # hold the tables once: the loaded build's
    build = Build.load(tmp_path / "build")  # every root, page root, task map and base root checked

    inputs = [i1, i2]
    want = table_rows(factors["t1"], i1) + table_rows(factors["t2"], i2)
    interp = run(build, inputs)
    assert np.array_equal(interp.outputs[0], want)
    assert run(build, inputs, backend="native").output_roots == interp.output_roots

    with pytest.raises(OpmlcError, match="no whole-graph task; run its nodes as tasks with --node K"):
        run(build, inputs, backend="vm")

    reads: list[int] = []
    plain_read = TensorStore.read

    def counted(self, root, offset, size):
        reads.append(size)
        return plain_read(self, root, offset, size)

    monkeypatch.setattr(TensorStore, "read", counted)
    for k in range(len(build.graph.nodes)):
        reads.clear()
        vm = run(build, inputs, backend="vm", node=k)
        assert vm.output_roots == run(build, inputs, node=k).output_roots
        assert vm.output_roots == run(build, inputs, backend="native", node=k).output_roots
        if k < 2:  # a gather read the pages of its 4 rows (4 KiB each), nothing else of the table
            assert reads == [4096] * 4
