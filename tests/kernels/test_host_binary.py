"""The host module's binary kernel against the interpreter, bit for bit and count for count:
an fx add whose output takes the smaller operand fraction in i32 lanes (binary._add_rescaled_i32:
x + shr_round(z, k)), for k = 1..30 in either operand order, on int32 extremes and their
neighbours against every value (saturation both ways), and the coalesced loop nests
(binary.coalesce) of broadcasts with size-1 dimensions."""

from __future__ import annotations

import numpy as np
import pytest

from opmlc.backend.kernels.binary import coalesce
from opmlc.ir.graph import GraphBuilder
from opmlc.ir.types import DType, TensorType
from tests.kernels.harness import interp_and_native

EDGES = np.array([-(2**31), -(2**31) + 1, -(2**30) - 1, -(2**30), -3, -2, -1, 0, 1, 2, 3, 2**30 - 1, 2**30,
                  2**31 - 2, 2**31 - 1], dtype=np.int64)


def add_graph(sa, fa, sb, fb, fo):
    b = GraphBuilder("add")
    x, y = b.add_input("a", TensorType(DType.FX32, sa, fa)), b.add_input("b", TensorType(DType.FX32, sb, fb))
    b.mark_output(b.add_node("binary", [x, y], {"kind": "add", "frac": fo}))
    return b.build()


@pytest.mark.parametrize("k", [1, 2, 5, 13, 29, 30])
@pytest.mark.parametrize("low_first", [True, False])
def test_add_into_the_smaller_fraction(k, low_first):
    fl, fh = 0, k
    n = EDGES.size
    rng = np.random.default_rng(k)
    lo = np.repeat(EDGES, n)  # every edge against every edge
    hi = np.tile(EDGES, n)
    lo = np.concatenate([lo, rng.integers(-(2**31), 2**31, 300)]).astype(np.int32)
    hi = np.concatenate([hi, rng.integers(-(2**31), 2**31, 300)]).astype(np.int32)
    args = [((lo.size,), fl), ((hi.size,), fh)]
    xs = [lo, hi]
    if not low_first:
        args, xs = args[::-1], xs[::-1]
    g = add_graph(args[0][0], args[0][1], args[1][0], args[1][1], fl)
    out = interp_and_native(g, xs)  # also compares the saturation counts
    assert out.saturated, "the edges saturate both ways"
    np.testing.assert_array_equal(out.native[g.outputs[0]], out.values[g.outputs[0]])


@pytest.mark.parametrize("sa,sb", [((1, 4, 1, 16), (4, 32, 16)), ((64,), (1, 32, 64)), ((1, 1), (3, 1, 5)),
                                   ((2, 1, 3, 1), (1, 4, 1, 7)), ((), (1, 1, 9))])
def test_coalesced_broadcasts(sa, sb):
    rng = np.random.default_rng(len(sa) * 10 + len(sb))
    for fa, fb, fo in ((20, 24, 20), (24, 24, 24), (16, 21, 12)):
        g = add_graph(sa, fa, sb, fb, fo)
        xs = [rng.integers(-(2**31), 2**31, s).astype(np.int32) for s in (sa, sb)]
        out = interp_and_native(g, xs)
        np.testing.assert_array_equal(out.native[g.outputs[0]], out.values[g.outputs[0]])


def test_coalesce_merges_only_what_every_operand_allows():
    assert coalesce((1, 4, 32, 16), [[0, 0, 16, 1], [2048, 512, 16, 1]]) == ((4, 512), [[0, 1], [512, 1]])
    assert coalesce((32, 64), [[0, 1], [64, 1]]) == ((32, 64), [[0, 1], [64, 1]])
    assert coalesce((1, 1), [[0, 0]]) == ((), [[]])


def div_graph(n, fa, fb, fo):
    b = GraphBuilder("div")
    x = b.add_input("a", TensorType(DType.FX32, (n,), fa))
    w = b.add_input("d", TensorType(DType.FX32, (), fb))  # an input: one program for every divisor
    b.mark_output(b.add_node("binary", [x, w], {"kind": "div", "frac": fo}))
    return b.build()


@pytest.mark.parametrize("fa,fb,fo", [(17, 28, 17), (20, 28, 22), (30, 0, 10), (24, 24, 24), (8, 28, 0), (10, 0, 10)])
def test_division_by_a_scalar_in_double_lanes(fa, fb, fo):
    """native/divide.py: exact ties (y = ±2^29, ±3·2^29: every odd a is a tie at s = 28), quotients
    around ±2^31 (saturation), large quotients up to the fast test's 2^50 (small divisors), and
    random numerators, against the interpreter with its counts; vectors and a scalar tail. Both
    vector loops: divisors that keep every quotient in int32 (no clamp) and those that do not,
    on both sides of the bound (s = 0: d = ±1 takes the clamp, −2^31 / −1 saturating; ±2 not).
    Powers of two (±1, ±2, 2^5 … 2^31, the divisor 1.0 among them) take the shifts: left when
    2^e divides 2^s, a rounding right shift past it, none when they are equal."""
    from opmlc.ir.ops.binary import div_shift

    s = div_shift(fa, fb, fo)
    rng = np.random.default_rng(s + 40)
    a = np.concatenate([EDGES, np.arange(-40, 41), (1 << 30) + np.arange(-3, 4), -(1 << 30) + np.arange(-3, 4),
                        rng.integers(-(2**31), 2**31, 200)])
    a = a[(a >= -(2**31)) & (a < 2**31)].astype(np.int32)
    small = 1 << max(s - 19, 0)
    g = div_graph(a.size, fa, fb, fo)
    for d in (1 << 29, -(1 << 29), 3 << 29, (1 << 29) + 1, small, small + 1, -small - 3, 12345, 2**31 - 1, -(2**31), 7,
              0, 1, -1, 2, -2, 1 << 30, -(1 << 30), 1 << 13, -(1 << 5), 1 << fb, 1 << min(max(s, 0), 30)):
        out = interp_and_native(g, [a, np.array(d, dtype=np.int32)])
        np.testing.assert_array_equal(out.native[g.outputs[0]], out.values[g.outputs[0]])
