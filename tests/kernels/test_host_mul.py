"""The host module's fx32 multiply (kernels/native/mul.py) against the interpreter, bit for bit and
count for count: right shifts k = 1 … 60 (fractions are at most 30), int32 extremes and their neighbours
against every value (saturation both ways), broadcasts (scalars either side, bias rows, rows
that the loop nest cannot merge), rows with a scalar tail, the nodes it refuses (a left shift,
rows under 16 elements) keeping the portable kernel, and a node large enough to be split, on 1
and 2 threads."""

from __future__ import annotations

import numpy as np
import pytest

from opmlc.backend.kernels.native import host_kernel_for, split_worth
from opmlc.backend.native import NativeSession, native_program
from opmlc.ir.graph import GraphBuilder
from opmlc.ir.types import DType, TensorType
from tests.kernels.harness import interp_and_native

EDGES = np.array([-(2**31), -(2**31) + 1, -(2**30) - 1, -(2**30), -(2**15), -3, -2, -1, 0, 1, 2, 3, 2**15,
                  2**30 - 1, 2**30, 2**31 - 2, 2**31 - 1], dtype=np.int64)


def mul_graph(sa, fa, sb, fb, fo):
    b = GraphBuilder("mul")
    x, y = b.add_input("a", TensorType(DType.FX32, sa, fa)), b.add_input("b", TensorType(DType.FX32, sb, fb))
    b.mark_output(b.add_node("binary", [x, y], {"kind": "mul", "frac": fo}))
    return b.build()


def check(g, xs, host=True, threads=()):
    assert (host_kernel_for(g, 0) is not None) == host
    out = interp_and_native(g, xs)  # also compares the saturation counts
    np.testing.assert_array_equal(out.native[g.outputs[0]], out.values[g.outputs[0]])
    for t in threads:
        (got,) = NativeSession(native_program(g), g, threads=t).run(xs)
        np.testing.assert_array_equal(got, out.values[g.outputs[0]])
    return out


@pytest.mark.parametrize("fa,fb,fo", [(0, 1, 0), (24, 24, 24), (24, 28, 24), (30, 30, 28), (30, 30, 0),
                                      (16, 16, 0), (24, 24, 23)])
def test_every_edge_against_every_edge(fa, fb, fo):
    rng = np.random.default_rng(fa * 64 + fb + fo)
    n = EDGES.size
    a = np.concatenate([np.repeat(EDGES, n), rng.integers(-(2**31), 2**31, 301)]).astype(np.int32)
    y = np.concatenate([np.tile(EDGES, n), rng.integers(-(2**31), 2**31, 301)]).astype(np.int32)
    k = fa + fb - fo
    if k <= 31:  # ties of the rounding shift: odd multiples of 2^(k−1) (times 1)
        odd = 2 * rng.integers(-(2**(31 - k)), 2**(31 - k), 64) + 1
        a = np.concatenate([a, (odd << (k - 1)).astype(np.int32)])
        y = np.concatenate([y, np.ones(64, np.int32)])
    out = check(mul_graph(a.shape, fa, y.shape, fb, fo), [a, y])
    if k <= 30:
        assert out.saturated, "the edges saturate"


@pytest.mark.parametrize("sa,sb", [((1, 4, 32, 16), (32, 16)), ((1, 32, 256), ()), ((), (3, 50)),
                                   ((64,), (1, 32, 64)), ((2, 1, 3, 17), (1, 4, 1, 17)), ((20, 1), (1, 37)),
                                   ((3, 33), (3, 33))])
def test_broadcasts_and_tails(sa, sb):
    rng = np.random.default_rng(len(sa) * 10 + len(sb))
    xs = [rng.integers(-(2**31), 2**31, s).astype(np.int32) for s in (sa, sb)]
    xs[int(np.prod(sa) < np.prod(sb))].reshape(-1)[:3] = [2**31 - 1, -(2**31), 0]  # saturating lanes
    check(mul_graph(sa, 24, sb, 24, 20), xs)
    check(mul_graph(sa, 20, sb, 28, 24), [x >> 8 for x in xs])


@pytest.mark.parametrize("sa,sb,fo", [((5, 3), (5, 3), 10), ((40,), (40,), 20), ((40,), (40,), 27)])
def test_refused_nodes_keep_the_portable_kernel(sa, sb, fo):
    """Rows of 15; fo = fa + fb (no shift) and fo > fa + fb (a left shift)."""
    rng = np.random.default_rng(fo)
    xs = [rng.integers(-(2**20), 2**20, s).astype(np.int32) for s in (sa, sb)]
    check(mul_graph(sa, 10, sb, 10, fo), xs, host=False)


def test_split_node_on_one_and_two_threads():
    shape = (1 << 10, 1 << 10)
    g = mul_graph(shape, 24, (shape[1],), 24, 24)
    assert split_worth(g, 0)
    rng = np.random.default_rng(5)
    xs = [rng.integers(-(2**31), 2**31, s).astype(np.int32) for s in (shape, shape[1:])]
    check(g, xs, threads=(1, 2))
