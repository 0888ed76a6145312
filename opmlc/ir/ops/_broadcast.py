"""Shape rule shared by the elementwise binary ops: numpy/ONNX multidirectional broadcasting."""

from __future__ import annotations

import numpy as np

from opmlc.ir.ops import IRTypeError


def broadcast_shape(a: tuple[int, ...], b: tuple[int, ...]) -> tuple[int, ...]:
    try:
        return tuple(np.broadcast_shapes(a, b))
    except ValueError:
        raise IRTypeError(f"shapes {list(a)} and {list(b)} do not broadcast") from None
