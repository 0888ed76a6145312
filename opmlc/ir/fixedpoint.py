"""Exact integer arithmetic of the fixed-point IR, in numpy (DESIGN "Fixed-point IR").

These are the building blocks of every op's interpreter semantics: int64 wrap-around
accumulation, rescaling by an arithmetic right shift with round-half-up, int32 saturation,
and the integer-only exp2 used by the nonlinear ops. The LLVM kernels implement the same
formulas; the interpreter (and so this module) is the golden model they are tested against.

Saturation is counted, never silent: inside `count_saturation()`, every element that
`saturate32` (hence `to_fx`) clamps, and every finite float that `quantize` clips, adds one to
the active counter; an op whose clamps do not map one to one onto its output elements counts
explicitly (`uncounted()` around the helper, `count_saturated(mask)` after). The LLVM kernels
count the same elements (opmlc/backend/kernels/_ir.py), natively only. Counting never changes a
result bit.

numpy's signed integer overflow is formally undefined in C, so wrapping operations are done on
uint64 views, where wrap-around is defined, and viewed back as int64.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

import numpy as np

from opmlc.ir.types import DType, TensorType

INT32_MIN = -(1 << 31)
INT32_MAX = (1 << 31) - 1
Q30 = 30
ONE_Q30 = 1 << Q30

# round(log2(e) · 2^30): turns a natural exponent into a base-2 one.
LOG2E_Q30 = 1549082005

# 2^x on [0, 1) as c0 + c1·x + … + c5·x^5 in Q30, c0 = 1 exactly so that 2^0 = 1 exactly.
# Fitted by weighted least squares on Chebyshev nodes; relative error ≤ 1.2e-7 over [0, 1)
# including the Q30 rounding of Horner's steps (tests/ir/test_fixedpoint.py re-measures it).
EXP2_Q30 = (1073741824, 744266799, 257862113, 59953372, 9635090, 2024323)


@dataclass
class SaturationCount:
    """How many elements were clamped (or clipped at quantization) while it was active."""

    n: int = 0


_counter: ContextVar[SaturationCount | None] = ContextVar("opmlc_saturation", default=None)


@contextmanager
def count_saturation() -> Iterator[SaturationCount]:
    """Count saturated elements of the code run inside; nested counters do not add to outer ones."""
    c = SaturationCount()
    token = _counter.set(c)
    try:
        yield c
    finally:
        _counter.reset(token)


@contextmanager
def uncounted() -> Iterator[None]:
    """Suspend counting: for helper calls whose clamps an op counts itself, elementwise."""
    token = _counter.set(None)
    try:
        yield
    finally:
        _counter.reset(token)


def counting() -> bool:
    return _counter.get() is not None


def count_saturated(mask: np.ndarray | bool) -> None:
    """Add the number of true elements of `mask` to the active counter, if any."""
    c = _counter.get()
    if c is not None:
        c.n += int(np.count_nonzero(mask))


def as_i64(x: np.ndarray | int) -> np.ndarray:
    return np.asarray(x, dtype=np.int64)


def add64(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a + b with int64 wrap-around."""
    return (as_i64(a).view(np.uint64) + as_i64(b).view(np.uint64)).view(np.int64)


