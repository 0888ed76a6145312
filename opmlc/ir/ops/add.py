"""add: elementwise a + b with broadcasting, on fx32 tensors of any fractional bits.

Semantics: both operands are aligned to F = max(fa, fb) by exact left shifts in int64, summed
in int64 (exact: |sum| < 2^63), rescaled to the output's bits (round half up), saturated to
int32. Attributes: `frac`, the output's fractional bits.
"""

from __future__ import annotations

import numpy as np

from opmlc.ir import fixedpoint as fp
from opmlc.ir.ops import IRTypeError, Op, register
from opmlc.ir.ops._broadcast import broadcast_shape
from opmlc.ir.types import DType, TensorType


@register
class Add(Op):
    name = "add"
    arity = (2, 2)

    def infer(self, inputs: list[TensorType], attrs: dict) -> TensorType:
        self.check_arity(inputs)
        a, b = inputs
        if a.dtype is not DType.FX32 or b.dtype is not DType.FX32:
            raise IRTypeError(f"add takes fx32 operands, got {a} and {b}")
        return TensorType(DType.FX32, broadcast_shape(a.shape, b.shape), attrs["frac"])

    def evaluate(
        self, args: list[np.ndarray], types: list[TensorType], attrs: dict, out: TensorType
    ) -> np.ndarray:
        a, b = (fp.as_i64(x) for x in args)
        fa, fb = (t.frac for t in types)
        top = max(fa, fb)
        total = fp.add64(fp.shl64(a, top - fa), fp.shl64(b, top - fb))
        return fp.saturate32(fp.rescale(total, top, out.frac))
