"""Saturation counting, op by op: the ops whose clamps do not map one to one onto output
elements (div by zero, exp above range, where's unchosen operand, prod's intermediate steps)
count exactly the documented elements, natively as in the interpreter; and the counters exist
only in the native module, never in the MIPS program's."""

from __future__ import annotations

import numpy as np

from opmlc.backend.codegen import SATURATION_MARKER, generate_module
from opmlc.ir import fixedpoint as fp
from opmlc.ir.graph import GraphBuilder
from opmlc.ir.types import DType, TensorType
from tests.kernels.test_kernels import check_all_backends


def fx(shape, frac):
    return TensorType(DType.FX32, tuple(shape), frac)


def q(values, frac):
    return fp.quantize(np.asarray(values, dtype=np.float64), frac)


def saturating_graph():
    """One graph, one node per special case; the expected count of each node alongside."""
    b = GraphBuilder("saturation")
    a8 = b.add_input("a8", fx((6,), 8))
    b8 = b.add_input("b8", fx((6,), 8))
    c = b.add_input("c", TensorType(DType.BOOL, (6,)))
    num = b.add_input("num", fx((4,), 16))
    den = b.add_input("den", fx((4,), 16))
    e = b.add_input("e", fx((3,), 16))
    p = b.add_input("p", fx((2, 4), 16))
    nodes = [
        # chosen: a 1000 (saturates at 30 bits), b 1, a 1, b 3000 (sat), a 0, b −3000 (sat)
        (b.add_node("where", [c, a8, b8], {"frac": 30}), 3),
        # 1/0 and −1/0 are ±inf; 0/0 is not counted; 30000 / 2^-16 leaves int32
        (b.add_node("binary", [num, den], {"kind": "div", "frac": 16}), 3),
        # e^30 > 2^15: saturates; e^0, e^-5 do not
        (b.add_node("unary", [e], {"kind": "exp", "frac": 16}), 1),
        # row 0: 256·256 saturates, twice more, yet the element counts once; row 1: 2^4 exact
        (b.add_node("reduce", [p], {"kind": "prod", "axes": [1], "keepdims": False, "frac": 16}), 1),
        # the same sum saturates once per output element: row 0 (4 · 2^14 · 2^16 > 2^31)
        (b.add_node("reduce", [p], {"kind": "sum", "axes": [1], "keepdims": False, "frac": 16}), 1),
    ]
    for ref, _ in nodes:
        b.mark_output(ref)
    inputs = [
        q([1000, -1000, 1, 1000, 0, 5], 8),
        q([1, 1, 3000, 3000, 0, -3000], 8),
        np.array([True, False, True, False, True, False]),
        q([1, -1, 0, 30000], 16),
        q([0, 0, 0, 2.0**-16], 16),
        q([30, 0, -5], 16),
        np.array([[1 << 30, 1 << 30, 1 << 30, 1], [2 << 16, 2 << 16, 2 << 16, 2 << 16]], dtype=np.int32),
    ]
    return b.build(), inputs, [n for _, n in nodes]


def test_special_ops_count_the_documented_elements_on_every_backend():
    graph, inputs, expected = saturating_graph()
    out = check_all_backends(graph, inputs)  # bits on native, VM and unicorn; counts native == interp
    assert out.saturated == {k: n for k, n in enumerate(expected)}


def test_quantize_counts_clipped_finite_values_but_not_infinities():
    with fp.count_saturation() as c:
        fp.quantize(np.array([1e10, -1e10, 1.0, np.inf, -np.inf]), 16)
    assert c.n == 2
    with fp.count_saturation() as c:
        fp.quantize(np.array([32767.0, -32768.0]), 16)  # the extremes themselves fit
    assert c.n == 0


def test_counters_exist_only_in_the_native_module():
    graph, _, _ = saturating_graph()
    plain = generate_module(graph)
    counted = generate_module(graph, count_saturation=True)
    assert SATURATION_MARKER not in plain and "saturated" not in plain
    assert SATURATION_MARKER in counted
    assert generate_module(graph) == plain  # generating a counting module leaves no state behind


def test_norm_counts_its_z_clamp_once_per_element():
    """rms norm of a row of n = 20000 holding one spike: its normalised value sqrt(n) ≈ 141 is
    clamped to 128 (the guard that never acts for n ≤ 16384); scale 1 keeps the output in range."""
    n = 20000
    b = GraphBuilder("norm_clamp")
    x = b.add_input("x", fx((2, n), 16))
    g_ = b.add_input("g", fx((n,), 16))
    b.mark_output(b.add_node("norm", [x, g_], {"kind": "rms", "eps": 0, "frac": 16}))
    data = np.zeros((2, n), dtype=np.int32)
    data[0, 0] = 1 << 16  # the spike
    data[1, :] = np.where(np.arange(n) % 2, 1, -1) << 16  # all ±1: normalised ±1, no clamp
    out = check_all_backends(b.build(), [data, np.full(n, 1 << 16, dtype=np.int32)], mips=False)
    assert out.saturated == {0: 1}
