"""where: cond ? a : b elementwise, the three operands broadcast together.

cond is bool; a and b have one dtype. For fx32 the chosen operand is converted to the output's
bits (attribute `frac`) with `to_fx`; other dtypes are copied. Only the chosen operand's
saturation counts.
"""

from __future__ import annotations

import numpy as np

from opmlc.ir import fixedpoint as fp
from opmlc.ir.ops import IRTypeError, Op, register
from opmlc.ir.types import DType, TensorType


@register
class Where(Op):
    name = "where"
    arity = (3, 3)

    def infer(self, inputs: list[TensorType], attrs: dict) -> TensorType:
        self.check_arity(inputs)
        c, a, b = inputs
        if c.dtype is not DType.BOOL or a.dtype is not b.dtype:
            raise IRTypeError(f"where takes a bool condition and two operands of one dtype, got {c}, {a}, {b}")
        try:
            shape = tuple(np.broadcast_shapes(c.shape, a.shape, b.shape))
        except ValueError:
            raise IRTypeError(f"where: shapes {c.shape}, {a.shape}, {b.shape} do not broadcast") from None
        return TensorType(a.dtype, shape, attrs.get("frac", 0) if a.dtype is DType.FX32 else 0)

    def evaluate(
        self, args: list[np.ndarray], types: list[TensorType], attrs: dict, out: TensorType
    ) -> np.ndarray:
        c, a, b = np.broadcast_arrays(*args)
        if out.dtype is DType.FX32:
            a, sat_a = fp.to_fx_flagged(a, types[1].frac, out.frac)
            b, sat_b = fp.to_fx_flagged(b, types[2].frac, out.frac)
            fp.count_saturated(np.where(c.astype(bool), sat_a, sat_b))
        return np.where(c.astype(bool), a, b).astype(out.dtype.numpy)
