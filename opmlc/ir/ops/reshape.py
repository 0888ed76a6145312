"""reshape: the same elements in row-major order under a new static shape (a copy, since every
value has its own memory region). Attributes: `shape`."""

from __future__ import annotations

from math import prod

import numpy as np

from opmlc.ir.ops import IRTypeError, Op, register
from opmlc.ir.types import TensorType


@register
class Reshape(Op):
    name = "reshape"

    def infer(self, inputs: list[TensorType], attrs: dict) -> TensorType:
        self.check_arity(inputs)
        (x,) = inputs
        shape = tuple(attrs["shape"])
        if prod(shape) != x.numel:
            raise IRTypeError(f"cannot reshape {x} to {list(shape)}")
        return x.with_shape(shape)

    def evaluate(
        self, args: list[np.ndarray], types: list[TensorType], attrs: dict, out: TensorType
    ) -> np.ndarray:
        return np.reshape(args[0], out.shape).copy()
