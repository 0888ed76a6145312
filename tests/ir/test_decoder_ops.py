"""The decoder ops' semantics against independent oracles: math.erf and float64 layer/RMS
normalisation within the bounds their modules state, numpy.take for gather."""

from __future__ import annotations

import math

import numpy as np
import pytest

from opmlc.ir import fixedpoint as fp
from opmlc.ir.ops.norm import eps_units, shift_bits
from opmlc.ir.types import DType, TensorType
from tests.ir.test_cnn_ops import evaluate, fx, grid


@pytest.mark.parametrize("f,fo", [(16, 16), (24, 24), (8, 30), (30, 20), (0, 16)])
def test_erf_within_its_stated_bound(f, fo):
    lim = min(8.0, 2.0 ** (31 - f) - 1)
    q = grid(f, -lim, lim)
    got, _ = evaluate("unary", [q], [fx(q.shape, f)], {"kind": "erf", "frac": fo})
    want = np.array([math.erf(v) for v in (q / 2.0**f).tolist()])
    err = np.max(np.abs(got / 2.0**fo - want))
    assert err <= 3.5e-7 + 2.0 ** -(fo + 1), err


def test_erf_is_odd_and_saturates_to_one():
    q = fp.quantize(np.array([-1e4, -6.5, -1.0, 0.0, 1.0, 6.5, 1e4]), 16)
    got, _ = evaluate("unary", [q], [fx(q.shape, 16)], {"kind": "erf", "frac": 30})
    nonzero = [0, 1, 2, 4, 5, 6]
    assert np.array_equal(got[nonzero], -got[::-1][nonzero])
    assert got[-1] == got[-2] == 1 << 30 and abs(int(got[3])) <= 1  # erf(0) within 2^-30


def norm_reference(x, g, b, kind, eps):
    x = x.astype(np.float64)
    c = x - x.mean(-1, keepdims=True) if kind == "layer" else x
    sigma2 = (c * c).mean(-1, keepdims=True) + eps
    z = c / np.sqrt(sigma2)
    return z * g + (0 if b is None else b), z, sigma2


@pytest.mark.parametrize("kind", ["layer", "rms"])
@pytest.mark.parametrize("n,f,fo,spread", [(64, 16, 16, 3.0), (64, 16, 24, 0.05), (768, 20, 16, 1.0), (4, 12, 20, 100.0)])
def test_norm_within_its_stated_bound(kind, n, f, fo, spread):
    rng = np.random.default_rng(n + f + fo)
    eps = 1e-5
    xq = fp.quantize(rng.normal(0.3, spread, (50, n)), f)
    gq = fp.quantize(rng.normal(1.0, 0.5, n), 14)
    bq = fp.quantize(rng.normal(0.0, 0.5, n), 16)
    attrs = {"kind": kind, "eps": eps_units(eps, f, n), "frac": fo}
    got, _ = evaluate("norm", [xq, gq, bq], [fx(xq.shape, f), fx((n,), 14), fx((n,), 16)], attrs)
    x, g, b = xq / 2.0**f, gq / 2.0**14, bq / 2.0**16
    want, z, sigma2 = norm_reference(x, g, b, kind, eps)
    r = shift_bits(n)
    bound = np.abs(g) * (np.abs(z) * (2.0**-29 + 2.0 ** (r - 2 * f) / sigma2) + 2.0**-25
                         + (2.0 ** -(f + 1) / np.sqrt(sigma2) if kind == "layer" else 0)) + 2.0 ** -(fo + 1)
    err = np.abs(got / 2.0**fo - want)
    assert np.all(err <= bound), float(np.max(err / bound))


def test_norm_of_a_constant_row_is_the_bias():
    n = 8
    xq = np.full((1, n), 12345, dtype=np.int32)
    gq = np.full(n, 1 << 16, dtype=np.int32)
    bq = np.arange(n, dtype=np.int32) << 16
    got, _ = evaluate("norm", [xq, gq, bq], [fx((1, n), 16), fx((n,), 16), fx((n,), 16)],
                      {"kind": "layer", "eps": 0, "frac": 16})
    assert np.array_equal(got[0], bq)


def test_gather_matches_take_and_zeroes_out_of_range_indices():
    rng = np.random.default_rng(3)
    data = rng.integers(-100, 100, (4, 6, 2)).astype(np.int32)
    idx = np.array([[0, -1, 5], [6, -7, 2]], dtype=np.int64)
    t = [fx(data.shape, 8), TensorType(DType.I64, idx.shape)]
    got, out = evaluate("gather", [data, idx], t, {"axis": 1})
    assert out.shape == (4, 2, 3, 2) and out.frac == 8
    ok = (idx >= -6) & (idx < 6)
    want = np.take(data, np.where(ok, idx, 0), axis=1) * ok[None, :, :, None]
    assert np.array_equal(got, want)
