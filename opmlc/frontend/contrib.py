"""Output shapes of the com.microsoft ops opmlc lowers (rules/quantized.py), for step one of
the frontend (load.py): onnx's shape inference has no schema for onnxruntime's contrib ops, so
everything after such a node would be left without a static shape. `infer_contrib_shapes`
gives each such node's outputs their type and shape as value_info, and shape inference is run
again from there, until every contrib output has a shape."""

from __future__ import annotations

from collections.abc import Callable

import onnx
from onnx import helper

MS_DOMAIN = "com.microsoft"
Shape = tuple[int, list[int]]  # (ONNX element type, dims)


def _matmul_nbits(node: onnx.NodeProto, get: Callable[[str], Shape | None], attrs: dict) -> list[Shape] | None:
    a = get(node.input[0])
    return None if a is None else [(a[0], [*a[1][:-1], int(attrs["N"])])]


def _qgemm(node: onnx.NodeProto, get: Callable[[str], Shape | None], attrs: dict) -> list[Shape] | None:
    a, b = get(node.input[0]), get(node.input[3])
    if a is None or b is None or len(a[1]) != 2 or len(b[1]) != 2:
        return None
    m = a[1][1] if attrs.get("transA", 0) else a[1][0]
    n = b[1][0] if attrs.get("transB", 0) else b[1][1]
    y_zp = get(node.input[8]) if len(node.input) > 8 and node.input[8] else None
    elem = y_zp[0] if y_zp is not None else onnx.TensorProto.FLOAT
    return [(elem, [m, n])]


def _same_as_input(node: onnx.NodeProto, get: Callable[[str], Shape | None], attrs: dict) -> list[Shape] | None:
    """(Skip)SimplifiedLayerNormalization: output 0 (and Skip's sum, output 3) as the input."""
    a = get(node.input[0])
    if a is None:
        return None
    return [a, (onnx.TensorProto.FLOAT, [*a[1][:-1], 1]), (onnx.TensorProto.FLOAT, [*a[1][:-1], 1]), a]


def _gqa(node: onnx.NodeProto, get: Callable[[str], Shape | None], attrs: dict) -> list[Shape] | None:
    """GroupQueryAttention at static shapes: Y [B, S, heads·head], the present cache the shape of
    the past one (onnxruntime's shared buffer; rules/genai.py)."""
    q = get(node.input[0])
    past = get(node.input[3]) if len(node.input) > 3 and node.input[3] else None
    if q is None or past is None:
        return None
    hd = past[1][3]
    return [(q[0], [q[1][0], q[1][1], int(attrs["num_heads"]) * hd]), past, past]


def _same_shape(node: onnx.NodeProto, get: Callable[[str], Shape | None], attrs: dict) -> list[Shape] | None:
    """RotaryEmbedding: the output as the input."""
    a = get(node.input[0])
    return None if a is None else [a]


def _mha(node: onnx.NodeProto, get: Callable[[str], Shape | None], attrs: dict) -> list[Shape] | None:
    """MultiHeadAttention with 3-D query/key/value: output [B, S, v_hidden]; the present cache
    [B, heads, past + kv_seq, head] (the past concatenated with the new keys/values)."""
    q = get(node.input[0])
    k = get(node.input[1]) if len(node.input) > 1 and node.input[1] else None
    v = get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
    if q is None or k is None or v is None or len(q[1]) != 3 or len(k[1]) != 3 or len(v[1]) != 3:
        return None
    n = int(attrs["num_heads"])
    past = get(node.input[6]) if len(node.input) > 6 and node.input[6] else None
    p = past[1][2] if past is not None else 0
    b, kv_seq = k[1][0], k[1][1]
    present_k = (q[0], [b, n, p + kv_seq, k[1][2] // n])
    present_v = (q[0], [b, n, p + kv_seq, v[1][2] // n])
    return [(q[0], [q[1][0], q[1][1], v[1][2]]), present_k, present_v]


def _broadcast(node: onnx.NodeProto, get: Callable[[str], Shape | None], attrs: dict) -> list[Shape] | None:
    a, b = get(node.input[0]), get(node.input[3])
    if a is None or b is None:
        return None
    ra, rb = a[1][::-1], b[1][::-1]
    dims = [max(ra[i] if i < len(ra) else 1, rb[i] if i < len(rb) else 1) for i in range(max(len(ra), len(rb)))]
    return [(a[0], dims[::-1])]


def _global_pool(node: onnx.NodeProto, get: Callable[[str], Shape | None], attrs: dict) -> list[Shape] | None:
    x = get(node.input[0])
    if x is None:
        return None
    d = x[1]
    if attrs.get("channels_last", 0):
        return [(x[0], [d[0], *[1] * (len(d) - 2), d[-1]])]
    return [(x[0], [*d[:2], *[1] * (len(d) - 2)])]


SHAPES = {"MatMulNBits": _matmul_nbits, "QGemm": _qgemm, "QLinearAdd": _broadcast, "QLinearMul": _broadcast,
          "QLinearGlobalAveragePool": _global_pool, "SimplifiedLayerNormalization": _same_as_input,
          "SkipSimplifiedLayerNormalization": _same_as_input, "SkipLayerNormalization": _same_as_input,
          "GroupQueryAttention": _gqa, "RotaryEmbedding": _same_shape, "MultiHeadAttention": _mha}
MAX_ROUNDS = 1000


def infer_contrib_shapes(model: onnx.ModelProto, infer: Callable[[onnx.ModelProto], onnx.ModelProto]) -> onnx.ModelProto:
    """Run `infer` (onnx's shape inference), then type the outputs of contrib nodes whose inputs
    are known and infer again, until no contrib output is left untyped (or none can be typed)."""
    model = infer(model)
    for _ in range(MAX_ROUNDS):
        known: dict[str, Shape] = {}
        for vi in (*model.graph.input, *model.graph.value_info, *model.graph.output):
            tt = vi.type.tensor_type
            if tt.elem_type and tt.HasField("shape") and all(d.HasField("dim_value") for d in tt.shape.dim):
                known[vi.name] = (tt.elem_type, [d.dim_value for d in tt.shape.dim])
        for t in model.graph.initializer:
            known[t.name] = (t.data_type, list(t.dims))
        added = []
        for node in model.graph.node:
            fn = SHAPES.get(node.op_type) if node.domain == MS_DOMAIN else None
            if fn is None or all(o in known for o in node.output if o):
                continue
            shapes = fn(node, known.get, {a.name: helper.get_attribute_value(a) for a in node.attribute})
            if shapes is None:
                continue
            for name, (elem, dims) in zip(node.output, shapes, strict=False):
                if name and name not in known:
                    added.append(helper.make_tensor_value_info(name, elem, dims))
                    known[name] = (elem, dims)
        if not added:
            return model
        model.graph.value_info.extend(added)
        model = infer(model)
    return model
