"""The integer primitives against Python's exact integers (an independent oracle): wrap-around,
round-half-up shifts and saturation at the int32/int64 edges, and the exp approximation's
stated error bound against float64."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from opmlc.ir import fixedpoint as fp

I32 = st.integers(fp.INT32_MIN, fp.INT32_MAX)
I64 = st.integers(-(1 << 63), (1 << 63) - 1)
EDGES32 = [fp.INT32_MIN, fp.INT32_MIN + 1, -(1 << 16), -3, -2, -1, 0, 1, 2, 3, 1 << 16, fp.INT32_MAX - 1, fp.INT32_MAX]


def wrap64(v: int) -> int:
    v &= (1 << 64) - 1
    return v - (1 << 64) if v >> 63 else v


def exact_shr_round(x: int, s: int) -> int:
    """floor((x + 2^(s-1)) / 2^s) with the addition wrapping in int64, as DESIGN specifies."""
    return x if s == 0 else wrap64(x + (1 << (s - 1))) >> s


@given(I64, st.integers(0, 62))
def test_shr_round_matches_exact_integer_formula(x, s):
    assert int(fp.shr_round(np.int64(x), s)) == exact_shr_round(x, s)


@pytest.mark.parametrize("x", EDGES32)
@pytest.mark.parametrize("s", [0, 1, 15, 16, 30, 31])
def test_shr_round_at_int32_edges_and_shifts_0_and_31(x, s):
    got = int(fp.shr_round(np.int64(x), s))
    assert got == exact_shr_round(x, s)
    if s:
        # round half up: the exact quotient x / 2^s, rounded to nearest with ties toward +inf
        assert got == math.floor(x / 2**s + 0.5)


def test_round_half_up_on_ties_goes_toward_positive_infinity():
    halves = np.array([-5, -3, -1, 1, 3, 5], dtype=np.int64)  # x / 2 = -2.5, -1.5, -0.5, 0.5, 1.5, 2.5
    assert fp.shr_round(halves, 1).tolist() == [-2, -1, 0, 1, 2, 3]


@given(I64)
def test_saturate32_clamps(x):
    assert int(fp.saturate32(np.int64(x))) == min(max(x, fp.INT32_MIN), fp.INT32_MAX)


@given(I64, I64)
def test_add64_and_mul64_wrap_like_int64(a, b):
    assert int(fp.add64(np.int64(a), np.int64(b))) == wrap64(a + b)
    assert int(fp.mul64(np.int64(a), np.int64(b))) == wrap64(a * b)


@given(I32, st.integers(0, 31))
def test_shl64_of_int32_is_exact(x, s):
    assert int(fp.shl64(np.int64(x), s)) == x << s


@given(st.floats(-40000, 40000, allow_nan=False), st.integers(0, 16))  # 2^15 · 2^16 saturates
def test_quantize_rounds_half_up_and_dequantize_is_its_inverse_on_the_grid(x, frac):
    q = int(fp.quantize(np.float64(x), frac))
    assert q == min(max(math.floor(x * 2**frac + 0.5), fp.INT32_MIN), fp.INT32_MAX)
    assert fp.dequantize(np.int32(q), frac) * 2**frac == q


def test_quantize_saturates_out_of_range_values():
    assert fp.quantize(np.array([1e12, -1e12]), 16).tolist() == [fp.INT32_MAX, fp.INT32_MIN]


def test_exp2_polynomial_meets_its_stated_bound():
    r = np.arange(0, 1 << 30, 4099, dtype=np.int64)
    got = fp.exp2_frac_q30(r) / 2.0**30
    want = np.exp2(r / 2.0**30)
    assert np.max(np.abs(got - want) / want) <= 1.2e-7
    assert int(fp.exp2_frac_q30(np.int64(0))) == 1 << 30  # 2^0 = 1 exactly


@pytest.mark.parametrize("frac", [0, 8, 16, 24, 30])
def test_exp_of_nonpositive_values_within_bound(frac):
    lo = max(-30.0, -(2.0**31) / 2**frac)
    d = np.unique(np.floor(np.linspace(lo, 0, 20001) * 2**frac).astype(np.int64))
    got = fp.exp_nonpositive_q30(d, frac) / 2.0**30
    want = np.exp(d / 2.0**frac)
    assert np.all(np.abs(got - want) <= 1.3e-7 * want + 2.0**-30)  # the docstring's bound
    assert int(fp.exp_nonpositive_q30(np.int64(0), frac)) == 1 << 30


def test_exp_of_the_most_negative_input_is_zero():
    assert int(fp.exp_nonpositive_q30(np.int64(-(1 << 32) + 1), 0)) == 0
