"""qmatmul: x @ wᵀ (+ bias) with a quantized weight w (ops/_qweight.py), MatMul and Gemm with a
constant weight under `--weights int8|int4`.

Inputs: x fx32<fa> [..., M, K]; q i8/i4 [N, K]; scale fx32<fs> [N, ceil(K / bs)]; optionally a
zero point (q's dtype, scale's shape); optionally bias fx32<fc> [N] with fc ≤ fa + fs.
Attributes: `block_size` bs (K for one scale per output channel), `frac` fo with
0 ≤ fa + fs − fo ≤ 62. Output fx32<fo> [..., M, N].

Semantics, exactly matmul's with the dequantized integer weight w = (q − zp) · scale:
acc = Σ_k x[k] · w[n, k] + (bias << (fa + fs − fc)) in wrap-around int64; out =
saturate32(shr_round(acc, fa + fs − fo)). Wrap-around int64 arithmetic is a ring, so a kernel
may compute Σ_b scale_b · Σ_{k ∈ b} x_k · (q_k − zp_b) instead and get the same bits.
With the attribute `accumulate` true the output is acc itself, i64 (as matmul's).
"""

from __future__ import annotations

import numpy as np

from opmlc.ir import fixedpoint as fp
from opmlc.ir.ops import IRTypeError, Op, register
from opmlc.ir.ops._qweight import check_qweight, dequantize_int, split_inputs
from opmlc.ir.types import DType, TensorType

CHUNK = 1 << 22  # weight elements dequantized at once


@register
class QMatMul(Op):
    name = "qmatmul"
    arity = (3, 5)

    def infer(self, inputs: list[TensorType], attrs: dict) -> TensorType:
        self.check_arity(inputs)
        x, q, scale = inputs[:3]
        zp, bias = split_inputs(inputs, 1)
        if x.dtype is not DType.FX32 or len(x.shape) < 2:
            raise IRTypeError(f"qmatmul takes an fx32 operand of rank ≥ 2, got {x}")
        if len(q.shape) != 2:
            raise IRTypeError(f"qmatmul: the weight must be [N, K], got {q}")
        check_qweight(q, scale, zp, attrs.get("block_size"), "qmatmul")
        n, k = q.shape
        if x.shape[-1] != k:
            raise IRTypeError(f"qmatmul inner dimensions differ: {x} and weight {q}")
        if bias is not None and (bias.dtype is not DType.FX32 or bias.shape != (n,) or bias.frac > x.frac + scale.frac):
            raise IRTypeError(f"qmatmul bias must be fx32 [{n}] with at most {x.frac + scale.frac} bits, got {bias}")
        fo = attrs["frac"]
        if not 0 <= x.frac + scale.frac - fo <= 62:
            raise IRTypeError(f"qmatmul output bits {fo} out of range for {x} and scale {scale}")
        if attrs.get("accumulate"):
            return TensorType(DType.I64, (*x.shape[:-1], n))
        return TensorType(DType.FX32, (*x.shape[:-1], n), fo)

    def evaluate(self, args: list[np.ndarray], types: list[TensorType], attrs: dict, out: TensorType) -> np.ndarray:
        zp_t, bias_t = split_inputs(types, 1)
        zp = args[3] if zp_t is not None else None
        bias = args[-1] if bias_t is not None else None
        x = fp.as_i64(args[0]).astype(np.uint64)
        n, k = types[1].shape
        acc = np.empty((*x.shape[:-1], n), np.int64)
        step = max(1, CHUNK // max(1, k))  # output channels at a time: w is never whole in int64
        for r0 in range(0, n, step):
            rows = slice(r0, min(n, r0 + step))
            w = dequantize_int(args[1], args[2], zp, attrs["block_size"], rows)  # exact int64
            acc[..., rows] = np.matmul(x, w.astype(np.uint64).T).view(np.int64)  # uint64: defined wrap-around
        prod_frac = types[0].frac + types[2].frac
        if bias is not None:
            acc = fp.add64(acc, fp.shl64(bias, prod_frac - bias_t.frac))
        if attrs.get("accumulate"):
            return acc
        return fp.saturate32(fp.shr_round(acc, prod_frac - out.frac))
