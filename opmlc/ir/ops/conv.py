"""conv: N-D convolution (1-D, 2-D, 3-D…) with groups, strides, pads and dilations, on fx32.

Inputs: x [N, C, *S] (frac fx), w [M, C/group, *K] (frac fw), optionally bias [M] (frac
fb ≤ fx + fw). Attributes: `strides`, `dilations` (one per spatial dim), `pads` (begins then
ends, ONNX's order), `group`, `frac` (fo, 0 ≤ fx + fw − fo ≤ 62). Output [N, M, *O] with
O = (S + pad_begin + pad_end − ((K − 1)·dilation + 1)) // stride + 1.

Semantics, exactly matmul's: acc = Σ x·w over the group's channels and the kernel window
(positions in the padding contribute nothing) + (bias << (fx + fw − fb)), in wrap-around int64
(any summation order gives the same bits); out = saturate32(shr_round(acc, fx + fw − fo)).
With the attribute `accumulate` true the output is acc itself, i64 (as matmul's).
"""

from __future__ import annotations

import itertools

import numpy as np

from opmlc.ir import fixedpoint as fp
from opmlc.ir.ops import IRTypeError, Op, register
from opmlc.ir.types import DType, TensorType


def conv_out(spatial, kernel, strides, pads, dilations) -> tuple[int, ...]:
    r = len(spatial)
    return tuple((spatial[i] + pads[i] + pads[r + i] - ((kernel[i] - 1) * dilations[i] + 1)) // strides[i] + 1
                 for i in range(r))


@register
class Conv(Op):
    name = "conv"
    arity = (2, 3)

    def infer(self, inputs: list[TensorType], attrs: dict) -> TensorType:
        self.check_arity(inputs)
        x, w = inputs[0], inputs[1]
        if any(t.dtype is not DType.FX32 for t in inputs):
            raise IRTypeError("conv takes fx32 operands")
        r = len(x.shape) - 2
        g = attrs["group"]
        if r < 1 or len(w.shape) != r + 2 or x.shape[1] != w.shape[1] * g or w.shape[0] % g:
            raise IRTypeError(f"conv: input {x} and weights {w} do not fit (group {g})")
        if len(attrs["strides"]) != r or len(attrs["dilations"]) != r or len(attrs["pads"]) != 2 * r:
            raise IRTypeError("conv: strides, dilations and pads must match the spatial rank")
        if min(attrs["strides"]) < 1 or min(attrs["dilations"]) < 1 or min(attrs["pads"]) < 0:
            raise IRTypeError("conv: strides and dilations must be ≥ 1, pads ≥ 0")
        if len(inputs) == 3 and (inputs[2].shape != (w.shape[0],) or inputs[2].frac > x.frac + w.frac):
            raise IRTypeError(f"conv bias must be [{w.shape[0]}] with at most {x.frac + w.frac} bits")
        out = conv_out(x.shape[2:], w.shape[2:], attrs["strides"], attrs["pads"], attrs["dilations"])
        if min(out, default=1) < 1:
            raise IRTypeError("conv: the kernel is larger than the padded input")
        if not 0 <= x.frac + w.frac - attrs["frac"] <= 62:
            raise IRTypeError(f"conv output bits {attrs['frac']} out of range")
        if attrs.get("accumulate"):  # the i64 accumulator (bias included): a chunk of a long reduction
            return TensorType(DType.I64, (x.shape[0], w.shape[0], *out))
        return TensorType(DType.FX32, (x.shape[0], w.shape[0], *out), attrs["frac"])

    def evaluate(
        self, args: list[np.ndarray], types: list[TensorType], attrs: dict, out: TensorType
    ) -> np.ndarray:
        x = fp.as_i64(args[0]).view(np.uint64)
        w = fp.as_i64(args[1]).view(np.uint64)
        r = x.ndim - 2
        st, dl, pads, g = attrs["strides"], attrs["dilations"], attrs["pads"], attrs["group"]
        xp = np.pad(x, [(0, 0), (0, 0)] + [(pads[i], pads[r + i]) for i in range(r)])
        o = out.shape[2:]
        n, m = out.shape[:2]
        cg, mg = x.shape[1] // g, m // g
        acc = np.zeros(out.shape, dtype=np.uint64)
        for kpos in itertools.product(*(range(k) for k in w.shape[2:])):
            sl = tuple(slice(kpos[i] * dl[i], kpos[i] * dl[i] + st[i] * (o[i] - 1) + 1, st[i]) for i in range(r))
            xs = xp[(slice(None), slice(None), *sl)]  # [N, C, *O]
            wk = w[(slice(None), slice(None), *kpos)]  # [M, C/g]
            for gi in range(g):
                part = np.einsum("mc,nc...->nm...", wk[gi * mg:(gi + 1) * mg], xs[:, gi * cg:(gi + 1) * cg])
                acc[:, gi * mg:(gi + 1) * mg] += part.astype(np.uint64)
        acc = acc.view(np.int64)
        prod_frac = types[0].frac + types[1].frac
        if len(args) == 3:
            bias = fp.shl64(args[2], prod_frac - types[2].frac)
            acc = fp.add64(acc, bias.reshape((1, m) + (1,) * r))
        if attrs.get("accumulate"):
            return acc
        return fp.saturate32(fp.shr_round(acc, prod_frac - out.frac))
