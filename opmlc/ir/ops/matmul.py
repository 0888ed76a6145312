"""matmul: a @ b (+ bias) on fx32, accumulated exactly in int64, rescaled once at the end.

Inputs: a [..., M, K] (frac fa), b [..., K, N] (frac fb, batch dimensions broadcast), or
b [..., N, K] when the attribute `transpose_b` is true, optionally bias [N] (frac fc ≤ fa + fb).
Attribute `frac`: the output's bits fo, with 0 ≤ fa + fb - fo ≤ 62.

The frontend stores constant weights as [N, K] (`transpose_b`), PyTorch's Linear layout: then
each output element is a dot product of two contiguous rows, which vectorises on the host and
keeps the MIPS inner loop to loads, a `madd` and the loop step.

Semantics: acc = Σ_k a·b + (bias << (fa + fb - fc)), all in wrap-around int64 (wrap-around
addition is associative, so every summation order gives the same bits); out =
saturate32((acc + 2^(s-1)) >> s) with s = fa + fb - fo (no rounding term when s = 0).

With the attribute `accumulate` true the output is acc itself, i64 (no rounding, no
saturation): one chunk of a reduction too long for one VM task, summed and rescaled by a `psum`
node (opmlc/backend/psums.py).
"""

from __future__ import annotations

import numpy as np

from opmlc.ir import fixedpoint as fp
from opmlc.ir.ops import IRTypeError, Op, register
from opmlc.ir.types import DType, TensorType


@register
class MatMul(Op):
    name = "matmul"
    arity = (2, 3)

    def infer(self, inputs: list[TensorType], attrs: dict) -> TensorType:
        self.check_arity(inputs)
        a, b = inputs[0], inputs[1]
        if attrs.get("transpose_b"):
            b = b.with_shape((*b.shape[:-2], b.shape[-1], b.shape[-2])) if len(b.shape) >= 2 else b
        if any(t.dtype is not DType.FX32 for t in inputs):
            raise IRTypeError("matmul takes fx32 operands")
        if len(a.shape) < 2 or len(b.shape) < 2:
            raise IRTypeError(f"matmul needs rank ≥ 2 operands, got {a} and {b}")
        if a.shape[-1] != b.shape[-2]:
            raise IRTypeError(f"matmul inner dimensions differ: {a} @ {b}")
        try:
            batch = np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
        except ValueError:
            raise IRTypeError(f"matmul batch dimensions do not broadcast: {a} @ {b}") from None
        n = b.shape[-1]
        if len(inputs) == 3:
            c = inputs[2]
            if c.shape != (n,):
                raise IRTypeError(f"matmul bias must be [{n}], got {c}")
            if c.frac > a.frac + b.frac:
                raise IRTypeError("matmul bias has more fractional bits than the product")
        fo = attrs["frac"]
        if not 0 <= a.frac + b.frac - fo <= 62:
            raise IRTypeError(f"matmul output bits {fo} out of range for inputs {a}, {b}")
        if attrs.get("accumulate"):
            return TensorType(DType.I64, (*batch, a.shape[-2], n))
        return TensorType(DType.FX32, (*batch, a.shape[-2], n), fo)

    def evaluate(
        self, args: list[np.ndarray], types: list[TensorType], attrs: dict, out: TensorType
    ) -> np.ndarray:
        a = fp.as_i64(args[0]).astype(np.uint64)
        b = fp.as_i64(args[1]).astype(np.uint64)
        if attrs.get("transpose_b"):
            b = np.swapaxes(b, -1, -2)
        acc = np.matmul(a, b).view(np.int64)  # uint64 matmul: defined wrap-around
        prod_frac = types[0].frac + types[1].frac
        if len(args) == 3:
            acc = fp.add64(acc, fp.shl64(args[2], prod_frac - types[2].frac))
        if attrs.get("accumulate"):
            return acc
        return fp.saturate32(fp.shr_round(acc, prod_frac - out.frac))
