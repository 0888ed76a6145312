"""binary: one elementwise two-operand op with broadcasting, selected by the attribute `kind`.

One op with a `kind` rather than a module per function: the kinds share their type rule, their
broadcasting and (in the kernel) their loop nest; only the scalar formula differs, and each
formula is written once below (and once in kernels/binary.py).

Operands have the same dtype (the frontend casts first). Kinds by dtype:

- fx32 → fx32 (attribute `frac`, the output's bits fo):
  - add, sub, max, min: both operands aligned to T = max(fa, fb) by exact left shifts in int64,
    combined exactly, then `to_fx(r, T, fo)` (round half up, saturate).
  - mul: `to_fx(a·b, fa + fb, fo)` (the int64 product is exact).
  - div: round-half-up of a·2^s / b with s = fo + fb − fa, required in −31..31: numerator
    a·2^max(s,0), denominator b·2^max(−s,0) (both exact in int64), sign moved to the
    numerator, then `round_div`, saturated. b = 0 gives INT32_MAX, INT32_MIN or 0 by the sign
    of a (the ±inf/NaN of float division, saturated).
    Saturation count: an element whose quotient left int32, or a ≠ 0 divided by 0 (±inf).
- fx32 → bool: eq, ne, lt, le, gt, ge on the aligned operands (exact).
- i32/i64 → same type: add, sub, mul (wrap around at the type's width), div (truncates toward
  zero; b = 0 gives 0; INT_MIN / −1 wraps to INT_MIN), mod (sign of the divisor, Python's %),
  fmod (sign of the dividend, C's %), both 0 for b = 0; max, min; bitand, bitor, bitxor.
- i32/i64 → bool: eq, ne, lt, le, gt, ge.
- bool → bool: and, or, xor, eq, ne.
"""

from __future__ import annotations

import numpy as np

from opmlc.ir import fixedpoint as fp
from opmlc.ir.ops import IRTypeError, Op, register
from opmlc.ir.ops._broadcast import broadcast_shape
from opmlc.ir.types import DType, TensorType

CMP = ("eq", "ne", "lt", "le", "gt", "ge")
FX_KINDS = ("add", "sub", "mul", "div", "max", "min")
INT_KINDS = ("add", "sub", "mul", "div", "mod", "fmod", "max", "min", "bitand", "bitor", "bitxor")
BOOL_KINDS = ("and", "or", "xor", "eq", "ne")


def compare(kind: str, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return {"eq": np.equal, "ne": np.not_equal, "lt": np.less, "le": np.less_equal,
            "gt": np.greater, "ge": np.greater_equal}[kind](x, y)


def div_shift(fa: int, fb: int, fo: int) -> int:
    return fo + fb - fa


@register
class Binary(Op):
    name = "binary"
    arity = (2, 2)

    def infer(self, inputs: list[TensorType], attrs: dict) -> TensorType:
        self.check_arity(inputs)
        a, b = inputs
        kind = attrs["kind"]
        if a.dtype is not b.dtype:
            raise IRTypeError(f"binary {kind} takes operands of one dtype, got {a} and {b}")
        shape = broadcast_shape(a.shape, b.shape)
        dt = a.dtype
        allowed = {DType.FX32: FX_KINDS + CMP, DType.I32: INT_KINDS + CMP, DType.I64: INT_KINDS + CMP,
                   DType.BOOL: BOOL_KINDS}[dt]
        if kind not in allowed:
            raise IRTypeError(f"binary {kind} is not defined on {dt.value}")
        if kind in CMP or dt is DType.BOOL:
            return TensorType(DType.BOOL, shape)
        if dt is DType.FX32:
            fo = attrs["frac"]
            if kind == "div" and not -31 <= div_shift(a.frac, b.frac, fo) <= 31:
                raise IRTypeError(f"binary div: output bits {fo} out of range for {a} / {b}")
            return TensorType(DType.FX32, shape, fo)
        return TensorType(dt, shape)

    def evaluate(
        self, args: list[np.ndarray], types: list[TensorType], attrs: dict, out: TensorType
    ) -> np.ndarray:
        kind = attrs["kind"]
        dt = types[0].dtype
        a, b = np.broadcast_arrays(*args)
        if dt is DType.BOOL:
            a, b = a.astype(bool), b.astype(bool)
            fn = {"and": np.logical_and, "or": np.logical_or, "xor": np.logical_xor,
                  "eq": np.equal, "ne": np.not_equal}[kind]
            return fn(a, b)
        if dt is DType.FX32:
            return fx_binary(kind, a, b, types[0].frac, types[1].frac, out.frac)
        return int_binary(kind, a, b, dt)


def fx_binary(kind: str, a: np.ndarray, b: np.ndarray, fa: int, fb: int, fo: int) -> np.ndarray:
    a, b = fp.as_i64(a), fp.as_i64(b)
    if kind == "mul":
        return fp.to_fx(a * b, fa + fb, fo)
    if kind == "div":
        s = div_shift(fa, fb, fo)
        num = np.left_shift(a, max(s, 0))
        den = np.left_shift(b, max(-s, 0))
        num = np.where(den < 0, -num, num)
        den = np.abs(den)
        q = fp.round_div(num, np.where(den == 0, 1, den))
        inf = np.where(a > 0, fp.INT32_MAX, np.where(a < 0, fp.INT32_MIN, 0))
        with fp.uncounted():
            q32 = fp.saturate32(q)
        if fp.counting():
            fp.count_saturated(np.where(den == 0, a != 0, (q < fp.INT32_MIN) | (q > fp.INT32_MAX)))
        return np.where(den == 0, inf, q32).astype(np.int32)
    top = max(fa, fb)
    x, y = np.left_shift(a, top - fa), np.left_shift(b, top - fb)
    if kind in CMP:
        return compare(kind, x, y)
    r = {"add": np.add, "sub": np.subtract, "max": np.maximum, "min": np.minimum}[kind](x, y)
    return fp.to_fx(r, top, fo)


def int_binary(kind: str, a: np.ndarray, b: np.ndarray, dt: DType) -> np.ndarray:
    if kind in CMP:
        return compare(kind, a, b)
    a, b = fp.as_i64(a), fp.as_i64(b)
    ua, ub = a.view(np.uint64), b.view(np.uint64)
    if kind in ("add", "sub", "mul"):
        r = {"add": np.add, "sub": np.subtract, "mul": np.multiply}[kind](ua, ub).view(np.int64)
    elif kind in ("div", "mod", "fmod"):
        safe = np.where(b == 0, 1, b)
        width_min = fp.INT32_MIN if dt is DType.I32 else -(1 << 63)
        overflow = (a == width_min) & (b == -1)
        safe = np.where(overflow, 1, safe)
        q = np.floor_divide(a, safe)
        q = q + ((a - q * safe != 0) & ((a < 0) != (safe < 0)))  # truncating toward zero
        if kind == "div":
            r = np.where(overflow, a, q)
        else:
            rem = a - q * safe  # C remainder: sign of the dividend
            if kind == "mod":
                rem = np.where((rem != 0) & ((rem < 0) != (safe < 0)), rem + safe, rem)
            r = np.where(overflow, 0, rem)
        r = np.where(b == 0, 0, r)
    elif kind in ("max", "min"):
        r = np.maximum(a, b) if kind == "max" else np.minimum(a, b)
    else:
        r = {"bitand": np.bitwise_and, "bitor": np.bitwise_or, "bitxor": np.bitwise_xor}[kind](a, b)
    return r.astype(dt.numpy)
