"""relu: max(x, 0) elementwise on fx32; the output keeps the input's fractional bits."""

from __future__ import annotations

import numpy as np

from opmlc.ir.ops import IRTypeError, Op, register
from opmlc.ir.types import DType, TensorType


@register
class Relu(Op):
    name = "relu"

    def infer(self, inputs: list[TensorType], attrs: dict) -> TensorType:
        self.check_arity(inputs)
        (x,) = inputs
        if x.dtype is not DType.FX32:
            raise IRTypeError(f"relu takes fx32, got {x}")
        return x

    def evaluate(
        self, args: list[np.ndarray], types: list[TensorType], attrs: dict, out: TensorType
    ) -> np.ndarray:
        return np.maximum(args[0], 0).astype(np.int32)
