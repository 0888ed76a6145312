"""Element and tensor types of the fixed-point IR (DESIGN "Fixed-point IR").

`fx32` holds round(x · 2^frac) in an int32; `i32`/`i64` are plain integers (i64 only where
ONNX needs indices); `bool` is one byte 0/1. `f32` holds the IEEE-754 binary32 bit pattern of a
float in an int32: only graph inputs that tree ensembles alone read have it (their splits then
compare exactly as float32 does, see ops/tree_ensemble.py); no op does arithmetic on it. The byte encoding (big-endian) is what tensor
roots and the MIPS program see.
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

    @property
    def itemsize(self) -> int:
        return {"fx32": 4, "i32": 4, "i64": 8, "bool": 1, "f32": 4}[self.value]

    @property
    def numpy(self) -> np.dtype:
        """The native-endian numpy dtype the interpreter computes with."""
        return np.dtype({"fx32": np.int32, "i32": np.int32, "i64": np.int64, "bool": np.bool_,
                         "f32": np.int32}[self.value])

    @property
    def big_endian(self) -> np.dtype:
        """The dtype of the committed byte encoding."""
        return np.dtype({"fx32": ">i4", "i32": ">i4", "i64": ">i8", "bool": "u1", "f32": ">i4"}[self.value])


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
        return self.numel * self.dtype.itemsize

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
