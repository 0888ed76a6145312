"""The psum op and the `accumulate` attribute: type rules, semantics, text form (ir/ops/psum.py)."""

from __future__ import annotations

import numpy as np
import pytest

from opmlc.ir.graph import GraphBuilder
from opmlc.ir.interpreter import run_graph
from opmlc.ir.ops import IRTypeError, get_op
from opmlc.ir.types import DType, TensorType

I64 = TensorType(DType.I64, (2, 3))


def test_psum_type_rule_refuses_what_it_cannot_sum():
    op = get_op("psum")
    assert op.infer([I64, I64], {"dtype": "fx32", "from_frac": 40, "frac": 16}) == TensorType(DType.FX32, (2, 3), 16)
    assert op.infer([I64], {"dtype": "i32"}) == TensorType(DType.I32, (2, 3))
    for ins, attrs, msg in [
        ([I64, TensorType(DType.I64, (3, 2))], {"dtype": "i64"}, "of one shape"),
        ([TensorType(DType.FX32, (2, 3), 4)], {"dtype": "i64"}, "i64 partial sums"),
        ([I64], {"dtype": "f32"}, "dtype must be"),
        ([I64], {"dtype": "i64", "divisor": 0}, "divisor"),
        ([I64], {"dtype": "fx32", "from_frac": 0, "frac": 31}, "from_frac"),
        ([], {"dtype": "i64"}, "inputs"),
    ]:
        with pytest.raises(IRTypeError, match=msg):
            op.infer(ins, attrs)


def test_psum_sums_in_wrapping_int64_then_finishes():
    g = GraphBuilder("t")
    a, b = g.add_input("a", I64), g.add_input("b", I64)
    g.mark_output(g.add_node("psum", [a, b], {"dtype": "fx32", "from_frac": 4, "frac": 2, "divisor": 3}, "y"))
    graph = g.build()
    x = np.array([[2**63 - 1, 10, -7], [1 << 40, 0, 5]], np.int64)
    y = np.array([[1, 20, 0], [0, 0, 2]], np.int64)
    sat: dict[int, int] = {}
    out = run_graph(graph, [x, y], sat)[graph.outputs[0]]
    s = (x.astype(object) + y.astype(object))
    s = np.array([[(v + 2**63) % 2**64 - 2**63 for v in row] for row in s], dtype=object)  # int64 wrap
    q = [[(v // 3) + (2 * (v % 3) >= 3) for v in row] for row in s]  # round half up
    wide = [(v + 2) >> 2 for row in q for v in row]
    want = np.array([max(-2**31, min(2**31 - 1, v)) for v in wide], np.int64).reshape(2, 3)
    assert np.array_equal(out.astype(np.int64), want)
    assert sat == {0: 2}  # the wrapped sum INT64_MIN and (1 << 40) / 3 saturate, counted once each
    assert sum(not -2**31 <= v < 2**31 for v in wide) == 2
    assert "psum(%0, %1) {dtype=fx32, from_frac=4, divisor=3} : fx32<2>[2,3]" in graph.to_text()


def test_accumulate_gives_the_i64_accumulator():
    g = GraphBuilder("t")
    a = g.add_input("a", TensorType(DType.FX32, (1, 4), 8))
    w = g.add_initializer("w", np.array([[1, 2, 3, 4]], np.int32), TensorType(DType.FX32, (1, 4), 8))
    g.mark_output(g.add_node("matmul", [a, w], {"frac": 8, "transpose_b": True, "accumulate": True}, "y"))
    r = g.add_node("reduce", [a], {"kind": "mean", "axes": [1], "frac": 8, "accumulate": True}, "s")
    g.mark_output(r)
    graph = g.build()
    assert [graph.values[v].type for v in graph.outputs] == [TensorType(DType.I64, (1, 1)), TensorType(DType.I64, (1, 1))]
    vals = run_graph(graph, [np.array([[1 << 30, 1 << 30, -5, 7]], np.int32)])
    assert vals[graph.outputs[0]][0, 0] == (1 << 30) * 3 - 15 + 28  # no shift, no saturation
    assert vals[graph.outputs[1]][0, 0] == (1 << 31) + 2  # the sum, not the mean
    with pytest.raises(IRTypeError, match="no int64 accumulator"):
        get_op("reduce").infer([TensorType(DType.FX32, (4,), 8)], {"kind": "max", "axes": [0], "frac": 8,
                                                                    "accumulate": True})
