"""The row-lane VNNI qmatmul (kernels/native/qmatmul_rows.py: 8-bit weights, M ≥ 8) against the
interpreter, bit for bit and count for count: every plane count at the edges of its range and
one past them (where the run-time check switches), int32 extremes, weights −128/127, zero
points, blocks, partial row groups and ragged column tiles, 1 and 2 threads."""

from __future__ import annotations

import numpy as np
import pytest

from opmlc.backend.kernels.native import (
    SPLIT_MIN_WORK,
    node_facts,
    qmatmul_rows,
    qmatmul_vnni,
    split_worth,
)
from opmlc.backend.native import NativeSession, native_program
from opmlc.ir import fixedpoint as fp
from opmlc.ir.graph import GraphBuilder
from opmlc.ir.interpreter import run_graph
from opmlc.ir.types import DType, TensorType
from tests.kernels.test_kernels import fx, rand_fx

pytestmark = pytest.mark.skipif(not qmatmul_vnni.has_vnni(), reason="this host's CPU has no AVX-512 VNNI")


def _graph(rng, x_shape, n, bs, zp, bias, given=()):
    """Weights with whole rows of −128 and of 127 and the extremes scattered; scales from ±1 to
    ±2^16 across the columns, so some columns stay in range (their bits above the rounding shift
    of 16 are compared) and others saturate (their counts are compared), and the int32 extremes
    as the last column's scales (its correction E_P wraps around). `given`: operands ("w",
    "b") that are graph inputs after x, not initializers (no derived buffer, or no bias in it)."""
    k = x_shape[-1]
    nb = -(-k // bs)
    q = rng.integers(-128, 128, (n, k)).astype(np.int8)
    q[0], q[1 % n] = -128, 127
    q[2 % n, ::3] = -128
    s = (rng.choice([-1, 1], (n, nb)) * (1 << rng.integers(0, 17, (n, nb)))).astype(np.int32)
    if n > 3:
        s[-1] = np.resize(np.array([fp.INT32_MIN, fp.INT32_MAX], np.int32), nb)
    g = GraphBuilder("t_qmatmul_rows")
    refs = [g.add_input("x", fx(x_shape, 12))]
    consts = {}

    def operand(name, value, t):
        if name in given:
            consts[name] = value
            return g.add_input(name, t)
        return g.add_initializer(name, value, t)

    refs += [operand("w", q, TensorType(DType.I8, (n, k))), g.add_initializer("w/scale", s, fx((n, nb), 20))]
    if zp:
        z = rng.integers(-128, 128, (n, nb)).astype(np.int8)
        z[0, 0], z[-1, -1] = -128, 127
        refs.append(g.add_initializer("w/zp", z, TensorType(DType.I8, (n, nb))))
    if bias:
        refs.append(operand("b", rand_fx(rng, (n,), 1 << 24), fx((n,), 28)))
    g.mark_output(g.add_node("qmatmul", refs, {"block_size": bs, "frac": 16}, "y"))
    graph = g.build()
    graph.given = [consts[name] for name in given]  # the other inputs' values, in order
    return graph


def _inputs(rng, shape):
    """Per plane count P < 4: values in [−2^(8P−1), 2^(8P−1)) with both ends present; the same
    with as many elements past the range as the kernel lists (outliers: P planes and the list),
    the ends' neighbours and the int32 extremes among them; and one more (P + 1 planes). Then
    any int32 (P = 4) and all INT32_MIN."""
    m, k = int(np.prod(shape[:-1])), shape[-1]
    limit = qmatmul_rows._outliers(m, k)
    out = []
    for p in (2, 3):
        lo, hi = -(1 << (8 * p - 1)), (1 << (8 * p - 1)) - 1
        x = rng.integers(lo, hi, shape, endpoint=True).astype(np.int32)
        x.flat[0], x.flat[-1], x.flat[x.size // 2] = lo, hi, 0
        out.append(x)
        for count in (limit, limit + 1):
            y = x.copy()
            pool = np.array([lo - 1, hi + 1, fp.INT32_MIN, fp.INT32_MAX, 1 << 30], np.int64)
            y.flat[rng.choice(x.size, count, replace=False)] = pool[np.arange(count) % len(pool)]
            out.append(y)
    out.append(rand_fx(rng, shape))
    out.append(np.full(shape, fp.INT32_MIN, np.int32))
    return out


def _check(g, xs, threads=(1,), rows=True):
    """Bits and counts against the interpreter; `rows`: the node runs qmatmul_rows (its facts
    ask for the derived buffer, which the session's table holds), else another kernel."""
    assert qmatmul_rows.accepts(g.input_types(g.nodes[0]), g.nodes[0].attrs, g.values[g.nodes[0].output].type)
    assert bool(node_facts(g, 0).get("derived")) is rows
    session = NativeSession(native_program(g), g)
    assert len(session.table.derived) == int(rows)
    given = getattr(g, "given", [])
    in_range = 0
    for x in xs:
        want_sat: dict[int, int] = {}
        want = run_graph(g, [x, *given], saturated=want_sat)[g.outputs[0]]
        in_range += int(np.sum(np.abs(want.astype(np.int64)) < fp.INT32_MAX))
        for t in threads:
            sat: dict[int, int] = {}
            (got,) = session.run([x, *given], saturated=sat, threads=t)
            assert np.array_equal(got, want), f"max |x| {np.abs(x.astype(np.int64)).max()}, {t} threads"
            assert sat == want_sat
    assert in_range > 0


RCASES = [  # x shape, N, block, zero point, bias
    ((32, 512), 30, 512, False, True),     # per channel: one row group, full tiles and ragged columns
    ((1, 20, 67), 13, 67, True, True),     # a partial row group, K = 4·16 + 3 (masked quad and chunk)
    ((2, 24, 200), 7, 64, True, False),    # blocks of 64, the last one of 8; three row groups
    ((17, 130), 25, 128, False, True),     # blocks of 128, the last of 2 (a masked quad); 16 + 1 rows
]


@pytest.mark.parametrize("x_shape,n,bs,zp,bias", RCASES)
def test_row_lane_qmatmul_equals_interpreter_at_every_plane_count(x_shape, n, bs, zp, bias):
    rng = np.random.default_rng(sum(x_shape) + n + bs)
    g = _graph(rng, x_shape, n, bs, zp, bias)
    _check(g, _inputs(rng, x_shape))


def test_row_lane_qmatmul_split_over_threads():
    """Parts of output columns (N a multiple of neither the tile nor the threads): the bits and
    counts of one thread, at each plane count."""
    rng = np.random.default_rng(29)
    m, k = 32, 260
    n = SPLIT_MIN_WORK // (m * k) + 7
    g = _graph(rng, (m, k), n, k, True, True)
    assert split_worth(g, 0)
    _check(g, [_inputs(rng, (m, k))[i] for i in (1, 4, 6)], threads=(1, 2))  # outliers at P = 2, 3; P = 4


def test_row_lane_qmatmul_takes_only_its_shapes(monkeypatch):
    """Fewer than 8 rows, 4-bit weights, blocks that are not whole 64-byte chunks, or the VNNI
    kernels switched off: the other kernels."""
    rng = np.random.default_rng(3)
    taken = []
    for shape, dtype, bs in [((8, 64), DType.I8, 64), ((7, 64), DType.I8, 64), ((16, 64), DType.I8, 32),
                             ((16, 64), DType.I4, 64)]:
        g = _graph(rng, shape, 4, bs, False, False) if dtype is DType.I8 else None
        types = g.input_types(g.nodes[0]) if g else [fx(shape, 12), TensorType(dtype, (4, 64)), fx((4, 1), 20)]
        taken.append(qmatmul_rows.accepts(types, {"block_size": bs, "frac": 16}, fx((16, 4), 16)))
    assert taken == [True, False, False, False]
    g = _graph(rng, (16, 64), 4, 64, False, False)
    monkeypatch.setattr(qmatmul_vnni, "ENABLED", False)
    assert not qmatmul_rows.accepts(g.input_types(g.nodes[0]), g.nodes[0].attrs, g.values[g.nodes[0].output].type)


def test_row_lane_qmatmul_derived_buffer():
    """E_P (qmatmul_rows.derive) is the weights' offset correction and the bias, wrapped as the
    op's i64 ring: checked against Python integers for one column of extremes."""
    q = np.full((2, 128), -128, np.int8)
    q[1, ::2] = 127
    s = np.array([[fp.INT32_MIN, fp.INT32_MAX], [fp.INT32_MAX, -1]], np.int32)
    bias = np.array([fp.INT32_MIN, 5], np.int32)
    e = qmatmul_rows.derive({"derived": True, "block": 64, "bias_shift": 3}, [None, q, s, bias])
    assert e.dtype == np.int64 and e.shape == (3, 2) and e.flags.c_contiguous
    for j in range(2):
        qs = [int(q[j, b * 64:(b + 1) * 64].astype(np.int64).sum()) for b in range(2)]
        c = sum(int(s[j, b]) * qs[b] for b in range(2))
        for row, p in enumerate(qmatmul_rows.PLANES):
            want = ((int(bias[j]) << 3) - (c << (8 * p - 1))) % (1 << 64)
            assert int(e[row, j]) % (1 << 64) == want


@pytest.mark.parametrize("given,threads", [(("b",), (1, 2)), (("w",), (1, 2)), (("w", "b"), (1,))])
def test_row_lane_qmatmul_without_constant_operands(given, threads):
    """A bias that is a graph input: the derived buffer without it (the finish adds it). A weight
    that is one: no derived buffer, so qmatmul_vnni's kernel (which takes every shape
    qmatmul_rows does: K = 67 too), split over threads as well."""
    rng = np.random.default_rng(41)
    for x_shape, n, bs in (((32, 128), 40, 128), ((1, 20, 67), 13, 67), ((32, 67), 500, 67)):
        g = _graph(rng, x_shape, n, bs, True, True, given)
        if "w" not in given:
            assert "bias_shift" not in node_facts(g, 0)
        _check(g, [_inputs(rng, x_shape)[i] for i in (0, 4, 6)], threads, rows="w" not in given)
