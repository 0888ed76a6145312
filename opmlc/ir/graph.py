"""The fixed-point IR graph: values, single-output nodes in topological order, the verifier.

Values are numbered as DESIGN's graph trace numbers them: graph inputs first, then
initializers (in order of first use), then node outputs (node i's output is value
`first_node_value + i`). `GraphBuilder` lets the frontend add things in any order and
renumbers them canonically once, in `build()`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from opmlc.ir.initializers import held
from opmlc.ir.ops import IRTypeError, get_op
from opmlc.ir.types import TensorType

ValueKind = Literal["input", "init", "node"]


@dataclass
class Value:
    id: int
    name: str
    type: TensorType
    kind: ValueKind


@dataclass
class Node:
    op: str
    inputs: list[int]
    output: int
    attrs: dict = field(default_factory=dict)
    name: str = ""


@dataclass
class Graph:
    """A verified, canonically numbered IR graph with its (integer) initializer data."""

    name: str
    values: list[Value]
    nodes: list[Node]
    inputs: list[int]
    outputs: list[int]
    initializers: dict[int, np.ndarray]  # a loaded build's: an ir.initializers.Initializers mapping

    @property
    def first_node_value(self) -> int:
        return len(self.values) - len(self.nodes)

    def node_of(self, value_id: int) -> int | None:
        i = value_id - self.first_node_value
        return i if i >= 0 else None

    def input_types(self, node: Node) -> list[TensorType]:
        return [self.values[i].type for i in node.inputs]

    def verify(self) -> None:
        """Check numbering, topological order, types against each op's rule, and data shapes."""
        n_in = len(self.inputs)
        n_init = len(self.initializers)
        if self.inputs != list(range(n_in)):
            raise IRTypeError("graph inputs must be values 0..n_inputs-1")
        if sorted(self.initializers) != list(range(n_in, n_in + n_init)):
            raise IRTypeError("initializers must follow the inputs")
        if len(self.values) != n_in + n_init + len(self.nodes):
            raise IRTypeError("every value must be an input, an initializer or a node output")
        for v_id, v in enumerate(self.values):
            if v.id != v_id:
                raise IRTypeError(f"value %{v_id} is numbered {v.id}")
        for v_id in self.initializers:
            data = held(self.initializers, v_id)  # an i4 weight's packed bytes are not unpacked
            t = self.values[v_id].type
            if data.shape != t.shape or data.dtype != t.dtype.numpy:
                raise IRTypeError(f"initializer %{v_id} data does not match its type {t}")
        for i, node in enumerate(self.nodes):
            out = self.first_node_value + i
            if node.output != out:
                raise IRTypeError(f"node {i} must define value %{out}")
            for v in node.inputs:
                if not 0 <= v < out:
                    raise IRTypeError(f"node {i} ({node.op}) uses %{v} before it is defined")
            want = get_op(node.op).infer(self.input_types(node), node.attrs)
            if want != self.values[out].type:
                raise IRTypeError(
                    f"node {i} ({node.op}) output is {self.values[out].type}, its rule gives {want}"
                )
        for v in self.outputs:
            if not 0 <= v < len(self.values):
                raise IRTypeError(f"graph output %{v} is not a value")

    def to_text(self) -> str:
        """The readable text form (`opmlc compile --emit ir`)."""
        lines = [f"graph {self.name} {{"]
        for v in self.values[: self.first_node_value]:
            lines.append(f"  %{v.id} = {v.kind} {v.name!r} : {v.type}")
        for node in self.nodes:
            args = ", ".join(f"%{i}" for i in node.inputs)
            attrs = {k: v for k, v in node.attrs.items() if k != "frac"}
            attr_text = " {" + ", ".join(f"{k}={v}" for k, v in attrs.items()) + "}" if attrs else ""
            out = self.values[node.output]
            note = f"  # {out.name}" if out.name else ""
            lines.append(f"  %{node.output} = {node.op}({args}){attr_text} : {out.type}{note}")
        lines.append("  return " + ", ".join(f"%{i}" for i in self.outputs))
        lines.append("}")
        return "\n".join(lines) + "\n"

    def to_json(self) -> dict:
        """Structure only; initializer data is stored by tensor root (see opmlc.artifact)."""
        return {
            "name": self.name,
            "values": [
                {"id": v.id, "name": v.name, "kind": v.kind, **v.type.to_json()} for v in self.values
            ],
            "nodes": [
                {"op": n.op, "inputs": n.inputs, "output": n.output, "attrs": n.attrs, "name": n.name}
                for n in self.nodes
            ],
            "inputs": self.inputs,
            "outputs": self.outputs,
        }

    @classmethod
    def from_json(cls, d: dict, initializers: dict[int, np.ndarray]) -> Graph:
        values = [Value(v["id"], v["name"], TensorType.from_json(v), v["kind"]) for v in d["values"]]
        nodes = [Node(n["op"], n["inputs"], n["output"], n["attrs"], n.get("name", "")) for n in d["nodes"]]
        g = cls(d["name"], values, nodes, d["inputs"], d["outputs"], initializers)
        g.verify()
        return g


