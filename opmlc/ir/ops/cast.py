"""cast: convert between element types, or change an fx32 tensor's fractional bits.

Attributes: `to` (the output dtype) and `frac` (its bits, for fx32). Semantics:
- fx32 → fx32: `to_fx(x, f, fo)` (round half up, saturate): the requantize step.
- fx32 → i32/i64: x / 2^f truncated toward zero (C's float → int); → bool: x ≠ 0.
- i32/i64/bool → fx32: `to_fx(x, 0, fo)` (saturates what does not fit).
- i64 → i32 wraps (keeps the low 32 bits); i32 → i64 sign-extends; → bool: x ≠ 0; bool → int 0/1.
"""

from __future__ import annotations

import numpy as np

from opmlc.ir import fixedpoint as fp
from opmlc.ir.ops import Op, register
from opmlc.ir.types import DType, TensorType


@register
class Cast(Op):
    name = "cast"

    def infer(self, inputs: list[TensorType], attrs: dict) -> TensorType:
        self.check_arity(inputs)
        to = DType(attrs["to"])
        return TensorType(to, inputs[0].shape, attrs.get("frac", 0) if to is DType.FX32 else 0)

    def evaluate(
        self, args: list[np.ndarray], types: list[TensorType], attrs: dict, out: TensorType
    ) -> np.ndarray:
        src = types[0]
        x = fp.as_i64(args[0])
        if out.dtype is DType.BOOL:
            return x != 0
        if out.dtype is DType.FX32:
            return fp.to_fx(x, src.frac, out.frac)
        if src.dtype is DType.FX32:
            x = fp.trunc_frac(x, src.frac)
        return x.astype(out.dtype.numpy)
