"""unary: one elementwise one-operand op, selected by the attribute `kind`.

Like `binary`, one op with kinds: they share the type rule and the loop; each scalar formula is
written once here and once in kernels/unary.py. Kinds by dtype:

- fx32 → fx32 (attribute `frac`: the output's bits fo). Exact ones (then `to_fx` to fo):
  neg, abs, floor, ceil, round (half to even, ONNX's Round), sign.
  Nonlinear ones, integer-only, on the exact input value x = q / 2^f, error bounds against
  float64 (before saturation; tests/ir/test_cnn_ops.py measures them):
  - sigmoid: e = exp(−|x|) in Q30 (fixedpoint.exp_nonpositive_q30); σ(|x|) = 2^(30+fo) / (2^30 + e),
    σ(−|x|) = e·2^fo / (2^30 + e), each one rounded division.
    |y − σ(x)| ≤ 1.5e-7 + 2^−(fo+1).
  - tanh: e = exp(−2|x|) in Q30; tanh(|x|) = (2^30 − e)·2^fo / (2^30 + e) rounded, sign restored.
    |y − tanh(x)| ≤ 3e-7 + 2^−(fo+1).
  - exp: t = x·log2(e) in Q30, k = floor(t), 2^(t−k) by fixedpoint.exp2_frac_q30 in [2^30, 2^31),
    shifted by k + fo − 30 (round half up; saturates to INT32_MAX above the range).
    |y − e^x| ≤ 2e-7·e^x + 2^−(fo+1).
  - sqrt: n = q·2^(2fo−f) (0 ≤ 2fo − f ≤ 31 required), y = floor(sqrt(n) + 1/2) by the exact
    integer square root: |y − sqrt(x)| ≤ 2^−(fo+1) (exactly rounded). x < 0 gives 0.
  - erf (fo ≤ 30): Abramowitz–Stegun 7.1.26 in integers: a = min(|x|, 6) in Q26,
    t = 1/(1 + p·a) in Q30 (one rounded division), poly = t·(a1 + t·(a2 + … + t·a5)) by Horner
    in Q30, e = exp(−a²) by fixedpoint.exp_nonpositive_q30, erf(|x|) = 2^30 − poly·e in Q30,
    rounded to fo, sign restored. |y − erf(x)| ≤ 3.5e-7 + 2^−(fo+1) (the formula's 1.5e-7,
    exp's 1.3e-7 relative, Q30 roundings). Gelu lowers onto it (x/2 · (1 + erf(x/√2))).
  - log (natural, fo ≤ 30): for q > 0, k = bitlen(q) − 1 and m = q·2^(30−k) in [2^30, 2^31)
    (exact); m ≥ √2·2^30 moves to m/2 (k + 1), so v = m/2^30 lies in [√½, √2). With
    s = (v − 1)/(v + 1) in Q30 (one rounded division, |s| ≤ 0.1716), ln v = 2·atanh(s) =
    s·(2 + z·(2/3 + z·(2/5 + z·(2/7 + z·2/9)))) with z = s² (Horner in Q30; the series' tail
    is below 1e-9), and ln x = (k − f)·ln2 + ln v, rounded from Q30 to fo.
    |y − ln(x)| ≤ 5e-9 + 2^−(fo+1). q ≤ 0 (ln 0 = −inf, and NaN below) gives INT32_MIN.
    Log, LogSoftmax, the log reductions, Softplus, Pow and LRN lower onto it.
- i32/i64 → same type: neg, abs (wrap around: −INT_MIN = INT_MIN), sign, bitnot.
- bool → bool: not.
"""

from __future__ import annotations

import numpy as np

from opmlc.ir import fixedpoint as fp
from opmlc.ir.ops import IRTypeError, Op, register
from opmlc.ir.types import DType, TensorType

