"""The decoder ops' LLVM kernels (gather with run-time indices, norm, unary erf) against their
interpreter semantics, bit for bit, natively and as a MIPS ELF in the VM and in unicorn: random
and int32-edge values, out-of-range indices, extreme variances."""

from __future__ import annotations

import numpy as np
import pytest

from opmlc.ir import fixedpoint as fp
from opmlc.ir.ops.norm import eps_units
from opmlc.ir.types import DType, TensorType
from tests.kernels.test_cnn_kernels import fx, graph_of
from tests.kernels.test_kernels import check_all_backends


def test_gather_runtime_indices_in_and_out_of_range():
    rng = np.random.default_rng(20)
    ins = [fx((5, 3), 16), TensorType(DType.I64, (2, 4)), TensorType(DType.I32, (3,)),
           TensorType(DType.BOOL, (2, 5)), TensorType(DType.I64, (4, 2, 3))]
    nodes = [("gather", [0, 1], {"axis": 0}), ("gather", [0, 2], {"axis": 1}),
             ("gather", [3, 2], {"axis": 1}), ("gather", [4, 1], {"axis": 1}),
             ("gather", [4, 2], {"axis": 2})]
    g, x = graph_of("gathers", ins, nodes, rng)
    x[1][:] = [[0, 4, -1, -5], [5, -6, 1 << 40, -(1 << 63)]]  # ends, negatives, out of range
    x[2][:] = [2, -3, 3]
    out = check_all_backends(g, x)
    want = np.take(x[0], [0, 4, 4, 0], axis=0)
    assert np.array_equal(out.values[g.outputs[0]][0], want)
    assert not out.values[g.outputs[0]][1].any()  # 5, −6, 2^40, −2^63 are all out of range
    assert not out.values[g.outputs[1]][:, 2].any()  # index 3 of 3 columns: zeros


@pytest.mark.parametrize("f,fo,scale", [(16, 16, 1 << 20), (24, 20, None), (8, 30, 1 << 9), (0, 12, 7)])
def test_unary_erf(f, fo, scale):
    rng = np.random.default_rng(f + fo + 1)
    g, x = graph_of("erf", [fx((5, 7), f)], [("unary", [0], {"kind": "erf", "frac": fo})], rng, scales=[scale])
    check_all_backends(g, x)


@pytest.mark.parametrize("kind", ["layer", "rms"])
@pytest.mark.parametrize("n,f,scale", [(64, 16, 1 << 18), (5, 20, None), (3, 4, 3), (1, 16, 1 << 10)])
def test_norm(kind, n, f, scale):
    rng = np.random.default_rng(n + f)
    ins = [fx((2, 3, n), f), fx((n,), 14), fx((n,), 16)]
    attrs = {"kind": kind, "eps": eps_units(1e-5, f, n), "frac": 16}
    nodes = [("norm", [0, 1, 2], attrs), ("norm", [0, 1], {**attrs, "frac": 30, "eps": 0})]
    g, x = graph_of("norm", ins, nodes, rng, scales=[scale, 1 << 15, 1 << 17])
    x[0][0, 0, :] = fp.INT32_MAX  # a constant row: zero variance
    x[0][0, 1, :] = fp.INT32_MIN
    x[0][1, 2, :] = np.where(np.arange(n) % 2, fp.INT32_MIN, fp.INT32_MAX)  # the largest variance
    check_all_backends(g, x)
