"""The one-row VNNI kernel of a constant weight (opmlc/backend/kernels/native/matvec16.py) against
the interpreter, bit for bit and count for count: alone (`ONLY`: a run it refused would leave
the output unwritten) on random shapes (K odd, short and long; N off multiples of 16; bias;
folded batch dimensions) for each weight plane width, at the edges of x's planes and the
weight's, split over threads; the other kernels behind it on inputs it refuses; its facts and
layout."""

from __future__ import annotations

import numpy as np
import pytest

from opmlc.backend.kernels.native import SPLIT_MIN_WORK, matmul, matvec16, node_facts, split_worth
from opmlc.ir import fixedpoint as fp
from tests.kernels.harness import const_matmul_graph, int_array, threads_equal_interpreter
from tests.kernels.test_kernels import check_all_backends

pytestmark = pytest.mark.skipif(not matvec16.has_vnni(), reason="the host has no AVX-512 VNNI")


@pytest.fixture
def only(monkeypatch):
    """The kernel alone, for any number of output columns."""
    monkeypatch.setattr(matvec16, "ONLY", True)
    monkeypatch.setattr(matvec16, "MIN_COLS", 1)


def _graph(x_shape, w, trans=True, bias=None, fracs=(20, 20, 16)):
    return const_matmul_graph("t_mv16", x_shape, w, trans, bias, fracs)


_ints = int_array


# weight bits → the high plane's width (module docstring): one plane, s8 high, s16 high
WIDTHS = {14: 0, 22: 1, 29: 2}


@pytest.mark.parametrize("wbits", sorted(WIDTHS))
def test_equals_interpreter_on_random_shapes(only, wbits):
    rng = np.random.default_rng(wbits)
    for k, n, batch, trans, xbits in [(9, 5, (), True, 12), (33, 17, (1,), False, 24), (11, 40, (), True, 26),
                                      (15, 130, (1, 1), True, 15), (801, 47, (), True, 20), (64, 32, (), False, 16)]:
        w = _ints(rng, wbits, (n, k) if trans else (k, n))
        w.flat[0] = (1 << wbits) - 1  # the weight's range reached: its plane width is the one named
        g = _graph((*batch, 1, k), w, trans, _ints(rng, 20, (n,)) if k % 2 else None)
        assert node_facts(g, 0).get("matvec") == WIDTHS[wbits]
        check_all_backends(g, [_ints(rng, xbits, (*batch, 1, k))], mips=False)


def test_edges(only):
    """x at the one-plane limit (2^15 − 1 and −2^15 one plane, 2^15 two) and at the two-plane
    limit (2^30 − 1, −2^30, with weights small enough: F ≥ MIN_FLUSH); weights ±(2^15 − 1) and
    −2^15 (one plane); the output saturating (frac 0: counts)."""
    rng = np.random.default_rng(3)
    for xs, ws in [([-(1 << 15), (1 << 15) - 1, 0], [(1 << 15) - 1, -(1 << 15) + 1, -(1 << 15)]),
                   ([1 << 15, -(1 << 15) - 1, 7], [-(1 << 15), (1 << 15) - 1]),
                   ([(1 << 30) - 1, -(1 << 30), 3], [-(1 << 12), (1 << 12) - 1, 1]),
                   ([(1 << 20) - 1, -(1 << 20)], [(1 << 22) - 1, -(1 << 22), 12345])]:
        k, n = 37, 21
        x = rng.choice(np.array(xs, np.int64), size=(1, k)).astype(np.int32)
        w = rng.choice(np.array(ws, np.int64), size=(n, k)).astype(np.int32)
        check_all_backends(_graph((1, k), w, fracs=(20, 20, 0)), [x], mips=False)


def test_every_product_at_its_bound(only):
    """One sign everywhere over a reduction many chunks long: each lane reaches the largest sum
    the bound allows (F·Δmax) before it is widened — one x plane (x = −2^15, w = −2^12: F = 7),
    two (x_l = −2^10 at e_x = 20, w = −2^14: F = 63), the high plane (w = −2^29: h = −2^15 at
    s = 14, l = 0; x = −2^10: F_h = 31)."""
    for xv, wv, f in [(-(1 << 15), -(1 << 12), 7), (-(1 << 19) - (1 << 10), -(1 << 14), 63),
                      (-(1 << 10), -(1 << 29), 31)]:
        k, n = 2 * f * 3 + 1, 18
        g = _graph((1, k), np.full((n, k), wv, np.int32), fracs=(20, 20, 30))
        check_all_backends(g, [np.full((1, k), xv, np.int32)], mips=False)


