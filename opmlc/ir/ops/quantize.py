"""quantize_linear: fx32 → the integers of an ONNX quantized tensor (QuantizeLinear's rounding).

Inputs: x (fx32, frac f), m (i32: the multiplier's mantissa), zp (i32: the zero point), each
of shape [] (per tensor), [C] (per axis, C = x.shape[axis]) or x's shape (per element: blocked
quantization, the blocks' parameters repeated). Attributes: `shift` (1..62), `axis`, `qmin`,
`qmax` (the quantized type's range, e.g. 0..255 for uint8, −8..7 for int4). Output: i32, x's
shape.

The frontend sets m·2^−shift ≈ M / 2^f, where M is the real multiplier: 1/scale for a
QuantizeLinear, x_scale·w_scale/y_scale for the requantization after an exact integer
convolution or matmul (frontend/rules/quantized.py).

Semantics: p = x·m (exact: |x|, |m| < 2^31, so |p| < 2^62), r = p / 2^shift rounded half to
even (ONNX's rounding; in integers r = (p + 2^(shift−1) − 1 + ((p >> shift) & 1)) >> shift),
y = clamp(r + zp, qmin, qmax). The clamp is the quantized type's saturation that ONNX
defines, not an int32 overflow: it is not counted as saturation.
"""

from __future__ import annotations

import numpy as np

from opmlc.ir import fixedpoint as fp
from opmlc.ir.ops import IRTypeError, Op, register
from opmlc.ir.types import DType, TensorType

MIN_SHIFT, MAX_SHIFT = 1, 62


def round_half_even_shr(p: np.ndarray, s: int) -> np.ndarray:
    """p / 2^s rounded half to even, for int64 p with |p| < 2^62 and 1 ≤ s ≤ 62."""
    p = fp.as_i64(p)
    odd = np.right_shift(p, s) & 1
    return np.right_shift(p + ((1 << (s - 1)) - 1) + odd, s)


def channel_shape(rank: int, axis: int, c: int) -> tuple[int, ...]:
    """The shape a per-axis vector of length c broadcasts with along `axis` of a rank-`rank` tensor."""
    return (c,) + (1,) * (rank - axis - 1)


@register
class QuantizeLinear(Op):
    name = "quantize_linear"
    arity = (3, 3)

    def infer(self, inputs: list[TensorType], attrs: dict) -> TensorType:
        self.check_arity(inputs)
        x, m, zp = inputs
        if x.dtype is not DType.FX32 or m.dtype is not DType.I32 or zp.dtype is not DType.I32:
            raise IRTypeError(f"quantize_linear takes fx32, i32, i32, got {x}, {m}, {zp}")
        if not MIN_SHIFT <= attrs["shift"] <= MAX_SHIFT:
            raise IRTypeError(f"quantize_linear shift {attrs['shift']} outside {MIN_SHIFT}..{MAX_SHIFT}")
        if not -(2**31) <= attrs["qmin"] <= attrs["qmax"] < 2**31:
            raise IRTypeError(f"quantize_linear range {attrs['qmin']}..{attrs['qmax']} is empty or not int32")
        axis = attrs.get("axis", 0)
        for t in (m, zp):
            if t.shape == () or t.shape == x.shape:
                continue
            if not 0 <= axis < len(x.shape) or t.shape != (x.shape[axis],):
                raise IRTypeError(f"quantize_linear: {t} is not a scalar, a vector along axis {axis} or the shape of {x}")
        return TensorType(DType.I32, x.shape)

    def evaluate(
        self, args: list[np.ndarray], types: list[TensorType], attrs: dict, out: TensorType
    ) -> np.ndarray:
        x, m, zp = (fp.as_i64(a) for a in args)
        rank, axis = x.ndim, attrs.get("axis", 0)
        if m.ndim and m.shape != x.shape:
            m = m.reshape(channel_shape(rank, axis, m.size))
        if zp.ndim and zp.shape != x.shape:
            zp = zp.reshape(channel_shape(rank, axis, zp.size))
        r = round_half_even_shr(x * m, attrs["shift"]) + zp
        return np.clip(r, attrs["qmin"], attrs["qmax"]).astype(np.int32)
