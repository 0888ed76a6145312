"""The graph's canonical numbering, its verifier (shapes, types, dangling values) and text form."""

from __future__ import annotations

import numpy as np
import pytest

from opmlc.ir.graph import Graph, GraphBuilder, Node
from opmlc.ir.ops import IRTypeError
from opmlc.ir.types import DType, TensorType


def mlp() -> Graph:
    b = GraphBuilder("mlp")
    x = b.add_input("x", TensorType(DType.FX32, (1, 4), 16))
    unused = b.add_initializer("unused", np.zeros((2,), np.int32), TensorType(DType.FX32, (2,), 16))
    w2 = b.add_initializer("w2", np.ones((3, 2), np.int32), TensorType(DType.FX32, (3, 2), 16))
    w1 = b.add_initializer("w1", np.ones((4, 3), np.int32), TensorType(DType.FX32, (4, 3), 16))
    h = b.add_node("matmul", [x, w1], {"frac": 16}, "h")
    r = b.add_node("relu", [h], {}, "r")
    y = b.add_node("matmul", [r, w2], {"frac": 16}, "y")
    b.mark_output(y)
    assert unused is not None
    return b.build()


def test_values_are_numbered_inputs_then_initializers_by_first_use_then_nodes():
    g = mlp()
    assert [v.name for v in g.values] == ["x", "w1", "w2", "h", "r", "y"]
    assert [v.kind for v in g.values] == ["input", "init", "init", "node", "node", "node"]
    assert g.first_node_value == 3 and g.outputs == [5]
    assert [n.output for n in g.nodes] == [3, 4, 5]


def test_text_form_shows_types_and_ops():
    text = mlp().to_text()
    assert "%3 = matmul(%0, %1) : fx32<16>[1,3]  # h" in text
    assert "return %5" in text


def test_verifier_rejects_a_use_before_definition():
    g = mlp()
    g.nodes[0] = Node("matmul", [0, 4], 3, {"frac": 16})
    with pytest.raises(IRTypeError, match="before it is defined"):
        g.verify()


def test_verifier_rejects_a_type_that_disagrees_with_the_op_rule():
    g = mlp()
    g.values[4].type = TensorType(DType.FX32, (1, 3), 8)
    with pytest.raises(IRTypeError, match="its rule gives"):
        g.verify()


def test_verifier_rejects_initializer_data_of_the_wrong_shape():
    g = mlp()
    g.initializers[1] = np.ones((3, 4), np.int32)
    with pytest.raises(IRTypeError, match="does not match"):
        g.verify()


def test_verifier_rejects_a_dangling_output():
    g = mlp()
    g.outputs = [17]
    with pytest.raises(IRTypeError, match="not a value"):
        g.verify()


def test_builder_rejects_mismatched_shapes():
    b = GraphBuilder("bad")
    x = b.add_input("x", TensorType(DType.FX32, (1, 4), 16))
    w = b.add_initializer("w", np.ones((5, 3), np.int32), TensorType(DType.FX32, (5, 3), 16))
    with pytest.raises(IRTypeError, match="inner dimensions"):
        b.add_node("matmul", [x, w], {"frac": 16})


def test_json_round_trip_preserves_the_graph():
    g = mlp()
    again = Graph.from_json(g.to_json(), g.initializers)
    assert again.to_text() == g.to_text()
