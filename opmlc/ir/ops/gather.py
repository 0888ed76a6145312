"""gather: ONNX Gather with indices known only at run time (embedding lookups).

Inputs: data (any dtype, rank ≥ 1) and indices (i32 or i64, any shape). Attribute `axis`
(non-negative). The output has shape data.shape[:axis] + indices.shape + data.shape[axis+1:],
and the data's element type (and fractional bits): it copies whole slices, so it is exact.

Index rule (deterministic where ONNX leaves it undefined): an index i in [−n, 0) counts from
the end (i + n), as ONNX says; an index outside [−n, n), which ONNX calls an error, selects
no slice and its output slice is all zeros (the raw integer 0: 0.0 for fx32, false for bool).
A program therefore never reads outside its data, whatever the indices hold.

Gathers whose indices are compile-time constants never reach this op: the frontend lowers
them onto `view`/`concat`, or folds them when the data is constant too.
"""

from __future__ import annotations

import numpy as np

from opmlc.ir.ops import IRTypeError, Op, register
from opmlc.ir.types import DType, TensorType


def gather_shape(data: tuple[int, ...], idx: tuple[int, ...], axis: int) -> tuple[int, ...]:
    return tuple(data[:axis]) + tuple(idx) + tuple(data[axis + 1:])


@register
class Gather(Op):
    name = "gather"
    arity = (2, 2)

    def infer(self, inputs: list[TensorType], attrs: dict) -> TensorType:
        self.check_arity(inputs)
        data, idx = inputs
        axis = attrs["axis"]
        if idx.dtype not in (DType.I32, DType.I64):
            raise IRTypeError(f"gather indices must be i32 or i64, got {idx}")
        if not 0 <= axis < len(data.shape):
            raise IRTypeError(f"gather axis {axis} out of range for {data}")
        return data.with_shape(gather_shape(data.shape, idx.shape, axis))

    def evaluate(
        self, args: list[np.ndarray], types: list[TensorType], attrs: dict, out: TensorType
    ) -> np.ndarray:
        data, idx = np.asarray(args[0]), np.asarray(args[1]).astype(np.int64)
        axis = attrs["axis"]
        n = data.shape[axis]
        i = np.where(idx < 0, idx + n, idx)
        ok = (i >= 0) & (i < n)
        taken = np.take(data, np.where(ok, i, 0), axis=axis) if n else np.zeros(out.shape, data.dtype)
        mask = ok.reshape((1,) * axis + ok.shape + (1,) * (data.ndim - axis - 1))
        return np.where(mask, taken, np.zeros((), data.dtype))
