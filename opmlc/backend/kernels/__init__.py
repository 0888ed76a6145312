"""LLVM kernels, one module per IR op (`kernels/<op>.py` pairs with `opmlc/ir/ops/<op>.py`).

A kernel's `emit` writes the body of a function `void (ptr out, ptr in0, ptr in1, …)`
specialised to its node's static types and attributes. It must give exactly the bits of the
op's `evaluate` (tests/backend/test_kernels.py checks every op on random and edge values).
"""

from __future__ import annotations

from collections.abc import Callable

from llvmlite import ir

from opmlc.ir.types import TensorType

Emit = Callable[[ir.IRBuilder, ir.Value, list[ir.Value], list[TensorType], dict, TensorType], None]

KERNELS: dict[str, Emit] = {}


def kernel(op: str) -> Callable[[Emit], Emit]:
    def register(fn: Emit) -> Emit:
        KERNELS[op] = fn
        return fn

    return register


from opmlc.backend.kernels import (  # noqa: E402,F401
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