def test_refused_inputs_run_the_other_kernels():
    """x with int32 extremes (beyond both splits), or at 2^30 against weights of 2^15 (F < MIN_FLUSH):
    the i64 kernel, same bits."""
    rng = np.random.default_rng(5)
    w = _ints(rng, 20, (24, 40))
    x = _ints(rng, 20, (1, 40))
    x[0, :3] = [fp.INT32_MIN, fp.INT32_MAX, -1]
    check_all_backends(_graph((1, 40), w, bias=_ints(rng, 20, (24,)), fracs=(20, 20, 0)), [x], mips=False)
    w = rng.choice(np.array([-(1 << 15), (1 << 15) - 1]), size=(24, 40)).astype(np.int32)
    x = np.full((1, 40), (1 << 30) - 1, np.int32)
    check_all_backends(_graph((1, 40), w, fracs=(20, 20, 0)), [x], mips=False)
    w[0, :2] = [fp.INT32_MIN, fp.INT32_MAX]  # no planes: no facts, the i64 kernel
    g = _graph((1, 40), w, fracs=(20, 20, 0))
    assert node_facts(g, 0) == {}
    check_all_backends(g, [_ints(rng, 20, (1, 40))], mips=False)


def test_without_vnni_the_other_kernels(monkeypatch):
    monkeypatch.setattr(matvec16, "ENABLED", False)
    rng = np.random.default_rng(6)
    g = _graph((1, 1, 64), _ints(rng, 22, (40, 64)))
    assert node_facts(g, 0)["matvec"] == 1
    check_all_backends(g, [_ints(rng, 24, (1, 1, 64))], mips=False)


def test_split_over_threads_gives_the_same_bits(only):
    rng = np.random.default_rng(8)
    k = 1000
    n = max(SPLIT_MIN_WORK // k, 2 * matvec16.GRAIN) + 37  # both parts get tiles
    g = _graph((1, k), _ints(rng, 21, (n, k)), bias=_ints(rng, 20, (n,)), fracs=(20, 20, 22))
    assert split_worth(g, 0) and node_facts(g, 0)["matvec"] == 1
    x = [_ints(rng, 27, (1, k))]
    _, want_sat = threads_equal_interpreter(g, x)
    assert want_sat


def test_facts_and_layout(monkeypatch):
    monkeypatch.setattr(matvec16, "MIN_COLS", 1)
    assert matvec16.weight_facts(np.array([[-(1 << 15), (1 << 15) - 1]], np.int32)) == {"derived": True, "matvec": 0}
    w = np.array([[1 << 15, -3, 5], [-(1 << 21), (1 << 21) - 1, 0]], np.int32)
    facts = matvec16.weight_facts(w)
    assert facts == {"derived": True, "matvec": 1}
    buf = matvec16.derive(facts, w)
    assert buf.ctypes.data % 64 == 0
    s, width, wl, wh = buf[:16].view(np.int32)
    assert width == 1 and wl < 1 << (s - 1) + 1 and wh < 128
    k2, stride = 2, matvec16.C * 96
    tiles = buf[matvec16.HEADER:].reshape(k2, stride)
    low = tiles[:, :matvec16.C * 64].copy().view(np.int16).reshape(k2, matvec16.C * 16, 2)
    high = tiles[:, matvec16.C * 64:].copy().view(np.int8).reshape(k2, matvec16.C * 16, 2)
    got = (low.astype(np.int64) + (high.astype(np.int64) << int(s))).transpose(1, 0, 2).reshape(-1, 4)
    assert np.array_equal(got[:2, :3], w) and not got[2:].any() and not got[:, 3].any()
    assert np.abs(low).max() == wl and np.abs(high).max() == wh
    assert matvec16.weight_facts(np.array([[fp.INT32_MAX, fp.INT32_MIN]], np.int32)) == {}  # h is not s16
    with pytest.raises(ValueError, match="generated for"):
        matvec16.derive({"derived": True, "matvec": 0}, w)
    monkeypatch.setattr(matvec16, "MIN_COLS", 16)
    assert matvec16.weight_facts(np.ones((15, 8), np.int32)) == {}  # too few columns
    assert matvec16.weight_facts(np.ones((16, 8), np.int32))["matvec"] == 0


def test_matmul_facts_by_rows():
    """One row takes the matrix-vector planes (a weight of 2^15 in two); more rows keep theirs."""
    w = np.ones((64, 16), np.int32)
    assert "matvec" in node_facts(_graph((1, 16), w), 0)
    assert "matvec" not in node_facts(_graph((2, 16), w), 0)
    assert node_facts(_graph((1, 16), w * (1 << 15)), 0)["matvec"] == 1
    assert matmul.facts(_graph((3, 1, 16), w), 0).get("matvec") is None
