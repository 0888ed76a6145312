"""Element and tensor types of the fixed-point IR (DESIGN "Fixed-point IR").

`fx32` holds round(x · 2^frac) in an int32; `i32`/`i64` are plain integers (i64 only where
ONNX needs indices); `bool` is one byte 0/1. `f32` holds the IEEE-754 binary32 bit pattern of a
float in an int32: only graph inputs that tree ensembles alone read have it (their splits then
compare exactly as float32 does, see ops/tree_ensemble.py); no op does arithmetic on it. The byte encoding (big-endian) is what tensor
roots and the MIPS program see.

`i8` and `i4` are the integers of quantized weights (docs/DESIGN.md "Quantized weights"): `i8`
is one signed byte; `i4` is a signed 4-bit integer in −8..7, packed two per byte in row-major
order (element 2i in the high nibble of byte i, 2i+1 in the low one; an odd count leaves the
last low nibble 0). The interpreter holds an i4 tensor unpacked, one element per int8; its
committed encoding, native buffer and MIPS region are the packed bytes (`encode`/`decode`), so
an i4 tensor costs ceil(numel/2) bytes (`TensorType.nbytes`).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from math import prod

import numpy as np


class DType(StrEnum):
    FX32 = "fx32"
    I32 = "i32"
    I64 = "i64"
    BOOL = "bool"
    F32 = "f32"  # float32 bit patterns, compared by tree_ensemble only
    I8 = "i8"  # quantized weights: one signed byte
    I4 = "i4"  # quantized weights: signed 4 bits, two per byte (packed)

    @property
    def bits(self) -> int:
        """Bits per element in the committed encoding."""
        return {"fx32": 32, "i32": 32, "i64": 64, "bool": 8, "f32": 32, "i8": 8, "i4": 4}[self.value]

    @property
    def itemsize(self) -> int:
        """Bytes per element of a byte-aligned type (i4 has none: see TensorType.nbytes)."""
        if self is DType.I4:
            raise ValueError("i4 elements are half a byte; use TensorType.nbytes")
        return self.bits // 8

    @property
    def numpy(self) -> np.dtype:
        """The native-endian numpy dtype the interpreter computes with (i4: one int8 per element)."""
        return np.dtype({"fx32": np.int32, "i32": np.int32, "i64": np.int64, "bool": np.bool_,
                         "f32": np.int32, "i8": np.int8, "i4": np.int8}[self.value])

    @property
    def big_endian(self) -> np.dtype:
        """The dtype of the committed byte encoding (i4: the packed bytes, see `encode`)."""
        return np.dtype({"fx32": ">i4", "i32": ">i4", "i64": ">i8", "bool": "u1", "f32": ">i4",
                         "i8": "i1", "i4": "u1"}[self.value])

    @property
    def quantized(self) -> bool:
        """An integer type of quantized weights (i8, i4)."""
        return self in (DType.I8, DType.I4)

    @property
    def byte_oriented(self) -> bool:
        """Whether a native buffer of this type is its committed encoding byte for byte (one-byte
        and packed types: no byte order), so a build maps its weights straight from the tensor
        store (docs/DESIGN.md "The native build ahead of time")."""
        return self in (DType.I8, DType.I4, DType.BOOL)

    @property
    def int_range(self) -> tuple[int, int]:
        """The values an i8/i4 element holds."""
        return {"i8": (-128, 127), "i4": (-8, 7)}[self.value]


MAX_FRAC = 30  # nonlinear kernels convert to Q30 internally; more bits would not fit


@dataclass(frozen=True)
class TensorType:
    """A static shape and element type; `frac` is the fractional bits of an fx32 tensor."""

    dtype: DType
    shape: tuple[int, ...]
    frac: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", tuple(int(d) for d in self.shape))
        object.__setattr__(self, "frac", int(self.frac))
        if self.dtype is not DType.FX32 and self.frac != 0:
            raise ValueError(f"only fx32 tensors have fractional bits, not {self.dtype.value}")
        if not 0 <= self.frac <= MAX_FRAC:
            raise ValueError(f"fractional bits must be in 0..{MAX_FRAC}, not {self.frac}")
        if any(d < 0 for d in self.shape):
            raise ValueError(f"negative dimension in shape {self.shape}")

    @property
    def numel(self) -> int:
        return prod(self.shape)

    @property
    def nbytes(self) -> int:
        """Bytes of the committed encoding (unpadded): ceil(numel / 2) for i4."""
        return (self.numel * self.dtype.bits + 7) // 8

    def with_shape(self, shape: tuple[int, ...]) -> TensorType:
        return TensorType(self.dtype, tuple(shape), self.frac)

    def __str__(self) -> str:
        elem = f"fx32<{self.frac}>" if self.dtype is DType.FX32 else self.dtype.value
        return f"{elem}[{','.join(map(str, self.shape))}]"

    def to_json(self) -> dict:
        return {"dtype": self.dtype.value, "shape": list(self.shape), "frac": self.frac}

    @classmethod
    def from_json(cls, d: dict) -> TensorType:
        return cls(DType(d["dtype"]), tuple(d["shape"]), d.get("frac", 0))


def pack_i4(values: np.ndarray) -> np.ndarray:
    """Row-major i4 elements (ints in −8..7) → uint8 bytes, element 2i in byte i's high nibble."""
    flat = np.asarray(values).reshape(-1).astype(np.uint8) & 0x0F
    if flat.size % 2:
        flat = np.concatenate([flat, np.zeros(1, np.uint8)])
    return (flat[0::2] << 4) | flat[1::2]


def unpack_i4(packed: np.ndarray | bytes, numel: int) -> np.ndarray:
    """The inverse of pack_i4: `numel` sign-extended elements as int8."""
    b = np.frombuffer(packed, np.uint8) if isinstance(packed, bytes | bytearray | memoryview) else np.asarray(packed, np.uint8)
    b = b.reshape(-1)[: (numel + 1) // 2]
    pair = np.empty((b.size, 2), np.int8)
    pair[:, 0] = (b.view(np.int8) >> 4)  # arithmetic shift sign-extends the high nibble
    pair[:, 1] = ((b << 4).view(np.int8) >> 4)
    return pair.reshape(-1)[:numel].copy()


def encode(data: np.ndarray, t: TensorType) -> bytes:
    """The tensor's committed encoding, unpadded: big-endian elements in row-major order, an i4
    tensor's packed bytes."""
    arr = np.asarray(data)
    if arr.shape != t.shape:
        raise ValueError(f"tensor of shape {arr.shape} does not match its type {t}")
    if t.dtype is DType.I4:
        return pack_i4(arr).tobytes()
    return np.ascontiguousarray(arr, dtype=t.dtype.big_endian).tobytes()


def decode(raw: bytes, t: TensorType) -> np.ndarray:
    """The interpreter's array of a tensor from its encoding (the first t.nbytes bytes of `raw`)."""
    if t.dtype is DType.I4:
        return unpack_i4(bytes(raw[: t.nbytes]), t.numel).reshape(t.shape)
    arr = np.frombuffer(raw[: t.nbytes], dtype=t.dtype.big_endian).reshape(t.shape)
    return arr.astype(t.dtype.numpy)


def native_buffer(data: np.ndarray, t: TensorType) -> np.ndarray:
    """The buffer a native kernel reads: native-endian elements, an i4 tensor's packed bytes."""
    if t.dtype is DType.I4:
        return pack_i4(data)
    return np.array(data, dtype=t.dtype.numpy, order="C")  # np.array keeps 0-d values 0-d
