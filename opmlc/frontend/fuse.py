"""A graph rewrite before lowering: BatchNormalization folded into the Conv or Gemm before it.

When a BatchNormalization (inference form: one output) reads the only output of a Conv (or a
Gemm with transB = 1 or 0, alpha = beta = 1) that no other node or graph output uses, and the
weights, bias and all four BN parameters are initializers, the pair becomes one Conv/Gemm:
scale = γ / sqrt(var + ε), W' = W · scale (per output channel), b' = (b − mean) · scale + β.
This is done in float64 on the float model, before quantization, so the folded model is the
same function up to float rounding. Anything else is left for the BatchNormalization rule.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from opmlc.frontend.initializers import WeightSource


def fuse_batchnorm(model: onnx.ModelProto, source: WeightSource) -> onnx.ModelProto:
    """Rewrite `model` in place, reading the initializers of each fused pair through `source`."""
    g = model.graph
    inits = {t.name: t for t in g.initializer}
    producer = {o: n for n in g.node for o in n.output}
    uses: dict[str, int] = {}
    for n in g.node:
        for i in n.input:
            uses[i] = uses.get(i, 0) + 1
    for o in g.output:
        uses[o.name] = uses.get(o.name, 0) + 1
    changed = False
    for bn in list(g.node):
        if bn.op_type != "BatchNormalization" or len([o for o in bn.output if o]) != 1:
            continue
        if any(a.name == "training_mode" and helper.get_attribute_value(a) for a in bn.attribute):
            continue  # batch statistics, not the stored ones: the rule computes them
        prev = producer.get(bn.input[0])
        if prev is None or prev.op_type not in ("Conv", "Gemm") or uses.get(bn.input[0], 0) != 1:
            continue
        if not all(name in inits for name in bn.input[1:5]) or prev.input[1] not in inits:
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in prev.attribute}
        if prev.op_type == "Gemm" and (attrs.get("transA", 0) or attrs.get("alpha", 1.0) != 1.0
                                       or attrs.get("beta", 1.0) != 1.0):
            continue
        has_bias = len(prev.input) > 2 and prev.input[2]
        if has_bias and prev.input[2] not in inits:
            continue
        eps = next((helper.get_attribute_value(a) for a in bn.attribute if a.name == "epsilon"), 1e-5)
        gamma, beta, mean, var = (source.array(n).astype(np.float64) for n in bn.input[1:5])
        scale = gamma / np.sqrt(var + eps)
        w = source.array(prev.input[1]).astype(np.float64)
        m = scale.shape[0]
        if prev.op_type == "Conv":
            w2 = w * scale.reshape((m,) + (1,) * (w.ndim - 1))
        elif attrs.get("transB", 0):
            w2 = w * scale[:, None]
        else:
            w2 = w * scale[None, :]
        b = source.array(prev.input[2]).astype(np.float64) if has_bias else np.zeros(m)
        if b.shape != (m,):
            continue
        b2 = (b - mean) * scale + beta
        dtype = source.array(prev.input[1]).dtype
        wname, bname = prev.output[0] + "/bn_w", prev.output[0] + "/bn_b"
        g.initializer.extend([numpy_helper.from_array(w2.astype(dtype), wname),
                              numpy_helper.from_array(b2.astype(dtype), bname)])
        inputs = [prev.input[0], wname, bname]
        del prev.input[:]
        prev.input.extend(inputs)
        prev.output[0] = bn.output[0]
        g.node.remove(bn)
        changed = True
    return model if not changed else model
