"""softmax over the last axis of an fx32 tensor, integer-only. Attribute `frac`: output bits.

Algorithm (all int64, no division by a variable except one unsigned 2^62 / s per row):
  m = max(x); d = x - m ≤ 0
  e = exp(d) in Q30 by fixedpoint.exp_nonpositive_q30 (e = 2^30 exactly at the maximum)
  s = Σ e ≥ 2^30;  r = floor(2^62 / s) ≤ 2^32
  y = saturate32((e · r + 2^(61-fo)) >> (62 - fo))      (e · r ≤ 2^62: no overflow)

Error bound against float64 softmax of the exact inputs x / 2^frac (checked by
tests/ir/test_ops.py): each exp is within 1.3e-7 relative + 2^-30 absolute, so each
probability is within 3e-7 + n·2^-30 of the exact one before the final rounding, which adds
2^-(fo+1): |y / 2^fo - softmax(x)| ≤ 2^-(fo+1) + 3e-7 + n·2^-30 for a row of n elements.
"""

from __future__ import annotations

import numpy as np

from opmlc.ir import fixedpoint as fp
from opmlc.ir.ops import IRTypeError, Op, register
from opmlc.ir.types import DType, TensorType


@register
class Softmax(Op):
    name = "softmax"

    def infer(self, inputs: list[TensorType], attrs: dict) -> TensorType:
        self.check_arity(inputs)
        (x,) = inputs
        if x.dtype is not DType.FX32 or not x.shape:
            raise IRTypeError(f"softmax takes an fx32 tensor of rank ≥ 1, got {x}")
        return TensorType(DType.FX32, x.shape, attrs["frac"])

    def evaluate(
        self, args: list[np.ndarray], types: list[TensorType], attrs: dict, out: TensorType
    ) -> np.ndarray:
        x = fp.as_i64(args[0])
        d = x - x.max(axis=-1, keepdims=True)
        e = fp.exp_nonpositive_q30(d, types[0].frac)
        s = e.sum(axis=-1, keepdims=True)  # ≤ N · 2^30: exact
        r = (np.uint64(1 << 62) // s.astype(np.uint64)).astype(np.int64)
        return fp.saturate32(fp.shr_round(fp.mul64(e, r), 62 - out.frac))
