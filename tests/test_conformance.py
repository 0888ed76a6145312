"""The ONNX conformance harness on a fast subset (the full run is `opmlc conformance`): each
listed op's node test cases pass, natively too, and the CLI reports the counts as JSON."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from opmlc import conformance
from opmlc.cli import app

SUBSET = ["Conv", "MaxPool", "Relu", "Gemm", "Sigmoid", "Tanh", "Transpose", "Concat", "Slice", "Div",
          "ReduceMean", "ArgMax", "Where", "Cast"]


@pytest.fixture(scope="module")
def subset_report():
    return conformance.run(SUBSET, native=True)


def test_the_subset_passes_on_the_interpreter_and_natively(subset_report):
    failed = [(r.name, r.detail) for r in subset_report.results if r.status == "failed"]
    assert not failed
    per_op = subset_report.per_op()
    for op in ("Conv", "MaxPool", "Sigmoid", "Tanh", "Transpose", "Slice", "ArgMax"):
        assert per_op[op]["passed"] >= 2, op


def test_every_case_is_counted(subset_report):
    t = subset_report.totals()
    assert t["passed"] + t["failed"] + t["unsupported"] == t["total"] == len(conformance.collect(SUBSET))


def test_unsupported_cases_say_why(subset_report):
    for r in subset_report.results:
        if r.status == "unsupported":
            assert r.detail


def test_tolerance_scales_with_fractional_bits():
    want = np.array([0.0, 1.0, -3.0])
    assert np.allclose(conformance.tolerance(want, 24), 2.0**-16 * (1 + np.abs(want)))
    assert np.all(conformance.tolerance(want, 16) > conformance.tolerance(want, 24))


def test_cli_json_counts():
    r = CliRunner().invoke(app, ["conformance", "--op", "Relu", "--op", "LeakyRelu", "--json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["passed"] == doc["total"] > 0 and set(doc["ops"]) == {"Relu", "LeakyRelu"}
