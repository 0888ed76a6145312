"""The IR's op set: one module per op, each holding the op's type rule and its semantics.

An op's meaning lives here once. `infer` is its shape and type rule (the verifier checks every
node against it); `evaluate` is its exact integer semantics in numpy (the golden interpreter
calls it). The LLVM kernel of op `x` is `opmlc/backend/kernels/x.py`, tested bit for bit
against `evaluate`.

The set is small on purpose (after tinygrad): the frontend lowers ONNX onto these ops, and a
new op is added only when no lowering onto existing ones serves.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from opmlc.ir.types import TensorType


class IRTypeError(ValueError):
    """A node's inputs or attributes do not fit its op's type rule."""


class Op:
    """Base of an IR op. Subclasses set `name` and implement `infer` and `evaluate`."""

    name: ClassVar[str]
    arity: ClassVar[tuple[int, int]] = (1, 1)  # min and max number of inputs

    def infer(self, inputs: list[TensorType], attrs: dict) -> TensorType:
        raise NotImplementedError

    def evaluate(
        self, args: list[np.ndarray], types: list[TensorType], attrs: dict, out: TensorType
    ) -> np.ndarray:
        """The exact result, given the input arrays and their types (for their fractional bits)."""
        raise NotImplementedError

    def check_arity(self, inputs: list) -> None:
        lo, hi = self.arity
        if not lo <= len(inputs) <= hi:
            raise IRTypeError(f"{self.name} takes {lo}..{hi} inputs, got {len(inputs)}")


OPS: dict[str, Op] = {}


def register(cls: type[Op]) -> type[Op]:
    OPS[cls.name] = cls()
    return cls


def get_op(name: str) -> Op:
    try:
        return OPS[name]
    except KeyError:
        raise IRTypeError(f"unknown IR op {name!r}") from None


# Importing the op modules registers them.
from opmlc.ir.ops import (  # noqa: E402,F401
    binary,
    cast,
    concat,
    conv,
    gather,
    matmul,
    norm,
    pool,
    psum,
    qconv,
    qgather,
    qmatmul,
    quantize,
    reduce,
    relu,
    reshape,
    softmax,
    tree_ensemble,
    unary,
    view,
    where,
)
