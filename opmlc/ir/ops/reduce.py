"""reduce: a reduction over `axes` (sorted, non-negative), selected by `kind`; `keepdims` keeps
the reduced dimensions as 1s.

Kinds and semantics (n = number of reduced elements, taken in row-major order):
- sum: int64 wrap-around sum (order-free), then for fx32 `to_fx(s, f, fo)`; ints wrap at their width.
- mean (fx32): `to_fx(round_div(s, n), f, fo)`.
- max, min: the extreme element (for fx32 then `to_fx` to fo).
- prod: sequential, in row-major order, the accumulator kept at the output's bits fo:
  acc = 2^fo, acc = saturate32(shr_round(acc · x, f)) per element (fx32; a fixed order, so
  the per-step rounding is deterministic; an output element counts as saturated once if
  any of its steps saturated);
  ints multiply with wrap-around.
- argmax, argmin: one axis only, output i64: the index of the first extreme element
  (`select_last` true: the last one).
fx32 outputs have the bits `frac`. Max, min, mean and the arg kinds need n ≥ 1.
With the attribute `accumulate` true (sum and mean only) the output is the int64 sum s itself,
i64: one chunk of a reduction too long for one VM task, finished by a `psum` node
(opmlc/backend/psums.py).
"""

from __future__ import annotations

import numpy as np

from opmlc.ir import fixedpoint as fp
from opmlc.ir.ops import IRTypeError, Op, register
from opmlc.ir.types import DType, TensorType

KINDS = ("sum", "mean", "max", "min", "prod", "argmax", "argmin")


def out_shape(shape: tuple[int, ...], axes: list[int], keepdims: bool) -> tuple[int, ...]:
    if keepdims:
        return tuple(1 if k in axes else d for k, d in enumerate(shape))
    return tuple(d for k, d in enumerate(shape) if k not in axes)


@register
class Reduce(Op):
    name = "reduce"

    def infer(self, inputs: list[TensorType], attrs: dict) -> TensorType:
        self.check_arity(inputs)
        (x,) = inputs
        kind, axes = attrs["kind"], list(attrs["axes"])
        if kind not in KINDS or x.dtype is DType.BOOL or (kind == "mean" and x.dtype is not DType.FX32):
            raise IRTypeError(f"reduce {kind} is not defined on {x}")
        if axes != sorted(set(axes)) or any(not 0 <= a < len(x.shape) for a in axes):
            raise IRTypeError(f"reduce axes {axes} invalid for {x}")
        n = int(np.prod([x.shape[a] for a in axes]))
        if n == 0 and kind not in ("sum", "prod"):
            raise IRTypeError(f"reduce {kind} over no elements")
        shape = out_shape(x.shape, axes, bool(attrs.get("keepdims", True)))
        if attrs.get("accumulate"):
            if kind not in ("sum", "mean"):
                raise IRTypeError(f"reduce {kind} has no int64 accumulator")
            return TensorType(DType.I64, shape)
        if kind in ("argmax", "argmin"):
            if len(axes) != 1:
                raise IRTypeError(f"reduce {kind} takes exactly one axis")
            return TensorType(DType.I64, shape)
        if x.dtype is DType.FX32:
            return TensorType(DType.FX32, shape, attrs["frac"])
        return x.with_shape(shape)

    def evaluate(
        self, args: list[np.ndarray], types: list[TensorType], attrs: dict, out: TensorType
    ) -> np.ndarray:
        (t,) = types
        kind, axes = attrs["kind"], list(attrs["axes"])
        x = fp.as_i64(args[0])
        rest = [k for k in range(x.ndim) if k not in axes]
        n_rows = int(np.prod([x.shape[k] for k in rest]))
        rows = np.transpose(x, rest + axes).reshape(n_rows, int(np.prod([x.shape[a] for a in axes])))
        n = rows.shape[1]
        if kind in ("argmax", "argmin"):
            pick = np.argmax if kind == "argmax" else np.argmin  # both take the first extreme
            if attrs.get("select_last"):
                res = n - 1 - pick(rows[:, ::-1], axis=1)
            else:
                res = pick(rows, axis=1)
            return res.astype(np.int64).reshape(out.shape)
        if kind in ("sum", "mean"):
            s = rows.view(np.uint64).sum(axis=1, dtype=np.uint64).view(np.int64)
            if attrs.get("accumulate"):
                return s.reshape(out.shape)
            if kind == "mean":
                s = fp.round_div(s, n)
            res = s
        elif kind == "max":
            res = rows.max(axis=1)
        elif kind == "min":
            res = rows.min(axis=1)
        else:  # prod
            if t.dtype is DType.FX32:
                acc = np.full(rows.shape[0], 1 << out.frac, dtype=np.int64)
                hit = np.zeros(rows.shape[0], dtype=bool)
                for j in range(n):
                    p = fp.shr_round(acc * rows[:, j], t.frac)
                    hit |= (p < fp.INT32_MIN) | (p > fp.INT32_MAX)
                    with fp.uncounted():
                        acc = fp.saturate32(p).astype(np.int64)
                fp.count_saturated(hit)
                return acc.astype(np.int32).reshape(out.shape)
            else:
                acc = np.ones(rows.shape[0], dtype=np.uint64)
                for j in range(n):
                    acc = acc * rows[:, j].view(np.uint64)
                acc = acc.view(np.int64)
            res = acc
        res = res.reshape(out.shape)
        if t.dtype is DType.FX32:
            return fp.to_fx(res, t.frac, out.frac)
        return res.astype(t.dtype.numpy)
