"""The s16-plane path of the attention products (kernels/native/matmul_act16.py) against the
interpreter, bit for bit and count for count: each scheme alone (`ONLY`: a part the scheme
refuses is left unwritten, so equality shows the scheme ran) on the decoders' shapes and on
shapes with leftover rows, vectors and a split tail; planes at their extremes; operands no
scheme takes (int32 extremes: refused, then the i64 tiles); and a node whose parts choose
differently, on 1 and 2 threads."""

from __future__ import annotations

import numpy as np
import pytest

from opmlc.backend.kernels.native import matmul_act16
from opmlc.backend.native import native_program, run_native
from opmlc.ir.interpreter import run_graph
from tests.kernels.harness import interp_and_native, threads_equal_interpreter
from tests.kernels.test_host_matmul_act import act_graph
from tests.kernels.test_kernels import rand_fx

pytestmark = pytest.mark.skipif(not matmul_act16.available(), reason="the host has no AVX-512 VNNI")


@pytest.fixture
def only(monkeypatch):
    """The schemes alone (no i64 tiles behind them); `only(name)` forces one."""
    monkeypatch.setattr(matmul_act16, "ONLY", True)
    return lambda name: monkeypatch.setattr(matmul_act16, "FORCE", name)


def _same(g, a, w) -> bool:
    out = interp_and_native(g, [a, w])  # also compares the saturation counts
    return np.array_equal(out.native[g.outputs[0]], out.values[g.outputs[0]])


@pytest.mark.parametrize("scheme", ["B", "C"])
@pytest.mark.parametrize("batch,m,k,n,fo,ma,mb", [
    ((1, 4), 32, 16, 32, 24, 1 << 27, 1 << 26),  # tiny_gpt2's Q·Kᵀ magnitudes (fx 24)
    ((1, 4), 32, 32, 16, 24, 1 << 24, 1 << 26),  # P·V: P in [0, 2^24]
    ((2, 3), 7, 10, 48, 20, 1 << 20, 1 << 12),  # leftover rows and vectors, a split tail (70 mod 16)
    ((2,), 9, 34, 32, 0, 1 << 14, 1 << 15),  # shift 0: outputs that saturate
])
def test_each_scheme_alone_equals_the_interpreter(only, scheme, batch, m, k, n, fo, ma, mb):
    only(scheme)
    g = act_graph(batch, m, k, n, 24, 24, fo)
    rng = np.random.default_rng(m * k + n)
    a = rng.integers(-ma, ma, (*batch, m, k), endpoint=True).astype(np.int32)
    w = rng.integers(-mb, mb, (*batch, k, n), endpoint=True).astype(np.int32)
    a.flat[:2], w.flat[:2] = (-ma, ma), (mb, -mb)  # the bounds' maxima themselves
    assert _same(g, a, w)


@pytest.mark.parametrize("scheme", ["B", "C"])
def test_planes_at_their_extremes(only, scheme):
    """Every element where a plane reaches its bound: l = −2^(s−1) (v ≡ 2^(s−1) mod 2^s) and
    h = ±X_h, all of one sign so that the plane sums add up instead of cancelling."""
    only(scheme)
    g = act_graph((2,), 8, 16, 32, 24, 24, 24)
    rng = np.random.default_rng(3)
    for top in (1 << 22, (1 << 26) + (1 << 13), 92_000_000):
        pool = np.array([top, -top, (top >> 13 << 13) - (1 << 12), -(top >> 13 << 13) + (1 << 12), 1 << 12, -(1 << 12)])
        a = rng.choice(pool, (2, 8, 16)).astype(np.int32)
        w = rng.choice(pool, (2, 16, 32)).astype(np.int32)
        assert _same(g, a, w)
        assert _same(g, np.abs(a), np.abs(w))


def test_int32_extremes_are_refused_then_taken_by_the_i64_tiles(only, monkeypatch):
    g = act_graph((1, 4), 32, 16, 32, 24, 24, 19)
    rng = np.random.default_rng(5)
    a, w = rand_fx(rng, (1, 4, 32, 16)), rand_fx(rng, (1, 4, 16, 32))
    got = run_native(native_program(g), g, [a, w])[g.outputs[0]]  # the schemes alone: nothing written
    assert not np.array_equal(got, run_graph(g, [a, w])[g.outputs[0]])
    monkeypatch.setattr(matmul_act16, "ONLY", False)
    assert _same(g, a, w)


def test_parts_choose_their_own_path_on_1_and_2_threads():
    """Nine batch matrices: the first ones narrow (a scheme), the last with int32 extremes (the
    i64 tiles), so two parts take different paths and one part's choice covers all its own."""
    g = act_graph((1, 9), 64, 32, 64, 24, 24, 21)
    rng = np.random.default_rng(2)
    a = rng.integers(-(1 << 24), 1 << 24, (1, 9, 64, 32), endpoint=True).astype(np.int32)
    w = rng.integers(-(1 << 24), 1 << 24, (1, 9, 32, 64), endpoint=True).astype(np.int32)
    a[0, 6:], w[0, 6:] = rand_fx(rng, (3, 64, 32)), rand_fx(rng, (3, 32, 64), 1 << 30)
    _, sat = threads_equal_interpreter(g, [a, w])
    assert sat[0] > 0


def test_takes_only_layouts_that_fit():
    assert matmul_act16.takes(32, 16, 32) and matmul_act16.takes(32, 32, 16)
    assert not matmul_act16.takes(32, 15, 32)  # odd K: no k pairs within a row
    assert not matmul_act16.takes(32, 16, 40)  # N not a multiple of 16
    assert not matmul_act16.takes(4096, 64, 64)  # planes beyond the scratch