FX_KINDS = ("neg", "abs", "floor", "ceil", "round", "sign", "sigmoid", "tanh", "exp", "sqrt", "erf", "log")
# erf: Abramowitz–Stegun 7.1.26, p and a1..a5 in Q30; |x| beyond ERF_CLAMP gives ±1 in Q30.
ERF_P_Q30 = round(0.3275911 * 2**30)
ERF_A_Q30 = tuple(round(a * 2**30) for a in (0.254829592, -0.284496736, 1.421413741, -1.453152027, 1.061405429))
ERF_FRAC = 26
ERF_CLAMP = 6 << ERF_FRAC
INT_KINDS = ("neg", "abs", "sign", "bitnot")
# log: √2 in Q30 (where the mantissa moves to [√½, 1)), ln 2 in Q30, and 2/(2i+1) in Q30 for
# ln v = 2·atanh(s) = s·Σ 2/(2i+1)·s^(2i).
SQRT2_Q30 = round(2**0.5 * 2**30)
LN2_Q30 = round(0.6931471805599453 * 2**30)
LOG_SERIES_Q30 = tuple(round(2 / (2 * i + 1) * 2**30) for i in range(5))


@register
class Unary(Op):
    name = "unary"

    def infer(self, inputs: list[TensorType], attrs: dict) -> TensorType:
        self.check_arity(inputs)
        (x,) = inputs
        kind = attrs["kind"]
        allowed = {DType.FX32: FX_KINDS, DType.I32: INT_KINDS, DType.I64: INT_KINDS, DType.BOOL: ("not",)}
        if kind not in allowed[x.dtype]:
            raise IRTypeError(f"unary {kind} is not defined on {x.dtype.value}")
        if x.dtype is not DType.FX32:
            return x
        fo = attrs["frac"]
        if kind == "sqrt" and not 0 <= 2 * fo - x.frac <= 31:
            raise IRTypeError(f"unary sqrt: output bits {fo} out of range for {x}")
        if kind in ("erf", "log") and fo > fp.Q30:
            raise IRTypeError(f"unary {kind}: output bits {fo} above 30")
        return TensorType(DType.FX32, x.shape, fo)

    def evaluate(
        self, args: list[np.ndarray], types: list[TensorType], attrs: dict, out: TensorType
    ) -> np.ndarray:
        kind = attrs["kind"]
        (t,) = types
        if t.dtype is DType.BOOL:
            return np.logical_not(args[0])
        x = fp.as_i64(args[0])
        if t.dtype is not DType.FX32:
            u = x.view(np.uint64)
            r = {"neg": lambda: (np.uint64(0) - u).view(np.int64),
                 "abs": lambda: np.where(x < 0, (np.uint64(0) - u).view(np.int64), x),
                 "sign": lambda: np.sign(x),
                 "bitnot": lambda: np.invert(x)}[kind]()
            return r.astype(t.dtype.numpy)
        return fx_unary(kind, x, t.frac, out.frac)


def fx_unary(kind: str, x: np.ndarray, f: int, fo: int) -> np.ndarray:
    if kind == "neg":
        return fp.to_fx(-x, f, fo)
    if kind == "abs":
        return fp.to_fx(np.abs(x), f, fo)
    if kind == "sign":
        return fp.to_fx(np.sign(x), 0, fo)
    if kind == "floor":
        return fp.to_fx(np.right_shift(x, f), 0, fo)
    if kind == "ceil":
        return fp.to_fx(-np.right_shift(-x, f), 0, fo)
    if kind == "round":
        q = np.right_shift(x, f)
        if f:
            rem = x - np.left_shift(q, f)
            half = 1 << (f - 1)
            q = q + ((rem > half) | ((rem == half) & (q % 2 == 1)))
        return fp.to_fx(q, 0, fo)
    if kind == "sigmoid":
        e = fp.exp_nonpositive_q30(-np.abs(x), f)
        den = fp.ONE_Q30 + e
        pos = fp.round_div(np.int64(1) << (30 + fo), den)
        neg = fp.round_div(np.left_shift(e, fo), den)
        return fp.saturate32(np.where(x >= 0, pos, neg))
    if kind == "tanh":
        e = fp.exp_nonpositive_q30(-2 * np.abs(x), f)
        mag = fp.round_div(np.left_shift(fp.ONE_Q30 - e, fo), fp.ONE_Q30 + e)
        return fp.saturate32(np.where(x < 0, -mag, mag))
    if kind == "exp":
        return exp_fx(x, f, fo)
    if kind == "sqrt":
        n = np.left_shift(np.maximum(x, 0), 2 * fo - f)
        r = fp.isqrt64(n)
        return fp.saturate32(r + (n - r * r > r))
    if kind == "erf":
        return erf_fx(x, f, fo)
    if kind == "log":
        return log_fx(x, f, fo)
    raise AssertionError(kind)


