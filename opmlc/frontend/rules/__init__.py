"""Lowering rules: one function per ONNX op, registered by op type, found by name.

A rule reads its node's inputs from the context (constants or IR values), emits IR nodes, and
binds the node's outputs. Nodes whose inputs are all constants are folded before any rule is
consulted (frontend/fold.py), so rules only see nodes with at least one runtime input.
"""

from __future__ import annotations

from collections.abc import Callable

import onnx

from opmlc.frontend.context import LoweringContext

Rule = Callable[[LoweringContext, onnx.NodeProto], None]
RULES: dict[str, Rule] = {}


def rule(*op_types: str) -> Callable[[Rule], Rule]:
    def register(fn: Rule) -> Rule:
        for op in op_types:
            RULES[op] = fn
        return fn

    return register


from opmlc.frontend.rules import (  # noqa: E402,F401  # noqa: E402,F401
    arith,
    attention,
    cnn,
    composite,
    decoder,
    elementwise,
    genai,
    linear,
    logs,
    losses,
    mha,
    ml,
    ml_features,
    ml_svm,
    movement,
    quantized,
    quantized_weights,
    recurrent,
    reduce,
    resize,
    rotary,
    scan,
    shape,
    softmax,
    topk,
)
