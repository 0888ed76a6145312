"""pool: N-D max or average pooling over windows of x [N, C, *S] (fx32), selected by `kind`.

Attributes: `kernel`, `strides`, `dilations`, `pads` (begins then ends), `ceil_mode`,
`count_include_pad` (avg). The output keeps the input's bits. Output size per dimension, as
ONNX (and PyTorch) define it: (S + pb + pe − ((K − 1)·d + 1)) / stride + 1, rounded down, or
up with `ceil_mode` — then one less if the last window would start past S + pb.

- max: the largest element of the window's positions inside the input (padding never wins;
  a window entirely in the padding gives INT32_MIN).
- avg: the window's elements inside the input summed in int64, then `round_div(sum, count)`
  (round half up, exact), count = with `count_include_pad` the number of the window's positions
  inside the padded input (the kernel's size, except for a ceil_mode window that reaches past
  the end padding: ONNX's divisor), else the number of positions inside the input (at least 1:
  a window entirely in the padding averages to 0).
"""

from __future__ import annotations

import itertools

import numpy as np

from opmlc.ir import fixedpoint as fp
from opmlc.ir.ops import IRTypeError, Op, register
from opmlc.ir.types import DType, TensorType


def pool_out(spatial, attrs) -> tuple[int, ...]:
    k, st, dl, pads = attrs["kernel"], attrs["strides"], attrs["dilations"], attrs["pads"]
    r = len(spatial)
    out = []
    for i in range(r):
        span = spatial[i] + pads[i] + pads[r + i] - ((k[i] - 1) * dl[i] + 1)
        o = (-(-span // st[i]) if attrs.get("ceil_mode") else span // st[i]) + 1
        if attrs.get("ceil_mode") and (o - 1) * st[i] >= spatial[i] + pads[i]:
            o -= 1
        out.append(o)
    return tuple(out)


@register
class Pool(Op):
    name = "pool"

    def infer(self, inputs: list[TensorType], attrs: dict) -> TensorType:
        self.check_arity(inputs)
        (x,) = inputs
        r = len(x.shape) - 2
        if x.dtype is not DType.FX32 or r < 1 or attrs["kind"] not in ("max", "avg"):
            raise IRTypeError(f"pool {attrs['kind']} takes an fx32 [N, C, …] tensor, got {x}")
        for key, n in (("kernel", r), ("strides", r), ("dilations", r), ("pads", 2 * r)):
            if len(attrs[key]) != n:
                raise IRTypeError(f"pool: {key} must have {n} entries")
        out = pool_out(x.shape[2:], attrs)
        if min(out) < 1:
            raise IRTypeError("pool: the window is larger than the padded input")
        return x.with_shape((*x.shape[:2], *out))

    def evaluate(
        self, args: list[np.ndarray], types: list[TensorType], attrs: dict, out: TensorType
    ) -> np.ndarray:
        x = fp.as_i64(args[0])
        r = x.ndim - 2
        k, st, dl, pads = attrs["kernel"], attrs["strides"], attrs["dilations"], attrs["pads"]
        o = out.shape[2:]
        is_max = attrs["kind"] == "max"
        best = np.full(out.shape, fp.INT32_MIN, dtype=np.int64)
        total = np.zeros(out.shape, dtype=np.int64)
        count = np.zeros(o, dtype=np.int64)
        for kpos in itertools.product(*(range(kk) for kk in k)):
            # input coordinate of this kernel position for every output position, per dim
            coords = [np.arange(o[i]) * st[i] - pads[i] + kpos[i] * dl[i] for i in range(r)]
            inside = [(c >= 0) & (c < x.shape[2 + i]) for i, c in enumerate(coords)]
            in_pad = [(c >= -pads[i]) & (c < x.shape[2 + i] + pads[r + i]) for i, c in enumerate(coords)]
            mask = np.ones(o, dtype=bool)
            pmask = np.ones(o, dtype=bool)
            for i in range(r):
                mask &= inside[i].reshape((1,) * i + (-1,) + (1,) * (r - i - 1))
                pmask &= in_pad[i].reshape((1,) * i + (-1,) + (1,) * (r - i - 1))
            clipped = [np.clip(c, 0, x.shape[2 + i] - 1) for i, c in enumerate(coords)]
            vals = x[(slice(None), slice(None), *np.ix_(*clipped))]
            if is_max:
                best = np.where(mask, np.maximum(best, vals), best)
            else:
                total = total + np.where(mask, vals, 0)
                count = count + (pmask if attrs.get("count_include_pad") else mask)
        if is_max:
            return best.astype(np.int32)
        return fp.saturate32(fp.round_div(total, np.maximum(count, 1)))
