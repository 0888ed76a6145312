"""norm: LayerNormalization and RMSNorm over the last axis, integer-only, one node each.

Inputs: x [..., n] fx32 (f bits), scale [n] fx32 (fg), optionally bias [n] fx32 (fb, with
0 ≤ 24 + fg − fb ≤ 31). Attributes: `kind` ("layer" or "rms"), `eps` (the epsilon as an
integer in units of 2^−F, F = 2f − r, see `eps_units`), `frac` (the output's bits fo).

Per row of n values, in int64 (rows are independent; sums are exact):

  layer: μ = round_div(Σ x, n), c = x − μ          rms: c = x            (|c| < 2^32)
  r = the smallest even number ≥ bitlen(n) + 1, so that a sum of n squares shifted by r fits
  sq = (|c|·|c| + 2^(r−1)) >> r  (unsigned: |c|² < 2^64)   V = max(1, round_div(Σ sq, n) + eps)
                                                             (the variance, in Q(2f − r))
  e = (62 − bitlen(V)) // 2;  W = V·4^e (V >> 2 when e = −1), so W ∈ [2^60, 2^62)
  s = isqrt64(W) ∈ [2^30, 2^31);  R = round_div(2^61, s) ∈ (2^30, 2^31]  (R·2^(f − r/2 + e − 61)
                                                             = 1/sqrt(V / 2^(2f − r)))
  z = clamp(shr_round(c·R, 37 + r/2 − e), ±2^31)            (the normalised value in Q24;
                                                             the shift is 7 + r/2 … 38 + r/2)
  y = to_fx(z·scale + (bias << (24 + fg − fb)), 24 + fg, fo)

No division by a run-time value but the two round_divs by n and one by s; no shift amount out
of range; the clamp of z (|z| ≤ 128 in value, where a normalised value is at most sqrt(n)) only
guards against overflow and never acts for n ≤ 16384. An output element counts as saturated
(once) if the z clamp or the final to_fx clamped it.

Error bound against float64 on the exact (quantized) x, scale and bias, with σ² = var + eps
(the biased variance, or the mean square for rms):
  |y − y_exact| ≤ |scale|·(|z|·(2^−29 + 2^(r−2f)/σ²) + 2^−25 + [layer] 2^−(f+1)/σ) + 2^−(fo+1)
(isqrt and R: 2^−30 + 2^−31 relative; the rounded squares and mean of squares: one unit 2^(r−2f)
of the variance; the rounded mean: 2^−(f+1); z's rounding: 2^−25; the output's rounding).
tests/ir/test_decoder_ops.py measures it.
"""

from __future__ import annotations

import numpy as np

from opmlc.ir import fixedpoint as fp
from opmlc.ir.ops import IRTypeError, Op, register
from opmlc.ir.types import DType, TensorType

Z_FRAC = 24
Z_LIMIT = 1 << 31


def shift_bits(n: int) -> int:
    """r: the smallest even number ≥ bitlen(n) + 1."""
    r = n.bit_length() + 1
    return r + (r & 1)


def eps_units(eps: float, f: int, n: int) -> int:
    """epsilon as the integer the op adds to the variance (units of 2^−(2f − r), half up)."""
    F = 2 * f - shift_bits(n)
    return int(np.floor(eps * 2.0**F + 0.5))


def bitlen64(v: np.ndarray) -> np.ndarray:
    """Bit length of int64 values ≥ 1 (exact: by comparisons, not floating point)."""
    v = fp.as_i64(v)
    out = np.zeros(v.shape, dtype=np.int64)
    for k in range(63):
        out += v >= (np.int64(1) << np.int64(k))
    return out


@register
class Norm(Op):
    name = "norm"
    arity = (2, 3)

    def infer(self, inputs: list[TensorType], attrs: dict) -> TensorType:
        self.check_arity(inputs)
        x, g = inputs[0], inputs[1]
        if any(t.dtype is not DType.FX32 for t in inputs) or not x.shape:
            raise IRTypeError(f"norm takes fx32 operands, x of rank ≥ 1; got {inputs}")
        n = x.shape[-1]
        if attrs["kind"] not in ("layer", "rms"):
            raise IRTypeError(f"norm kind {attrs['kind']!r} (layer or rms)")
        if g.shape != (n,) or (len(inputs) == 3 and inputs[2].shape != (n,)):
            raise IRTypeError(f"norm scale and bias must be [{n}], got {inputs[1:]}")
        if len(inputs) == 3 and not 0 <= Z_FRAC + g.frac - inputs[2].frac <= 31:
            raise IRTypeError(f"norm bias bits {inputs[2].frac} out of range for scale bits {g.frac}")
        if n == 0 or int(attrs["eps"]) < 0:
            raise IRTypeError("norm needs n ≥ 1 and eps ≥ 0")
        return TensorType(DType.FX32, x.shape, attrs["frac"])

    def evaluate(
        self, args: list[np.ndarray], types: list[TensorType], attrs: dict, out: TensorType
    ) -> np.ndarray:
        x = fp.as_i64(args[0])
        n = x.shape[-1]
        fg = types[1].frac
        r = shift_bits(n)
        if attrs["kind"] == "layer":
            mu = fp.round_div(x.sum(axis=-1, keepdims=True), n)
            c = x - mu
        else:
            c = x
        a = np.abs(c).astype(np.uint64)
        sq = ((a * a + np.uint64(1 << (r - 1))) >> np.uint64(r)).astype(np.int64)
        v = fp.round_div(sq.sum(axis=-1, keepdims=True), n) + int(attrs["eps"])
        v = np.maximum(v, 1)
        e = (62 - bitlen64(v)) // 2
        w = np.where(e >= 0, np.left_shift(v, np.maximum(e, 0) * 2), np.right_shift(v, 2))
        s = fp.isqrt64(w)
        rr = fp.round_div(np.int64(1 << 61), s)
        z_wide = fp.shr_round(c * rr, 37 + r // 2 - e)
        z = np.clip(z_wide, -Z_LIMIT, Z_LIMIT)
        y = z * fp.as_i64(args[1])
        acc_frac = Z_FRAC + fg
        if len(args) == 3:
            y = y + np.left_shift(fp.as_i64(args[2]), acc_frac - types[2].frac)
        y, sat = fp.to_fx_flagged(y, acc_frac, out.frac)
        fp.count_saturated(sat | (z != z_wide))  # an element counts once, whichever clamp acted
        return y
