"""qconv: conv (ops/conv.py) with a quantized weight, Conv under `--weights int8|int4`.

Inputs: x fx32<fx> [N, C, *S]; q i8/i4 [M, C/group, *K]; scale fx32<fs> [M, 1] (one scale per
output channel); optionally a zero point (q's dtype, [M, 1]); optionally bias fx32<fb> [M]
with fb ≤ fx + fs. Attributes: conv's (`strides`, `dilations`, `pads`, `group`, `frac`) and
`block_size`, which must be the whole reduction C/group · prod(K) (per output channel).

Semantics: exactly conv's with the integer weight w = (q − zp) · scale (ops/_qweight.py), so a
kernel may sum x · (q − zp) over the window and multiply by the channel's scale once (the
ring identity of wrap-around int64 arithmetic).
"""

from __future__ import annotations

import math

import numpy as np

from opmlc.ir.ops import IRTypeError, Op, get_op, register
from opmlc.ir.ops._qweight import check_qweight, dequantize_int, split_inputs
from opmlc.ir.types import DType, TensorType


@register
class QConv(Op):
    name = "qconv"
    arity = (3, 5)

    def infer(self, inputs: list[TensorType], attrs: dict) -> TensorType:
        self.check_arity(inputs)
        x, q, scale = inputs[:3]
        zp, bias = split_inputs(inputs, 1)
        check_qweight(q, scale, zp, attrs.get("block_size"), "qconv")
        if attrs["block_size"] != math.prod(q.shape[1:]):
            raise IRTypeError("qconv takes one scale per output channel (block_size = the whole reduction)")
        w = TensorType(DType.FX32, q.shape, scale.frac)
        return get_op("conv").infer([x, w] + ([bias] if bias is not None else []), attrs)

    def evaluate(self, args: list[np.ndarray], types: list[TensorType], attrs: dict, out: TensorType) -> np.ndarray:
        zp_t, bias_t = split_inputs(types, 1)
        zp = args[3] if zp_t is not None else None
        w = dequantize_int(args[1], args[2], zp, attrs["block_size"]).reshape(types[1].shape)
        # |w| < 2^39 always; the frontend keeps it below 2^31, as conv's int32 weights are
        w_t = TensorType(DType.FX32, types[1].shape, types[2].frac)
        conv_args = [args[0], w] + ([args[-1]] if bias_t is not None else [])
        conv_types = [types[0], w_t] + ([bias_t] if bias_t is not None else [])
        return get_op("conv").evaluate(conv_args, conv_types, attrs, out)
