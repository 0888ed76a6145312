"""qgather: rows of a quantized table looked up by run-time indices (an embedding under
`--weights int8|int4`), dequantized to fx32.

Inputs: q i8/i4 [V, D] (row v is token v's vector); scale fx32<fs> [V, ceil(D / bs)];
optionally a zero point (q's dtype, scale's shape); indices i32/i64 (any shape). Attributes:
`block_size` bs (D: one scale per row), `frac` fo ≤ fs. Output fx32<fo> [*indices.shape, D].

Semantics: out[..., d] = saturate32(shr_round((q[i, d] − zp[i, d // bs]) · scale[i, d // bs],
fs − fo)) for the row i an index selects, with gather's index rule (ops/gather.py): an index in
[−V, 0) counts from the end, one outside [−V, V) selects a row of zeros.
"""

from __future__ import annotations

import numpy as np

from opmlc.ir import fixedpoint as fp
from opmlc.ir.ops import IRTypeError, Op, register
from opmlc.ir.ops._qweight import check_qweight, dequantize_int
from opmlc.ir.types import DType, TensorType


@register
class QGather(Op):
    name = "qgather"
    arity = (3, 4)

    def infer(self, inputs: list[TensorType], attrs: dict) -> TensorType:
        self.check_arity(inputs)
        q, scale = inputs[0], inputs[1]
        idx = inputs[-1]
        zp = inputs[2] if len(inputs) == 4 else None
        if idx.dtype not in (DType.I32, DType.I64):
            raise IRTypeError(f"qgather indices must be i32 or i64, got {idx}")
        if len(q.shape) != 2:
            raise IRTypeError(f"qgather: the table must be [V, D], got {q}")
        check_qweight(q, scale, zp, attrs.get("block_size"), "qgather")
        fo = attrs["frac"]
        if not 0 <= fo <= scale.frac:
            raise IRTypeError(f"qgather output bits {fo} must be in 0..{scale.frac} (the scale's)")
        return TensorType(DType.FX32, (*idx.shape, q.shape[1]), fo)

    def evaluate(self, args: list[np.ndarray], types: list[TensorType], attrs: dict, out: TensorType) -> np.ndarray:
        q, scale = args[0], args[1]
        zp = args[2] if len(args) == 4 else None
        idx = np.asarray(args[-1]).astype(np.int64).reshape(-1)
        v = q.shape[0]
        i = np.where(idx < 0, idx + v, idx)
        ok = (i >= 0) & (i < v)
        rows = np.where(ok, i, 0)
        if v == 0:
            return np.zeros(out.shape, np.int32)
        w = dequantize_int(q[rows], scale[rows], None if zp is None else zp[rows], attrs["block_size"])
        r = fp.shr_round(w, types[1].frac - out.frac)
        with fp.uncounted():  # only the rows an index selects count
            res = fp.saturate32(r)
        fp.count_saturated(((r < fp.INT32_MIN) | (r > fp.INT32_MAX)) & ok[:, None])
        return np.where(ok[:, None], res, 0).reshape(out.shape)
