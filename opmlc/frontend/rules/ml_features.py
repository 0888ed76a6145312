"""Rule for ONNX-ML ArrayFeatureExtractor: elements picked along the last axis by index.

skl2onnx emits it to turn class indices into labels (MLPClassifier, k-nearest-neighbours: the
data is the constant class or training-label list, the indices come from ArgMax or TopK at
run time) and to pick score columns (SVC's one-vs-rest scores: constant indices). It lowers
onto Gather along the last axis with the indices flattened, as onnxruntime reads them: the
output is X.shape[:-1] + [number of indices], and [1, number of indices] for a 1-D X.

Constant indices become views (frontend/rules/movement.py); run-time indices the IR `gather`,
whose rule for an index outside the data (a zero slice) stands where onnxruntime raises an
error — an index from ArgMax/TopK over as many columns as there are labels never is.
"""

from __future__ import annotations

import numpy as np
import onnx

from opmlc.frontend.context import Const, LoweringContext
from opmlc.frontend.rules import RULES
from opmlc.frontend.rules.ml import ml_rule
from opmlc.frontend.rules.shape import reshape_to


@ml_rule("ArrayFeatureExtractor")
def array_feature_extractor(ctx: LoweringContext, node: onnx.NodeProto) -> None:
    if ctx.attrs():
        raise ctx.unsupported(f"attribute(s) {sorted(ctx.attrs())} of ArrayFeatureExtractor")
    x, y = node.input[0], node.input[1]
    out = node.output[0]
    data = ctx.const(x)
    if data is not None and data.dtype.kind in "OSU":
        raise ctx.unsupported("ArrayFeatureExtractor of strings (string class labels); only numeric labels")
    shape = ctx.shape_of(x)
    if not shape:
        raise ctx.unsupported("ArrayFeatureExtractor of a scalar")
    n = int(np.prod(ctx.shape_of(y)))
    flat = f"{out}/indices"
    idx = ctx.const(y)
    if idx is not None:
        idx = np.asarray(idx, dtype=np.int64).reshape(n)
        if np.any((idx < 0) | (idx >= shape[-1])):
            raise ctx.unsupported(f"ArrayFeatureExtractor index out of range 0..{shape[-1] - 1}")
        ctx.bind(flat, Const(idx))
    else:
        reshape_to(ctx, y, (n,), flat)
    picked = f"{out}/picked"
    saved = ctx.node
    ctx.node = onnx.helper.make_node("Gather", [x, flat], [picked], name=saved.name, axis=len(shape) - 1)
    RULES["Gather"](ctx, ctx.node)  # rules read their attributes from ctx.node
    ctx.node = saved
    reshape_to(ctx, picked, (1, n) if len(shape) == 1 else (*shape[:-1], n), out)
