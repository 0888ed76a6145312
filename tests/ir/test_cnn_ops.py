"""The CNN / conformance ops' semantics against independent oracles: float64 with the stated
error bounds for the nonlinear kinds (sigmoid, tanh, exp, sqrt), Python integers and numpy's
float reference for the exact ones (division, rounding, conv, pool, reduce, view)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from opmlc.ir import fixedpoint as fp
from opmlc.ir.ops import get_op
from opmlc.ir.types import DType, TensorType


def fx(shape, frac):
    return TensorType(DType.FX32, tuple(shape), frac)


def evaluate(op, args, types, attrs):
    out = get_op(op).infer(types, attrs)
    return get_op(op).evaluate(args, types, attrs, out), out


def grid(frac, lo, hi, n=20001):
    return fp.quantize(np.linspace(lo, hi, n), frac)


@pytest.mark.parametrize("f,fo", [(16, 16), (24, 24), (8, 30), (30, 12)])
def test_sigmoid_and_tanh_within_their_stated_bounds(f, fo):
    lim = min(30.0, 2.0 ** (31 - f) - 1)
    q = grid(f, -lim, lim)
    x = q / 2.0**f
    got, _ = evaluate("unary", [q], [fx(q.shape, f)], {"kind": "sigmoid", "frac": fo})
    assert np.max(np.abs(got / 2.0**fo - 1 / (1 + np.exp(-x)))) <= 1.5e-7 + 2.0 ** -(fo + 1)
    got, _ = evaluate("unary", [q], [fx(q.shape, f)], {"kind": "tanh", "frac": fo})
    assert np.max(np.abs(got / 2.0**fo - np.tanh(x))) <= 3e-7 + 2.0 ** -(fo + 1)


@pytest.mark.parametrize("f,fo", [(16, 16), (24, 20), (20, 8)])
def test_exp_within_its_stated_bound_and_saturates_above_the_range(f, fo):
    top = math.log(2.0 ** (31 - fo)) - 0.01
    q = grid(f, -20, top)
    got, _ = evaluate("unary", [q], [fx(q.shape, f)], {"kind": "exp", "frac": fo})
    want = np.exp(q / 2.0**f)
    assert np.all(np.abs(got / 2.0**fo - want) <= 2e-7 * want + 2.0 ** -(fo + 1))
    big = fp.quantize(np.array([top + 1.0]), f)
    assert evaluate("unary", [big], [fx((1,), f)], {"kind": "exp", "frac": fo})[0][0] == fp.INT32_MAX


@pytest.mark.parametrize("f,fo", [(16, 16), (0, 15), (24, 27), (30, 30)])
def test_sqrt_is_exactly_rounded(f, fo):
    rng = np.random.default_rng(f)
    q = np.concatenate([rng.integers(0, fp.INT32_MAX, 2000), [0, 1, 2, 3, fp.INT32_MAX]]).astype(np.int32)
    got, _ = evaluate("unary", [q], [fx(q.shape, f)], {"kind": "sqrt", "frac": fo})
    for v, g in zip(q[:300].tolist() + q[-5:].tolist(), got[:300].tolist() + got[-5:].tolist(), strict=True):
        n = v << (2 * fo - f)
        r = math.isqrt(n)
        assert g == min(r + (n - r * r > r), fp.INT32_MAX)
    assert np.max(np.abs(got / 2.0**fo - np.sqrt(q / 2.0**f))) <= 2.0 ** -(fo + 1) + 1e-12


@pytest.mark.parametrize("f,fo", [(16, 24), (24, 24), (0, 26), (30, 30), (8, 16)])
def test_log_within_its_stated_bound_and_minus_inf_at_zero(f, fo):
    rng = np.random.default_rng(f + fo)
    q = np.concatenate([rng.integers(1, fp.INT32_MAX, 20000), np.arange(1, 3000),
                        2 ** np.arange(1, 31) - 1, 2 ** np.arange(31), [fp.INT32_MAX]]).astype(np.int32)
    got, _ = evaluate("unary", [q], [fx(q.shape, f)], {"kind": "log", "frac": fo})
    want = np.log(q / 2.0**f)
    fits = np.abs(want) < 2.0 ** (31 - fo) - 1  # beyond, the result saturates
    assert np.max(np.abs(got / 2.0**fo - want)[fits]) <= 5e-9 + 2.0 ** -(fo + 1)
    bad = np.array([0, -1, fp.INT32_MIN], dtype=np.int32)
    assert np.all(evaluate("unary", [bad], [fx((3,), f)], {"kind": "log", "frac": fo})[0] == fp.INT32_MIN)


def test_fx_division_rounds_half_up_and_saturates_division_by_zero():
    a = np.array([7, -7, 5, -5, 1, -1, 0, 3], np.int32)
    b = np.array([2, 2, -2, -2, 0, 0, 0, 3], np.int32)
    got, _ = evaluate("binary", [a, b], [fx((8,), 0), fx((8,), 0)], {"kind": "div", "frac": 0})
    assert got.tolist() == [4, -3, -2, 3, fp.INT32_MAX, fp.INT32_MIN, 0, 1]


def test_int_division_truncates_and_mod_follows_the_divisor_sign():
    a = np.array([7, -7, 7, -7, fp.INT32_MIN, 5], np.int32)
    b = np.array([2, 2, -2, -2, -1, 0], np.int32)
    t = TensorType(DType.I32, (6,))
    assert evaluate("binary", [a, b], [t, t], {"kind": "div"})[0].tolist() == [3, -3, -3, 3, fp.INT32_MIN, 0]
    assert evaluate("binary", [a, b], [t, t], {"kind": "mod"})[0].tolist() == [1, 1, -1, -1, 0, 0]
    assert evaluate("binary", [a, b], [t, t], {"kind": "fmod"})[0].tolist() == [1, -1, 1, -1, 0, 0]


def test_round_is_half_to_even_floor_and_ceil_exact():
    x = fp.quantize(np.array([-2.5, -1.5, -0.5, 0.5, 1.5, 2.5, 1.25, -1.25]), 4)
    for kind, fn in (("round", np.round), ("floor", np.floor), ("ceil", np.ceil)):
        got, _ = evaluate("unary", [x], [fx(x.shape, 4)], {"kind": kind, "frac": 4})
        assert np.array_equal(got / 16.0, fn(x / 16.0)), kind


def test_conv_equals_exact_integer_convolution():
    rng = np.random.default_rng(0)
    x = rng.integers(-1000, 1000, (1, 2, 5, 5)).astype(np.int32)
    w = rng.integers(-1000, 1000, (4, 1, 3, 3)).astype(np.int32)
    attrs = {"strides": [2, 1], "pads": [1, 0, 1, 2], "dilations": [1, 2], "group": 2, "frac": 0}
    got, out = evaluate("conv", [x, w], [fx(x.shape, 0), fx(w.shape, 0)], attrs)
    xp = np.pad(x.astype(np.int64), ((0, 0), (0, 0), (1, 1), (0, 2)))
    for m in range(4):
        c = m // 2
        for i in range(out.shape[2]):
            for j in range(out.shape[3]):
                patch = xp[0, c, 2 * i:2 * i + 3, j:j + 5:2]
                assert got[0, m, i, j] == int((patch * w[m, 0]).sum())


def test_average_pool_divides_by_the_inside_count_with_rounding():
    x = np.arange(1, 10, dtype=np.int32).reshape(1, 1, 3, 3)
    attrs = {"kind": "avg", "kernel": [2, 2], "strides": [2, 2], "dilations": [1, 1], "pads": [0, 0, 1, 1],
             "ceil_mode": 0, "count_include_pad": 0}
    got, _ = evaluate("pool", [x], [fx(x.shape, 0)], attrs)
    assert got.ravel().tolist() == [3, 5, 8, 9]  # (1+2+4+5)/4=3, (3+6)/2=4.5→5, (7+8)/2=7.5→8, 9


def test_average_pool_counting_the_padding_stops_at_the_padded_edge():
    # ceil_mode: the last window [3, 5] reaches past the end padding (input 0..3, padded −1..4):
    # ONNX divides by the positions inside the padded input (2), not by the kernel's size
    x = np.array([4, 8, 12, 16], dtype=np.int32).reshape(1, 1, 4)
    attrs = {"kind": "avg", "kernel": [3], "strides": [2], "dilations": [1], "pads": [1, 1],
             "ceil_mode": 1, "count_include_pad": 1}
    got, _ = evaluate("pool", [x], [fx(x.shape, 0)], attrs)
    assert got.ravel().tolist() == [4, 12, 8]  # (0+4+8)/3, (8+12+16)/3, (16+0)/2


def test_reduce_and_view_against_numpy():
    rng = np.random.default_rng(1)
    x = rng.integers(-1000, 1000, (2, 3, 4)).astype(np.int32)
    got, _ = evaluate("reduce", [x], [fx(x.shape, 0)], {"kind": "sum", "axes": [0, 2], "keepdims": 0, "frac": 0})
    assert np.array_equal(got, x.sum(axis=(0, 2)))
    got, _ = evaluate("reduce", [x], [fx(x.shape, 0)], {"kind": "argmin", "axes": [1], "keepdims": 0})
    assert np.array_equal(got, x.argmin(axis=1))
    got, _ = evaluate("view", [x], [fx(x.shape, 0)], {"shape": [4, 3, 2], "offset": 0, "strides": [1, 4, 12]})
    assert np.array_equal(got, x.transpose(2, 1, 0))
