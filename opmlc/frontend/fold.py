"""Compile-time evaluation of ONNX nodes whose inputs are all constants.

Shape computations (Shape, Gather on shapes, ConstantOfShape, Concat of dims…) and any other
purely constant subgraph are evaluated here with onnx's reference evaluator, in the model's
own opsets, so that they never reach the fixed-point IR.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx.reference import ReferenceEvaluator

# onnx's reference evaluator implements these only from opset 19 (float8 types and `saturate`
# were added then); for the integer types the earlier definitions (10, 13) mean the same.
FROM_19 = {"QuantizeLinear", "DequantizeLinear"}

# Ops whose result is not a function of their inputs, which must never be folded.
NONDETERMINISTIC = {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial", "Bernoulli"}


def can_fold(node: onnx.NodeProto, const_inputs: list[bool]) -> bool:
    return node.op_type not in NONDETERMINISTIC and all(const_inputs) and not _has_subgraph(node)


def _has_subgraph(node: onnx.NodeProto) -> bool:
    return any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute)


def evaluate(
    node: onnx.NodeProto, inputs: list[np.ndarray | None], opsets: list[onnx.OperatorSetIdProto]
) -> list[np.ndarray]:
    """Run one node on constant inputs (None for an omitted optional input)."""
    names = [f"in{i}" if x is not None else "" for i, x in enumerate(inputs)]
    outs = [f"out{i}" for i in range(len(node.output))]
    clone = onnx.helper.make_node(node.op_type, names, outs, domain=node.domain)
    clone.attribute.extend(node.attribute)
    if node.op_type in FROM_19 and node.domain in ("", "ai.onnx"):
        opsets = [onnx.helper.make_opsetid(o.domain, max(o.version, 19)) if o.domain in ("", "ai.onnx") else o
                  for o in opsets]
    ev = ReferenceEvaluator(_single_node_model(clone, inputs, opsets))
    feeds = {n: x for n, x in zip(names, inputs, strict=True) if n}
    return [np.asarray(r) for r in ev.run(None, feeds)]


def _single_node_model(node, inputs, opsets) -> onnx.ModelProto:
    graph_inputs = [
        onnx.helper.make_tensor_value_info(
            f"in{i}", onnx.helper.np_dtype_to_tensor_dtype(np.asarray(x).dtype), None
        )
        for i, x in enumerate(inputs)
        if x is not None
    ]
    graph_outputs = [onnx.helper.make_empty_tensor_value_info(o) for o in node.output]
    graph = onnx.helper.make_graph([node], "fold", graph_inputs, graph_outputs)
    return onnx.helper.make_model(graph, opset_imports=list(opsets))
