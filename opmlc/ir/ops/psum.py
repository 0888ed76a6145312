"""psum: the exact sum of a reduction's partial sums, then the reduction's own finish — the last
node of a reduction too long for one VM task (opmlc/backend/psums.py splits it into chunk nodes
whose outputs are int64 accumulators: matmul, qmatmul and reduce with `accumulate`).

Inputs: n ≥ 1 i64 tensors of one shape. Attributes: `dtype` of the output ("fx32", "i32" or
"i64"); for fx32 `from_frac` (the accumulators' fractional bits) and `frac` (the output's);
optionally `divisor` d ≥ 1 (a mean's element count; default 1).

Semantics: s = Σ_i p_i in wrap-around int64 (associative: the chunks' sums give the bits of the
unsplit accumulator); s = round_div(s, d) when d > 1; the output is to_fx(s, from_frac, frac)
for fx32 (saturated, counted), s wrapped to int32 for i32, s for i64. With the accumulators of
a matmul or qmatmul (bias included by a chunk) this is exactly saturate32(shr_round(acc, s)),
with a reduce sum's or mean's it is exactly the reduce's finish.
"""

from __future__ import annotations

import numpy as np

from opmlc.ir import fixedpoint as fp
from opmlc.ir.ops import IRTypeError, Op, register
from opmlc.ir.types import DType, TensorType

OUT_DTYPES = {"fx32": DType.FX32, "i32": DType.I32, "i64": DType.I64}


@register
class PSum(Op):
    name = "psum"
    arity = (1, 1 << 16)

    def infer(self, inputs: list[TensorType], attrs: dict) -> TensorType:
        self.check_arity(inputs)
        shape = inputs[0].shape
        if any(t.dtype is not DType.I64 or t.shape != shape for t in inputs):
            raise IRTypeError(f"psum takes i64 partial sums of one shape, got {', '.join(map(str, inputs))}")
        d = attrs.get("divisor", 1)
        if not isinstance(d, int) or isinstance(d, bool) or not 1 <= d < 1 << 62:
            raise IRTypeError(f"psum divisor must be an integer in 1..2^62-1, got {d!r}")
        dtype = OUT_DTYPES.get(attrs.get("dtype"))
        if dtype is None:
            raise IRTypeError(f"psum dtype must be one of {sorted(OUT_DTYPES)}, got {attrs.get('dtype')!r}")
        if dtype is not DType.FX32:
            return TensorType(dtype, shape)
        fi, fo = attrs.get("from_frac"), attrs.get("frac")
        if not isinstance(fi, int) or not isinstance(fo, int) or not -62 <= fo - fi <= 30:
            raise IRTypeError(f"psum from_frac {fi!r} and frac {fo!r}: need integers with −62 ≤ frac − from_frac ≤ 30")
        return TensorType(DType.FX32, shape, fo)

    def evaluate(self, args: list[np.ndarray], types: list[TensorType], attrs: dict, out: TensorType) -> np.ndarray:
        s = np.zeros(out.shape, np.uint64)
        for a in args:
            s = s + np.asarray(a).astype(np.int64).view(np.uint64)  # uint64: defined wrap-around
        s = s.view(np.int64)
        d = attrs.get("divisor", 1)
        if d > 1:
            s = fp.round_div(s, d)
        if out.dtype is DType.FX32:
            return fp.to_fx(s, attrs["from_frac"], attrs["frac"])
        return s.astype(out.dtype.numpy)
