"""The fixed-point IR: types, graph, op set (each op's rule and golden semantics), interpreter."""

from opmlc.ir.graph import Graph, GraphBuilder, Node, Value
from opmlc.ir.types import DType, TensorType

__all__ = ["DType", "Graph", "GraphBuilder", "Node", "TensorType", "Value"]
