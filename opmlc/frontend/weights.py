"""Weight quantization for `--weights int8|int4` (docs/DESIGN.md "Quantized weights").

`quantize_weight` turns one float weight matrix into a quantized weight: integers q (int8, or
4-bit values held one per int8) with a float scale per output channel or per block of the
reduction axis, and optionally a zero point, round to nearest. It is a pure function of one
weight, reading it block of rows by block of rows, so a caller can stream a large model tensor
by tensor from a read-only memmap without a float copy of it. The frontend then rounds the
scale to fixed point (frontend/context.py `qweight_ref`) and the IR's q-ops use it.

Layout: the result is output-channel major, q [N, K] (row n holds the K reduction elements of
output n; a block is contiguous). `w` is given as [N, K], or as [K, N] with `transposed=True`
(ONNX MatMul's layout).

Symmetric (the default, no zero point): per block, the element m of largest magnitude maps
exactly onto qmin = −128 (8 bits) or −8 (4 bits): scale = m / qmin (negative when m > 0) and
q = clip(round(w / scale), qmin, qmax), so all 2^bits levels serve (as ggml's Q4_0 does; on the
tiny LLaMA's weights this lowers the 4-bit relative RMS error from 0.098 with scale =
max|w| / 7 to 0.086); an element of −m's sign and size clips to qmax, one step off.
Asymmetric (`symmetric=False`): the block's [min(w, 0), max(w, 0)] is mapped onto the full
signed range with a zero point zp, q = round(w / scale) + zp. Rounding is numpy's
round-half-to-even; a block of zeros gets scale 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

BITS = {"int8": 8, "int4": 4}
DEFAULT_BLOCK = {8: None, 4: 32}  # int8: per output channel; int4: blocks of 32
MIN_BLOCK = 16
CHUNK_ELEMENTS = 1 << 22  # floats converted at once (32 MiB of float64)


@dataclass
class WeightError:
    """The error quantization introduced, against the float weight; additive over weights."""

    numel: int = 0
    sum_sq: float = 0.0  # Σ w²
    sum_sq_err: float = 0.0  # Σ (w − ŵ)², ŵ the dequantized weight
    max_abs: float = 0.0  # max |w − ŵ|

    @property
    def rel_rms(self) -> float:
        """√(Σ (w − ŵ)² / Σ w²): the relative RMS error (0 for an all-zero weight)."""
        return math.sqrt(self.sum_sq_err / self.sum_sq) if self.sum_sq > 0 else 0.0

    def add(self, other: WeightError) -> None:
        self.numel += other.numel
        self.sum_sq += other.sum_sq
        self.sum_sq_err += other.sum_sq_err
        self.max_abs = max(self.max_abs, other.max_abs)

    def to_json(self) -> dict:
        """For the manifest, which must be byte-identical on every machine: the RMS comes from
        float sums whose last bits may depend on the order numpy adds in, so both figures are
        rounded to 6 significant digits (the max is exact; rounded alike for one format)."""
        return {"rel_rms": float(f"{self.rel_rms:.6g}"), "max_abs": float(f"{self.max_abs:.6g}"), "numel": self.numel}


@dataclass
class QuantizedWeight:
    q: np.ndarray  # int8 [N, K]: the integers (4-bit ones in −8..7)
    scale: np.ndarray  # float64 [N, nb], nb = ceil(K / block_size)
    zero_point: np.ndarray | None  # int8 [N, nb], or None (symmetric)
    bits: int  # 8 or 4
    block_size: int  # K for one scale per output channel
    error: WeightError = field(default_factory=WeightError)


def check_format(weights: str | None, block_size: int | None) -> tuple[int | None, int | None]:
    """(bits, block size) of a `--weights` / `--block-size` choice; ValueError with a one-line
    reason for a bad one. `block_size` None: the format's default."""
    if weights is None:
        if block_size is not None:
            raise ValueError("--block-size needs --weights int8|int4")
        return None, None
    if weights not in BITS:
        raise ValueError(f"--weights {weights}: must be one of {', '.join(BITS)}")
    bits = BITS[weights]
    if block_size is None:
        return bits, DEFAULT_BLOCK[bits]
    if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < MIN_BLOCK \
            or block_size & (block_size - 1):
        raise ValueError(f"--block-size {block_size}: must be a power of two ≥ {MIN_BLOCK} (16, 32, 64, 128, …)")
    return bits, block_size


