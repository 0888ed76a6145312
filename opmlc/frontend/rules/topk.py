"""Rule for ONNX TopK (what scikit-learn's k-nearest-neighbours become under skl2onnx), lowered
onto existing IR ops rather than a sorting op of its own.

The k results are picked one at a time along the axis: step 0 is a reduce min (max) and a
reduce argmin (argmax), which takes the first extreme, so equal values come out lower index
first, as ONNX requires. Each later step masks the elements already taken: their values are
replaced by a sentinel (the dtype's largest raw value for the smallest, its smallest for the
largest), the extreme m of what is left is reduced, and the index is the first position whose
value equals m and which is not taken yet (argmax of that boolean as i32). The explicit "not
taken" test keeps the rule exact even when real values equal the sentinel. Values are copies of
the input's raw integers (same dtype and fractional bits), so TopK adds no rounding at all.

`sorted = 0` leaves the order open in ONNX; the sorted order is one valid choice. k must be a
compile-time constant (static shapes); each step costs about eight IR nodes over the axis, so k
is bounded by MAX_K.
"""

from __future__ import annotations

import numpy as np
import onnx

from opmlc.frontend.context import LoweringContext
from opmlc.frontend.rules import rule
from opmlc.frontend.rules.movement import norm_axes
from opmlc.ir.types import DType, TensorType

MAX_K = 256  # k steps of ~8 nodes each over the whole axis: beyond this, a sort op would be due
EXTREMES = {DType.FX32: (np.iinfo(np.int32).min, np.iinfo(np.int32).max),
            DType.I32: (np.iinfo(np.int32).min, np.iinfo(np.int32).max),
            DType.I64: (np.iinfo(np.int64).min, np.iinfo(np.int64).max)}


@rule("TopK")
def topk(ctx: LoweringContext, node: onnx.NodeProto) -> None:
    a = ctx.attrs()
    for name in a:
        if name not in ("axis", "k", "largest", "sorted"):
            raise ctx.unsupported(f"attribute {name!r} of TopK is not supported")
    if ctx.opset < 10:
        k = int(a["k"])
    else:
        k_arr = ctx.require_const(node.input[1], "TopK's k")
        if np.size(k_arr) != 1:
            raise ctx.unsupported(f"TopK's k has {np.size(k_arr)} values (one expected)")
        k = int(np.asarray(k_arr).ravel()[0])
    largest = bool(a.get("largest", 1))
    x = ctx.value(node.input[0])
    t = ctx.builder.type_of(x)
    if t.dtype not in EXTREMES:
        raise ctx.unsupported(f"TopK of a {t.dtype.value} tensor (only float and integer tensors)")
    shape = t.shape
    if not shape:
        raise ctx.unsupported("TopK of a scalar")
    axis = norm_axes([int(a.get("axis", -1))], len(shape))[0]
    if not 0 <= axis < len(shape):
        raise ctx.unsupported(f"TopK axis {a.get('axis')} for a rank-{len(shape)} input")
    n = shape[axis]
    if not 1 <= k <= n:
        raise ctx.unsupported(f"TopK with k = {k} along an axis of {n} (need 1 ≤ k ≤ {n})")
    if k > MAX_K:
        raise ctx.unsupported(f"TopK with k = {k} (at most {MAX_K}: each pick is a pass over the axis)")

    values_out = node.output[0]
    indices_out = node.output[1] if len(node.output) > 1 else ""
    base = values_out or indices_out
    frac = {"frac": t.frac} if t.dtype is DType.FX32 else {}
    pick, extreme = ("max", "argmax") if largest else ("min", "argmin")
    sentinel = EXTREMES[t.dtype][0 if largest else 1]
    raw = np.asarray([sentinel], dtype=t.dtype.numpy)
    sent = ctx.builder.add_initializer(f"{base}/sentinel", raw, TensorType(t.dtype, (1,), t.frac))
    positions = np.arange(n, dtype=np.int64).reshape([n if d == axis else 1 for d in range(len(shape))])
    where_i = ctx.const_ref(f"{base}/positions", positions, DType.I64)
    red = {"axes": [axis], "keepdims": 1}

    values, indices, taken = [], [], None
    for j in range(k):
        step = f"{base}/top{j}"
        if taken is None:
            m = ctx.emit("reduce", [x], {"kind": pick, **red, **frac}, f"{step}/value")
            idx = ctx.emit("reduce", [x], {"kind": extreme, **red, "select_last": 0}, f"{step}/index")
        else:
            cand = ctx.emit("where", [taken, sent, x], frac, f"{step}/left")
            m = ctx.emit("reduce", [cand], {"kind": pick, **red, **frac}, f"{step}/value")
            free = ctx.emit("unary", [taken], {"kind": "not"}, f"{step}/free")
            same = ctx.emit("binary", [x, m], {"kind": "eq"}, f"{step}/same")
            hit = ctx.emit("binary", [same, free], {"kind": "and"}, f"{step}/hit")
            hit = ctx.emit("cast", [hit], {"to": "i32"}, f"{step}/hit32")
            idx = ctx.emit("reduce", [hit], {"kind": "argmax", **red, "select_last": 0}, f"{step}/index")
        values.append(m)
        indices.append(idx)
        if j + 1 < k:
            now = ctx.emit("binary", [where_i, idx], {"kind": "eq"}, f"{step}/taken")
            taken = now if taken is None else ctx.emit("binary", [taken, now], {"kind": "or"}, f"{step}/taken_all")

    if values_out:
        ref = values[0] if k == 1 else ctx.emit("concat", values, {"axis": axis, **frac}, values_out)
        ctx.bind(values_out, ref)
    if indices_out:
        ref = indices[0] if k == 1 else ctx.emit("concat", indices, {"axis": axis}, indices_out)
        ctx.bind(indices_out, ref)
