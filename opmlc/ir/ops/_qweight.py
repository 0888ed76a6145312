"""The quantized weight shared by qmatmul, qconv and qgather (docs/DESIGN.md "Quantized weights").

A quantized weight is three (or two) IR values: q [N, K] of dtype i8 or i4 (output-channel
major: row n holds the K reduction elements of output n), scale fx32<fs> [N, nb] and an optional
zero point [N, nb] of q's dtype, with nb = ceil(K / block_size) blocks along the reduction axis
(the last one shorter when block_size does not divide K; per output channel: one block of K).
Its exact integer value, the one definition every kernel reproduces:

    w[n, k] = (q[n, k] − zp[n, k // bs]) · scale[n, k // bs]      (int64, fractional bits fs)

The frontend chooses fs so that |q − zp| · |scale| < 2^31 (w fits where an fx32 weight would);
computed in int64 the product is exact whatever the values (|q − zp| ≤ 255, |scale| < 2^31).
"""

from __future__ import annotations

import numpy as np

from opmlc.ir.ops import IRTypeError
from opmlc.ir.types import DType, TensorType


def n_blocks(k: int, block_size: int) -> int:
    return -(-k // block_size) if k else 0


def check_qweight(q: TensorType, scale: TensorType, zp: TensorType | None, block_size: int, op: str) -> None:
    """Raise IRTypeError unless (q, scale, zp) is a quantized weight with `block_size`."""
    if not q.dtype.quantized:
        raise IRTypeError(f"{op}: the weight must be i8 or i4, got {q}")
    if len(q.shape) < 2:
        raise IRTypeError(f"{op}: the weight must have rank ≥ 2, got {q}")
    if not isinstance(block_size, int) or isinstance(block_size, bool) or block_size < 1:
        raise IRTypeError(f"{op}: block_size must be a positive integer, got {block_size!r}")
    n, k = q.shape[0], int(np.prod(q.shape[1:]))
    want = (n, n_blocks(k, block_size))
    if scale.dtype is not DType.FX32 or scale.shape != want:
        raise IRTypeError(f"{op}: the scale must be fx32 {list(want)}, got {scale}")
    if zp is not None and (zp.dtype is not q.dtype or zp.shape != want):
        raise IRTypeError(f"{op}: the zero point must be {q.dtype.value} {list(want)}, got {zp}")


def split_inputs(types: list[TensorType], q_index: int) -> tuple[TensorType | None, TensorType | None]:
    """The optional zero point and bias that follow q and its scale: an i8/i4 operand right
    after the scale is the zero point (check_qweight wants q's dtype), an fx32 one the bias."""
    rest = types[q_index + 2:]
    zp = bias = None
    if rest and rest[0].dtype.quantized:
        zp, rest = rest[0], rest[1:]
    if rest:
        bias, rest = rest[0], rest[1:]
    if rest:
        raise IRTypeError("too many operands after the quantized weight")
    return zp, bias


def has_zero_point(types: list[TensorType], q_index: int) -> bool:
    return len(types) > q_index + 2 and types[q_index + 2].dtype.quantized


def dequantize_int(q: np.ndarray, scale: np.ndarray, zp: np.ndarray | None, block_size: int,
                   rows: slice = slice(None)) -> np.ndarray:
    """w as exact int64 [n, K] for the rows `rows` of q (reshaped [N, K]); see the module docstring."""
    q2 = np.asarray(q).reshape(q.shape[0], -1)[rows].astype(np.int64)
    k = q2.shape[1]
    blk = np.arange(k) // block_size
    d = q2 - (np.asarray(zp)[rows].astype(np.int64)[:, blk] if zp is not None else 0)
    return d * np.asarray(scale)[rows].astype(np.int64)[:, blk]
