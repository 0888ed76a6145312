"""concat: the inputs joined along `axis` (any number ≥ 1, one dtype). For fx32 each input is
converted to the output's bits (attribute `frac`) with `to_fx`."""

from __future__ import annotations

import numpy as np

from opmlc.ir import fixedpoint as fp
from opmlc.ir.ops import IRTypeError, Op, register
from opmlc.ir.types import DType, TensorType


@register
class Concat(Op):
    name = "concat"
    arity = (1, 1 << 16)

    def infer(self, inputs: list[TensorType], attrs: dict) -> TensorType:
        self.check_arity(inputs)
        axis = attrs["axis"]
        first = inputs[0]
        if not 0 <= axis < len(first.shape):
            raise IRTypeError(f"concat axis {axis} out of range for {first}")
        for t in inputs:
            if t.dtype is not first.dtype or len(t.shape) != len(first.shape) or any(
                    a != b for k, (a, b) in enumerate(zip(t.shape, first.shape, strict=True)) if k != axis):
                raise IRTypeError(f"concat operands {first} and {t} do not fit along axis {axis}")
        shape = list(first.shape)
        shape[axis] = sum(t.shape[axis] for t in inputs)
        return TensorType(first.dtype, tuple(shape), attrs.get("frac", 0) if first.dtype is DType.FX32 else 0)

    def evaluate(
        self, args: list[np.ndarray], types: list[TensorType], attrs: dict, out: TensorType
    ) -> np.ndarray:
        if out.dtype is DType.FX32:
            args = [fp.to_fx(a, t.frac, out.frac) for a, t in zip(args, types, strict=True)]
        return np.concatenate([np.asarray(a, out.dtype.numpy) for a in args], axis=attrs["axis"])