def mul64(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a · b with int64 wrap-around (the low 64 bits of the product)."""
    a, b = np.broadcast_arrays(as_i64(a), as_i64(b))
    return (a.astype(np.uint64) * b.astype(np.uint64)).view(np.int64)


def shl64(x: np.ndarray, s: int) -> np.ndarray:
    """x << s with int64 wrap-around, 0 ≤ s ≤ 63."""
    assert 0 <= s <= 63
    return (as_i64(x).view(np.uint64) << np.uint64(s)).view(np.int64)


def shr_round(x: np.ndarray, s: int | np.ndarray) -> np.ndarray:
    """Arithmetic right shift by s with round-half-up: (x + 2^(s-1)) >> s, in wrapping int64.

    s = 0 leaves x unchanged. s may be an array (per element), each in 0..62.
    """
    x = as_i64(x)
    s = np.asarray(s, dtype=np.int64)
    if np.any(s < 0) or np.any(s > 62):
        raise ValueError("shift amounts must be in 0..62")
    half = np.where(s > 0, np.left_shift(np.int64(1), np.maximum(s - 1, 0)), 0).astype(np.int64)
    return np.right_shift(add64(x, half), s)


def saturate32(x: np.ndarray) -> np.ndarray:
    """Clamp int64 to the int32 range (each clamped element counts as saturated)."""
    x = as_i64(x)
    if counting():
        count_saturated((x < INT32_MIN) | (x > INT32_MAX))
    return np.clip(x, INT32_MIN, INT32_MAX).astype(np.int32)


def rescale(x: np.ndarray, from_frac: int, to_frac: int) -> np.ndarray:
    """Change the fractional bits of int64 values: exact left shift or rounded right shift."""
    if to_frac >= from_frac:
        return shl64(x, to_frac - from_frac)
    return shr_round(x, from_frac - to_frac)


def quantize(x: np.ndarray, frac: int) -> np.ndarray:
    """Float → fx32 at the edge of the graph: round half up, saturate.

    A finite value that clips counts as saturated; ±inf saturates by design (an attention
    mask's −inf) and does not count."""
    xf = np.asarray(x, dtype=np.float64)
    # in place from here, one temporary (the API's per-call cost); a 0-d input's product is a
    # numpy scalar, made an array for the in-place steps and a scalar again at the end
    scaled = np.asarray(xf * float(1 << frac))
    scaled += 0.5
    np.floor(scaled, out=scaled)
    # the exact count only when something lies out of range (min/max: two cheap passes)
    if counting() and scaled.size and not (scaled.min() >= INT32_MIN and scaled.max() <= INT32_MAX):
        count_saturated(np.isfinite(xf) & ((scaled < INT32_MIN) | (scaled > INT32_MAX)))
    np.clip(scaled, INT32_MIN, INT32_MAX, out=scaled)
    out = scaled.astype(np.int32)
    return out if xf.ndim else out[()]


def dequantize(q: np.ndarray, frac: int) -> np.ndarray:
    """fx32 → float64 at the edge of the graph (exact)."""
    return np.asarray(q, dtype=np.float64) / (1 << frac)


def f32_bits(x: np.ndarray) -> np.ndarray:
    """Float → f32 at the edge of the graph: the IEEE-754 binary32 bit patterns, as int32
    (a float64 is first rounded to the nearest float32, as a float32 model input is)."""
    return np.asarray(x, dtype=np.float32).view(np.int32)


def encode(x: np.ndarray, t: TensorType) -> np.ndarray:
    """An input array → the value a graph input of type `t` holds: fx32 quantized with its
    bits, f32 as float32 bits, integers and bools cast."""
    if t.dtype is DType.FX32:
        return quantize(x, t.frac)
    if t.dtype is DType.F32:
        return f32_bits(x)
    return np.asarray(x).astype(t.dtype.numpy)


def f32_key(bits: np.ndarray) -> np.ndarray:
    """The order-preserving key of float32 bit patterns (int64 of the int32 bits): the bits for
    a positive sign, minus the magnitude bits for a negative one. For floats that are not NaN,
    key(a) OP key(b) ⟺ a OP b for every comparison, −0 and +0 sharing the key 0; a NaN's key
    lies beyond ±inf's."""
    b = as_i64(bits)
    return np.where(b < 0, -(b & 0x7FFFFFFF), b)


def exp2_frac_q30(r: np.ndarray) -> np.ndarray:
    """2^(r / 2^30) · 2^30 for r in [0, 2^30), by Horner's rule in Q30. Result in [2^30, 2^31)."""
    p = np.full(np.shape(r), EXP2_Q30[-1], dtype=np.int64)
    for c in EXP2_Q30[-2::-1]:
        p = add64(shr_round(mul64(p, r), Q30), c)
    return p


def exp_nonpositive_q30(d: np.ndarray, frac: int) -> np.ndarray:
    """e^(d / 2^frac) · 2^30 for int64 d ≤ 0 (|d| < 2^32), frac ≤ 30. Result in [0, 2^30].

    t = d·log2(e) is formed in Q30 whatever `frac` is (|t| < 2^63 since |d·LOG2E_Q30| < 2^63),
    split as t = k + r with integer k ≤ 0 and r in [0, 1), and e^x = 2^k · 2^r. The final shift
    by -k is clamped at 32, beyond which any value below 2^31 rounds to 0 anyway, so no shift
    amount reaches the bit width.

    Error bound: |result/2^30 - e^x| ≤ 1.3e-7 · e^x + 2^-30 (the polynomial's 1.2e-7, the Q30
    rounding of t and of Horner's steps, and the final rounding shift).
    """
    t = shr_round(mul64(d, LOG2E_Q30), frac)
    k = np.right_shift(t, Q30)  # floor
    p = exp2_frac_q30(t - np.left_shift(k, Q30))
    return shr_round(p, np.minimum(-k, 32))


# -- helpers of the CNN / conformance op set (binary, unary, cast, reduce, pool, …) -----------

def to_fx(x: np.ndarray, from_frac: int, to_frac: int) -> np.ndarray:
    """int64 values with `from_frac` bits → int32 with `to_frac` bits, exactly rounded, saturated.

    A right shift rounds half up (shr_round); a left shift (at most 30) is exact, with operands
    first clamped to ±2^32 (anything beyond saturates anyway), so it never wraps.
    """
    return saturate32(_to_fx_wide(x, from_frac, to_frac))


def _to_fx_wide(x: np.ndarray, from_frac: int, to_frac: int) -> np.ndarray:
    """to_fx before its final saturation (int64)."""
    x = as_i64(x)
    if to_frac >= from_frac:
        s = to_frac - from_frac
        assert s <= 30
        return np.left_shift(np.clip(x, -(1 << 32), 1 << 32), s)
    return shr_round(x, from_frac - to_frac)


def to_fx_flagged(x: np.ndarray, from_frac: int, to_frac: int) -> tuple[np.ndarray, np.ndarray]:
    """to_fx, uncounted, and the mask of the elements it saturated (for ops that count a
    selection of them, such as `where`)."""
    wide = _to_fx_wide(x, from_frac, to_frac)
    with uncounted():
        return saturate32(wide), (wide < INT32_MIN) | (wide > INT32_MAX)


def floor_div(n: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Floor quotient and remainder (0 ≤ r < d) of int64 n by int64 d > 0."""
    n, d = np.broadcast_arrays(as_i64(n), as_i64(d))
    q = np.floor_divide(n, d)
    return q, n - q * d


def round_div(n: np.ndarray, d: np.ndarray) -> np.ndarray:
    """n / d rounded half up, for int64 n and 0 < d < 2^62: floor(n/d) + (2r ≥ d)."""
    q, r = floor_div(n, d)
    return q + (r >= as_i64(d) - r)


def trunc_frac(x: np.ndarray, frac: int) -> np.ndarray:
    """The integer part of x / 2^frac, rounded toward zero (C's float → int conversion)."""
    x = as_i64(x)
    return np.where(x < 0, -np.right_shift(-x, frac), np.right_shift(x, frac))


def isqrt64(n: np.ndarray) -> np.ndarray:
    """floor(sqrt(n)) for int64 n ≥ 0, by the bit-by-bit method (32 fixed steps)."""
    n = as_i64(n).astype(np.uint64)
    res = np.zeros_like(n)
    bit = np.uint64(1 << 62)
    for _ in range(32):
        cand = res + bit
        take = n >= cand
        n = np.where(take, n - cand, n)
        res = np.where(take, (res >> np.uint64(1)) + bit, res >> np.uint64(1))
        bit >>= np.uint64(2)
    return res.astype(np.int64)
