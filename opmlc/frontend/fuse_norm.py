"""A graph rewrite before lowering: RMSNorm written out of primitive ops becomes one
RMSNormalization node, lowered onto the IR's `norm` (an int64 variance and an exact integer
rsqrt, opmlc/ir/ops/norm.py) instead of five fixed-point steps that each round.

The chain LLaMA's reference code exports to (torch: `x * torch.rsqrt(x.pow(2).mean(-1,
keepdim=True) + eps) * w`):

    P = Pow(X, 2)   M = ReduceMean(P, axes=[-1], keepdims=1)   A = Add(M, eps)   S = Sqrt(A)
    Y = Mul(X, Div(1, S))  or  Mul(X, Reciprocal(S))  or  Div(X, S)
    optionally followed by Mul(Y, w) with w a constant of n (or 1) elements

with constant exponent, eps and 1 (initializers or Constant nodes), every intermediate used
once, and X's last dimension n known, becomes RMSNormalization(X, w or ones[n]; axis=-1,
epsilon=eps) writing the chain's last output. Operands of Add and Mul may come in either order.
Anything else is left alone and lowered op by op (rules/decoder.py's Pow, then Sqrt, Div…).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from opmlc.frontend.initializers import WeightSource


def fuse_rmsnorm(model: onnx.ModelProto, source: WeightSource) -> onnx.ModelProto:
    """Rewrite `model` in place; initializers are read through `source` only where a chain needs
    one (an exponent, an epsilon, a norm weight), never all of them."""
    g = model.graph
    nodes = list(g.node)
    const_nodes = {n.output[0]: n.attribute[0].t for n in nodes
                   if n.op_type == "Constant" and len(n.attribute) == 1 and n.attribute[0].name == "value"}

    def const(name: str) -> np.ndarray | None:
        if name in const_nodes:
            return numpy_helper.to_array(const_nodes[name])
        return source.array(name) if name in source else None

    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in nodes:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    outputs = {o.name for o in g.output}
    shapes = {v.name: [d.dim_value if d.HasField("dim_value") else 0 for d in v.type.tensor_type.shape.dim]
              for v in list(g.value_info) + list(g.input) + list(g.output)}

    def scalar(name: str, value: float | None = None) -> float | None:
        arr = const(name)
        if arr is None or arr.size != 1:
            return None
        v = float(arr.ravel()[0])
        return v if value is None or v == value else None

    def only_use(name: str) -> onnx.NodeProto | None:
        users = consumers.get(name, [])
        return users[0] if len(users) == 1 and name not in outputs else None

    def other(node: onnx.NodeProto, name: str) -> str:
        return node.input[1] if node.input[0] == name else node.input[0]

    removed: set[int] = set()
    for pw in nodes:
        if pw.op_type != "Pow" or scalar(pw.input[1], 2.0) is None:
            continue
        x = pw.input[0]
        n = (shapes.get(x) or [0])[-1]
        mean = only_use(pw.output[0])
        if n <= 0 or mean is None or mean.op_type != "ReduceMean":
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in mean.attribute}
        axes = attrs.get("axes")
        if axes is None and len(mean.input) > 1 and const(mean.input[1]) is not None:
            axes = const(mean.input[1]).ravel().tolist()
        rank = len(shapes[x])
        if axes is None or [a % rank for a in axes] != [rank - 1] or not attrs.get("keepdims", 1):
            continue
        add = only_use(mean.output[0])
        eps = scalar(other(add, mean.output[0])) if add is not None and add.op_type == "Add" else None
        sqrt = only_use(add.output[0]) if eps is not None else None
        if sqrt is None or sqrt.op_type != "Sqrt":
            continue
        inv = only_use(sqrt.output[0])
        if inv is None:
            continue
        chain = [pw, mean, add, sqrt]
        if inv.op_type == "Div" and inv.input[0] == x and inv.input[1] == sqrt.output[0]:
            last = inv
        elif (inv.op_type == "Reciprocal" or (inv.op_type == "Div" and inv.input[1] == sqrt.output[0]
                                              and scalar(inv.input[0], 1.0) is not None)):
            mul = only_use(inv.output[0])
            if mul is None or mul.op_type != "Mul" or other(mul, inv.output[0]) != x:
                continue
            chain.append(inv)
            last = mul
        else:
            continue
        weight = None
        nxt = only_use(last.output[0])
        if nxt is not None and nxt.op_type == "Mul":
            w = const(other(nxt, last.output[0]))
            if w is not None and w.size in (1, n) and w.shape[-1:] in ((), (1,), (n,)):
                weight = np.broadcast_to(w.ravel(), (n,)).astype(np.float32)
                chain.append(last)
                last = nxt
        if weight is None:
            weight = np.ones(n, dtype=np.float32)
        wname = last.output[0] + "/rms_scale"
        g.initializer.append(numpy_helper.from_array(np.ascontiguousarray(weight), wname))
        fused = helper.make_node("RMSNormalization", [x, wname], [last.output[0]],
                                 name=(last.name or last.output[0]) + "/rmsnorm", axis=-1, epsilon=eps)
        last.CopyFrom(fused)
        removed.update(id(c) for c in chain)
    if removed:
        keep = [onnx.NodeProto.FromString(n.SerializeToString()) for n in nodes if id(n) not in removed]
        del g.node[:]
        g.node.extend(keep)
    return model