def log_fx(x: np.ndarray, f: int, fo: int) -> np.ndarray:
    from opmlc.ir.ops.norm import bitlen64

    pos = x > 0
    q = np.where(pos, x, 1)
    k = bitlen64(q) - 1  # q < 2^31, so 0 ≤ k ≤ 30
    m = np.left_shift(q, 30 - k)
    big = m >= SQRT2_Q30
    k = k + big
    v2 = np.where(big, m, np.left_shift(m, 1))  # v in Q31: [√½, √2)·2^31
    s = fp.round_div(np.left_shift(v2 - (1 << 31), 30), v2 + (1 << 31))
    z = fp.shr_round(s * s, fp.Q30)
    p = np.full(np.shape(x), LOG_SERIES_Q30[-1], dtype=np.int64)
    for c in LOG_SERIES_Q30[-2::-1]:
        p = fp.shr_round(p * z, fp.Q30) + c
    y = (k - f) * LN2_Q30 + fp.shr_round(p * s, fp.Q30)
    # x ≤ 0 stands for −∞ (INT32_MIN), not a saturation: only positive x's clamps count
    r = fp.saturate32(np.where(pos, fp.shr_round(y, fp.Q30 - fo), 0))
    return np.where(pos, r, np.int32(fp.INT32_MIN))


def erf_fx(x: np.ndarray, f: int, fo: int) -> np.ndarray:
    ax = np.abs(x)
    a = fp.shr_round(ax, f - ERF_FRAC) if f >= ERF_FRAC else np.left_shift(ax, ERF_FRAC - f)
    a = np.minimum(a, ERF_CLAMP)
    px = fp.shr_round(a * ERF_P_Q30, ERF_FRAC)
    t = fp.round_div(np.int64(1 << 60), fp.ONE_Q30 + px)
    p = np.full(np.shape(x), ERF_A_Q30[-1], dtype=np.int64)
    for c in ERF_A_Q30[-2::-1]:
        p = fp.shr_round(p * t, fp.Q30) + c
    p = fp.shr_round(p * t, fp.Q30)
    e = fp.exp_nonpositive_q30(-fp.shr_round(a * a, ERF_FRAC), ERF_FRAC)
    m = fp.ONE_Q30 - fp.shr_round(p * e, fp.Q30)
    y = fp.shr_round(m, fp.Q30 - fo)
    return fp.saturate32(np.where(x < 0, -y, y))


def exp_fx(x: np.ndarray, f: int, fo: int) -> np.ndarray:
    t = fp.shr_round(x * fp.LOG2E_Q30, f)
    k = np.right_shift(t, fp.Q30)
    p = fp.exp2_frac_q30(t - np.left_shift(k, fp.Q30))
    sh = k + fo - fp.Q30
    down = fp.shr_round(p, np.clip(-sh, 0, 32))
    fp.count_saturated(sh > 0)  # e^x ≥ 2^31 / 2^fo: INT32_MAX stands for a larger value
    return fp.saturate32(np.where(sh > 0, fp.INT32_MAX, down))