class GraphBuilder:
    """Accumulates inputs, initializers and nodes with provisional ids; `build` renumbers."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._types: list[TensorType] = []
        self._names: list[str] = []
        self._inputs: list[int] = []
        self._inits: dict[int, np.ndarray] = {}
        self._nodes: list[tuple[str, list[int], dict, str, int]] = []
        self._outputs: list[int] = []

    def type_of(self, ref: int) -> TensorType:
        return self._types[ref]

    def _new(self, name: str, t: TensorType) -> int:
        self._types.append(t)
        self._names.append(name)
        return len(self._types) - 1

    def add_input(self, name: str, t: TensorType) -> int:
        ref = self._new(name, t)
        self._inputs.append(ref)
        return ref

    def add_initializer(self, name: str, data: np.ndarray, t: TensorType) -> int:
        if t.dtype.quantized and np.size(data):
            lo, hi = t.dtype.int_range
            if np.min(data) < lo or np.max(data) > hi:
                raise IRTypeError(f"initializer {name} holds values outside {t.dtype.value}'s range {lo}..{hi}")
        # no copy of an array already so (keeps 0-d arrays 0-d): the frontend's memoised weights
        # (frontend/context.py WeightMemo) are shared with the graph, never written
        data = np.asarray(data, dtype=t.dtype.numpy, order="C")
        if data.shape != t.shape:
            raise IRTypeError(f"initializer {name} has shape {data.shape}, type says {t}")
        ref = self._new(name, t)
        self._inits[ref] = data
        return ref

    def add_node(self, op: str, inputs: list[int], attrs: dict | None = None, name: str = "") -> int:
        attrs = dict(attrs or {})
        out_type = get_op(op).infer([self._types[i] for i in inputs], attrs)
        ref = self._new(name, out_type)
        self._nodes.append((op, list(inputs), attrs, name, ref))
        return ref

    def is_node_output(self, ref: int) -> bool:
        return ref not in self._inputs and ref not in self._inits

    def mark_output(self, ref: int) -> None:
        self._outputs.append(ref)

    def build(self) -> Graph:
        order: dict[int, int] = {}
        for ref in self._inputs:
            order[ref] = len(order)
        for _, ins, _, _, _ in self._nodes:  # initializers in order of first use; unused ones drop
            for ref in ins:
                if ref in self._inits and ref not in order:
                    order[ref] = len(order)
        for ref in self._outputs:
            if ref in self._inits and ref not in order:
                order[ref] = len(order)
        for *_, out in self._nodes:
            order[out] = len(order)

        def kind(ref: int) -> ValueKind:
            return "input" if ref in self._inputs else "init" if ref in self._inits else "node"

        values = sorted(
            (Value(new, self._names[ref], self._types[ref], kind(ref)) for ref, new in order.items()),
            key=lambda v: v.id,
        )
        nodes = [
            Node(op, [order[i] for i in ins], order[out], attrs, name)
            for op, ins, attrs, name, out in self._nodes
        ]
        inits = {order[r]: d for r, d in self._inits.items() if r in order}
        g = Graph(self.name, values, nodes, [order[r] for r in self._inputs],
                  [order[r] for r in self._outputs], inits)
        g.verify()
        return g
