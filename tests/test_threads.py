"""Threads of the native backend end to end: `opmlc.run(..., threads=N)` and `opmlc run
--threads N` give the interpreter's output root and saturation counts on any number of threads,
and a bad thread count is a one-line error with exit code 2."""

from __future__ import annotations

import json

import numpy as np
import pytest

import opmlc
from models.make_mlp784 import build as make_mlp784
from opmlc.backend.kernels.native import split_worth
from tests.test_cli import assert_one_line_error, invoke


@pytest.fixture(scope="module")
def mlp_build(tmp_path_factory):
    """The 784-512-512-10 MLP at batch 8: its two large layers are split over threads."""
    d = tmp_path_factory.mktemp("threads")
    out = d / "mlp"
    opmlc.compile_model(make_mlp784(d / "mlp784.onnx"), out, input_shapes={"input": (8, 784)})
    return opmlc.Build.load(out)


def test_run_gives_the_interpreters_root_on_any_thread_count(mlp_build):
    assert sum(split_worth(mlp_build.graph, i) for i in range(len(mlp_build.graph.nodes))) == 2
    x = np.random.default_rng(0).normal(size=(8, 784)).astype(np.float32) * 4
    want = opmlc.run(mlp_build, [x])
    for threads in (1, 2, 3, None):
        got = opmlc.run(mlp_build, [x], backend="native", threads=threads)
        assert got.output_roots == want.output_roots, f"threads={threads}"
        assert got.saturated == want.saturated, f"threads={threads}"


def test_cli_threads_option(mlp_build, tmp_path):
    path = tmp_path / "x.npy"
    np.save(path, np.random.default_rng(1).random((8, 784), dtype=np.float32))
    roots = set()
    for args in (["--backend", "interp"], ["--backend", "native", "--threads", "1"],
                 ["--backend", "native", "--threads", "2"]):
        result = invoke("run", mlp_build.directory, "--input", path, "--json", *args)
        assert result.exit_code == 0, result.output
        roots.add(json.loads(result.stdout)["output_root"])
    assert len(roots) == 1
    assert_one_line_error(invoke("run", mlp_build.directory, "--input", path, "--backend", "native",
                                 "--threads", "0"), "threads must be a positive integer")
    assert_one_line_error(invoke("run", mlp_build.directory, "--input", path, "--backend", "vm",
                                 "--threads", "2"), "native backend only")


def test_opmlc_threads_sets_the_default(mlp_build, monkeypatch, tmp_path):
    """$OPMLC_THREADS is the default thread count (the same bits); a bad value is a one-line
    error naming it, exit code 2."""
    from opmlc.backend.native import default_threads

    monkeypatch.setenv("OPMLC_THREADS", "3")
    assert default_threads() == 3
    x = np.random.default_rng(2).random((8, 784), dtype=np.float32)
    assert opmlc.run(mlp_build, [x], backend="native").output_roots == opmlc.run(mlp_build, [x]).output_roots
    path = tmp_path / "x.npy"
    np.save(path, x)
    for bad in ("0", "two"):
        monkeypatch.setenv("OPMLC_THREADS", bad)
        assert_one_line_error(invoke("run", mlp_build.directory, "--input", path, "--backend", "native"),
                              "OPMLC_THREADS")


def test_a_bad_thread_count_is_an_input_error_through_the_api(mlp_build):
    """Every run checks its count (valid ints take a path with no import): 0, negatives, bools,
    floats and strings are InputErrors naming `threads`, for the whole graph and for one node."""
    from opmlc.errors import InputError

    x = np.random.default_rng(3).random((8, 784), dtype=np.float32)
    for bad in (0, -2, True, 1.5, "2"):
        for node in (None, 0):
            with pytest.raises(InputError, match="threads must be a positive integer"):
                opmlc.run(mlp_build, [x], backend="native", threads=bad, node=node)
