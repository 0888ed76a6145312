"""Each IR op's semantics against an independent oracle: Python's exact integers for the
integer-exact ops (matmul, add, relu, reshape), float64 with the stated bound for softmax."""

from __future__ import annotations

import math

import numpy as np
import pytest

from opmlc.ir import fixedpoint as fp
from opmlc.ir.ops import get_op
from opmlc.ir.types import DType, TensorType


def fx(shape, frac):
    return TensorType(DType.FX32, tuple(shape), frac)


def exact_round_shift(x: int, s: int) -> int:
    if s == 0:
        return x
    v = (x + (1 << (s - 1))) & ((1 << 64) - 1)
    v = v - (1 << 64) if v >> 63 else v
    return v >> s


def sat(x: int) -> int:
    return max(fp.INT32_MIN, min(fp.INT32_MAX, x))


def wrap64(v: int) -> int:
    v &= (1 << 64) - 1
    return v - (1 << 64) if v >> 63 else v


def evaluate(op, args, types, attrs):
    out = get_op(op).infer(types, attrs)
    return get_op(op).evaluate(args, types, attrs, out), out


@pytest.mark.parametrize("fa,fb,fc,fo", [(16, 16, 16, 16), (8, 20, 4, 10), (0, 0, 0, 0), (30, 30, 30, 0)])
def test_matmul_equals_exact_integer_dot_products(fa, fb, fc, fo):
    rng = np.random.default_rng(fa * 100 + fo)
    a = rng.integers(fp.INT32_MIN, fp.INT32_MAX, size=(3, 5), endpoint=True, dtype=np.int64).astype(np.int32)
    b = rng.integers(fp.INT32_MIN, fp.INT32_MAX, size=(5, 4), endpoint=True, dtype=np.int64).astype(np.int32)
    c = rng.integers(fp.INT32_MIN, fp.INT32_MAX, size=(4,), endpoint=True, dtype=np.int64).astype(np.int32)
    a[0, :] = fp.INT32_MIN  # extreme products: the int64 sum wraps
    b[:, 0] = fp.INT32_MIN
    got, _ = evaluate("matmul", [a, b, c], [fx(a.shape, fa), fx(b.shape, fb), fx(c.shape, fc)], {"frac": fo})
    for i in range(3):
        for j in range(4):
            acc = wrap64(sum(int(a[i, k]) * int(b[k, j]) for k in range(5)) + (int(c[j]) << (fa + fb - fc)))
            assert got[i, j] == sat(exact_round_shift(acc, fa + fb - fo))


def test_matmul_broadcasts_batch_dimensions():
    rng = np.random.default_rng(1)
    a = rng.integers(-1000, 1000, size=(2, 3, 4)).astype(np.int32)
    b = rng.integers(-1000, 1000, size=(4, 5)).astype(np.int32)
    got, out = evaluate("matmul", [a, b], [fx(a.shape, 4), fx(b.shape, 4)], {"frac": 4})
    assert out.shape == (2, 3, 5)
    want = (a.astype(np.int64) @ b.astype(np.int64) + 8) >> 4
    assert np.array_equal(got, want)


@pytest.mark.parametrize("fa,fb,fo", [(16, 16, 16), (10, 20, 16), (20, 10, 30), (30, 0, 5)])
def test_add_aligns_rounds_and_saturates(fa, fb, fo):
    vals = np.array([fp.INT32_MIN, -7, -1, 0, 1, 7, fp.INT32_MAX], dtype=np.int32)
    a, b = np.meshgrid(vals, vals)
    got, _ = evaluate("binary", [a, b], [fx(a.shape, fa), fx(b.shape, fb)], {"kind": "add", "frac": fo})
    top = max(fa, fb)
    for x, y, g in zip(a.ravel(), b.ravel(), got.ravel(), strict=True):
        total = (int(x) << (top - fa)) + (int(y) << (top - fb))
        want = total << (fo - top) if fo >= top else exact_round_shift(total, top - fo)
        assert g == sat(want)


def test_add_broadcasts():
    got, out = evaluate("binary", [np.ones((2, 3), np.int32), np.arange(3, dtype=np.int32)],
                        [fx((2, 3), 0), fx((3,), 0)], {"kind": "add", "frac": 0})
    assert out.shape == (2, 3) and got.tolist() == [[1, 2, 3], [1, 2, 3]]


def test_relu_and_reshape():
    x = np.array([[fp.INT32_MIN, -1, 0, 1, fp.INT32_MAX, 5]], dtype=np.int32)
    got, _ = evaluate("relu", [x], [fx(x.shape, 3)], {})
    assert got.tolist() == [[0, 0, 0, 1, fp.INT32_MAX, 5]]
    got, out = evaluate("reshape", [x], [fx(x.shape, 3)], {"shape": [3, 2]})
    assert out == fx((3, 2), 3) and got.tolist() == [[fp.INT32_MIN, -1], [0, 1], [fp.INT32_MAX, 5]]


@pytest.mark.parametrize("frac,fo,n", [(16, 16, 10), (8, 30, 3), (24, 12, 64), (0, 16, 5)])
def test_softmax_within_its_stated_bound(frac, fo, n):
    rng = np.random.default_rng(frac + n)
    x = fp.quantize(rng.normal(0, 4, size=(50, n)), frac)
    x[0] = 0  # all equal
    x[1, 0] = fp.INT32_MAX  # one dominant element
    x[1, 1:] = fp.INT32_MIN
    got, _ = evaluate("softmax", [x], [fx(x.shape, frac)], {"frac": fo})
    xf = x / 2.0**frac
    e = np.exp(xf - xf.max(axis=1, keepdims=True))
    want = e / e.sum(axis=1, keepdims=True)
    bound = 2.0 ** -(fo + 1) + 3e-7 + n * 2.0**-30
    assert np.max(np.abs(got / 2.0**fo - want)) <= bound
    assert got[1, 0] == 1 << fo and not got[1, 1:].any()


def test_softmax_probabilities_sum_to_one_within_rounding():
    x = fp.quantize(np.random.default_rng(3).normal(size=(20, 7)), 16)
    got, _ = evaluate("softmax", [x], [fx(x.shape, 16)], {"frac": 16})
    assert np.all(np.abs(got.sum(axis=1) - (1 << 16)) <= 7)
    assert math.isclose(got.sum() / 2.0**16 / 20, 1.0, abs_tol=1e-4)
