"""The attention's activation × activation matmul host kernel (kernels/native/matmul_act.py)
against the interpreter, bit for bit and count for count: batched shapes whose rows and
8-column vectors leave remainders for the 1-row and 1-vector tiles, int32 extremes (sums that
wrap in i64 and outputs that saturate), rounding shifts from 0 up, and a node large enough to
be split into parts (batch matrices), on 1 and 2 threads. The i64 tiles alone here (the s16-plane
path in front of them on a VNNI host is tests/kernels/test_host_matmul_act16.py's)."""

from __future__ import annotations

import numpy as np
import pytest

from opmlc.backend.kernels.native import matmul_act, matmul_act16, split_worth
from opmlc.ir.graph import GraphBuilder
from opmlc.ir.types import DType, TensorType
from tests.kernels.harness import interp_and_native, threads_equal_interpreter
from tests.kernels.test_kernels import rand_fx


@pytest.fixture(autouse=True)
def i64_tiles_alone(monkeypatch):
    monkeypatch.setattr(matmul_act16, "ENABLED", False)


def act_graph(batch, m, k, n, fa, fb, fo):
    b = GraphBuilder("act")
    x = b.add_input("a", TensorType(DType.FX32, (*batch, m, k), fa))
    y = b.add_input("b", TensorType(DType.FX32, (*batch, k, n), fb))
    b.mark_output(b.add_node("matmul", [x, y], {"frac": fo}))
    return b.build()


@pytest.mark.parametrize("batch,m,k,n,fa,fb,fo", [
    ((1, 4), 32, 16, 32, 24, 24, 19),  # tiny_llama's Q·Kᵀ
    ((1, 4), 32, 32, 16, 24, 24, 21),  # P·V
    ((2, 3), 7, 9, 40, 20, 24, 20),  # leftover rows (7 mod 4) and vectors (5 mod 4)
    ((3,), 5, 8, 8, 10, 10, 20),  # one vector, shift 0
    ((2,), 9, 33, 24, 30, 30, 0),  # shift 60
])
def test_act_matmul_equals_the_interpreter(batch, m, k, n, fa, fb, fo):
    g = act_graph(batch, m, k, n, fa, fb, fo)
    types = g.input_types(g.nodes[0])
    assert matmul_act.takes(types, g.nodes[0].attrs, g.values[g.outputs[0]].type)
    rng = np.random.default_rng(m * k + n)
    for scale in (None, 1 << 20):  # int32 extremes (wrapping sums, saturation), then small values
        a = rand_fx(rng, (*batch, m, k), scale)
        w = rand_fx(rng, (*batch, k, n), scale)
        out = interp_and_native(g, [a, w])  # also compares the saturation counts
        np.testing.assert_array_equal(out.native[g.outputs[0]], out.values[g.outputs[0]])


def test_act_matmul_split_into_batch_parts_on_1_and_2_threads():
    g = act_graph((1, 9), 64, 32, 64, 24, 24, 21)
    assert split_worth(g, 0)
    rng = np.random.default_rng(2)
    a, w = rand_fx(rng, (1, 9, 64, 32)), rand_fx(rng, (1, 9, 32, 64), 1 << 26)
    _, sat_want = threads_equal_interpreter(g, [a, w])
    assert sat_want[0] > 0
