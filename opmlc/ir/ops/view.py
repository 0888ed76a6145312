"""view: a strided copy with an optional constant border — the one data-movement op behind
Transpose, Slice (any step), Expand, Tile, Pad (constant), Split, DepthToSpace and friends.

Attributes: `shape` (the output's), `offset` and `strides` (one per output dimension, in
elements of the flattened input; 0 repeats, negative walks backwards), and optionally `lo`,
`hi` (per dimension) and `fill` (the raw integer stored outside the box). Output element i is

    x.flat[offset + Σ_k i_k · strides[k]]   if lo_k ≤ i_k < hi_k for every k, else fill

The type rule checks that every index inside the box lies in the input, so the kernel never
reads out of bounds. The element type (and fractional bits) is the input's.
"""

from __future__ import annotations

import numpy as np

from opmlc.ir.ops import IRTypeError, Op, register
from opmlc.ir.types import TensorType


def box(attrs: dict, shape: tuple[int, ...]) -> tuple[list[int], list[int]]:
    lo = list(attrs.get("lo") or [0] * len(shape))
    hi = list(attrs.get("hi") or list(shape))
    return lo, hi


@register
class View(Op):
    name = "view"

    def infer(self, inputs: list[TensorType], attrs: dict) -> TensorType:
        self.check_arity(inputs)
        (x,) = inputs
        shape = tuple(int(d) for d in attrs["shape"])
        st = [int(s) for s in attrs["strides"]]
        lo, hi = box(attrs, shape)
        if not len(st) == len(lo) == len(hi) == len(shape):
            raise IRTypeError("view: shape, strides, lo and hi must have one entry per dimension")
        lo = [max(0, a) for a in lo]
        hi = [min(d, b) for d, b in zip(shape, hi, strict=True)]
        if all(a < b for a, b in zip(lo, hi, strict=True)):
            first = attrs["offset"] + sum(s * (a if s >= 0 else b - 1) for s, a, b in zip(st, lo, hi, strict=True))
            last = attrs["offset"] + sum(s * (b - 1 if s >= 0 else a) for s, a, b in zip(st, lo, hi, strict=True))
            if first < 0 or last >= x.numel:
                raise IRTypeError(f"view reads outside its input {x}")
        return x.with_shape(shape)

    def evaluate(
        self, args: list[np.ndarray], types: list[TensorType], attrs: dict, out: TensorType
    ) -> np.ndarray:
        shape = out.shape
        lo, hi = box(attrs, shape)
        idx = np.indices(shape, dtype=np.int64) if shape else np.zeros((0,), np.int64)
        src = np.full(shape, attrs["offset"], dtype=np.int64)
        ok = np.ones(shape, dtype=bool)
        for k, s in enumerate(attrs["strides"]):
            src = src + idx[k] * s
            ok &= (idx[k] >= lo[k]) & (idx[k] < hi[k])
        flat = np.ravel(args[0])
        taken = flat[np.where(ok, src, 0)] if flat.size else np.zeros(shape, flat.dtype)
        return np.where(ok, taken, np.asarray(attrs.get("fill", 0)).astype(flat.dtype))