def quantize_weight(w: np.ndarray, bits: int, block_size: int | None = None, *, symmetric: bool = True,
                    transposed: bool = False) -> QuantizedWeight:
    """Quantize one float weight (see the module docstring). `block_size` None: one scale per
    output channel; K not a multiple of it: the last block of each row is shorter."""
    if bits not in (8, 4):
        raise ValueError(f"bits must be 8 or 4, not {bits}")
    if w.ndim != 2:
        raise ValueError(f"quantize_weight takes a matrix, got shape {w.shape}")
    n, k = (w.shape[1], w.shape[0]) if transposed else w.shape
    bs = k if block_size is None else int(block_size)
    if bs < 1:
        raise ValueError(f"block size must be ≥ 1, not {bs}")
    nb = -(-k // bs) if k else 0
    qmax = (1 << (bits - 1)) - 1
    qmin = -qmax - 1
    q = np.empty((n, k), np.int8)
    scale = np.zeros((n, nb), np.float64)
    zp = None if symmetric else np.zeros((n, nb), np.int8)
    err = WeightError()
    pad = nb * bs - k
    step = max(1, CHUNK_ELEMENTS // max(1, k))
    for r0 in range(0, n, step):
        r1 = min(n, r0 + step)
        rows = np.asarray(w[:, r0:r1]).T if transposed else np.asarray(w[r0:r1])
        x = rows.astype(np.float64)
        if not np.all(np.isfinite(x)):
            raise ValueError("the weight holds a NaN or an infinity")
        xb = np.pad(x, ((0, 0), (0, pad))).reshape(r1 - r0, nb, bs)  # zeros never widen a block
        if symmetric:  # the block's element of largest magnitude maps exactly onto qmin
            big = np.take_along_axis(xb, np.abs(xb).argmax(axis=2)[..., None], axis=2)[..., 0]
            s = big / qmin
            z = np.zeros_like(s)
        else:
            lo, hi = np.minimum(xb.min(axis=2), 0.0), np.maximum(xb.max(axis=2), 0.0)
            s = (hi - lo) / (qmax - qmin)
            with np.errstate(divide="ignore", invalid="ignore"):
                z = np.where(s > 0, np.clip(np.rint(qmin - lo / s), qmin, qmax), 0.0)
        with np.errstate(divide="ignore", invalid="ignore"):
            qb = np.where(s[..., None] != 0, np.rint(xb / s[..., None]) + z[..., None], z[..., None])
        qb = np.clip(qb, qmin, qmax)
        deq = (qb - z[..., None]) * s[..., None]
        diff = (deq - xb).reshape(r1 - r0, -1)[:, :k]
        q[r0:r1] = qb.reshape(r1 - r0, -1)[:, :k].astype(np.int8)
        scale[r0:r1] = s
        if zp is not None:
            zp[r0:r1] = z.astype(np.int8)
        err.add(WeightError(x.size, float(np.square(x).sum()), float(np.square(diff).sum()),
                            float(np.abs(diff).max(initial=0.0))))
    return QuantizedWeight(q, scale, zp, bits, bs, err)


def block_peaks(qw: QuantizedWeight) -> np.ndarray:
    """max |q − zp| per block, [N, nb] int64, computed over CHUNK_ELEMENTS at a time (int16)."""
    n, k = qw.q.shape
    bs = qw.block_size
    nb = qw.scale.shape[1]
    out = np.zeros((n, nb), np.int64)
    step = max(1, CHUNK_ELEMENTS // max(1, k))
    for r0 in range(0, n, step):
        r1 = min(n, r0 + step)
        d = qw.q[r0:r1].astype(np.int16)
        if qw.zero_point is not None:
            d = d - np.repeat(qw.zero_point[r0:r1].astype(np.int16), bs, axis=1)[:, :k]
        d = np.pad(np.abs(d), ((0, 0), (0, nb * bs - k)))
        out[r0:r1] = d.reshape(r1 - r0, nb, bs).max(axis=2) if k else 0
    return out


def from_unsigned(q: np.ndarray, zero_point: np.ndarray | None, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """Unsigned integers (uint8, uint4 in 0..15) and their zero point as the IR's signed ones:
    both shifted by 2^(bits − 1), so q − zp is unchanged. A missing zero point is 2^(bits − 1)
    unsigned (ONNX's default for MatMulNBits), i.e. 0 signed."""
    half = 1 << (bits - 1)
    qs = (np.asarray(q).astype(np.int16) - half).astype(np.int8)
    zs = (np.full(1, half) if zero_point is None else np.asarray(zero_point)).astype(np.int16) - half
    return qs, zs.astype(np.int8)
