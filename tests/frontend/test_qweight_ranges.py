"""Range analysis of the q-ops: qmatmul's and qconv's intervals are those of matmul/conv on the
dequantized weights (whatever the chunking), qgather's the table's extremes and 0, the
accumulator rule limits the scale's bits, and on the quantized digits MLP every analysed
interval holds the values the interpreter computes on all 1797 digits."""

from __future__ import annotations

import numpy as np
import pytest

from opmlc.frontend import QuantPolicy, lower_model
from opmlc.frontend.ranges import Analysis, accumulator_bits
from opmlc.ir.fixedpoint import dequantize, quantize
from opmlc.ir.graph import GraphBuilder
from opmlc.ir.interpreter import run_graph
from opmlc.ir.types import DType, TensorType
from tests.conftest import MODELS


def fx(shape, frac):
    return TensorType(DType.FX32, tuple(shape), frac)


def pair_graph(op_attrs_conv: bool = False):
    """A q-op and its fx32 twin (the same integer weight) side by side."""
    rng = np.random.default_rng(0)
    g = GraphBuilder("pair")
    n, k, bs = 6, 40, 16
    x = g.add_input("x", fx((2, k), 16))
    q = rng.integers(-8, 8, (n, k)).astype(np.int8)
    s = rng.integers(1, 5000, (n, 3)).astype(np.int32)
    z = rng.integers(-8, 8, (n, 3)).astype(np.int8)
    w = (q.astype(np.int64) - np.repeat(z, bs, 1)[:, :k]) * np.repeat(s, bs, 1)[:, :k]
    b = rng.integers(-1000, 1000, (n,)).astype(np.int32)
    refs = [g.add_initializer("q", q, TensorType(DType.I4, (n, k))), g.add_initializer("s", s, fx((n, 3), 20)),
            g.add_initializer("z", z, TensorType(DType.I4, (n, 3)))]
    bias = g.add_initializer("b", b, fx((n,), 20))
    g.mark_output(g.add_node("qmatmul", [x, *refs, bias], {"block_size": bs, "frac": 12}, "yq"))
    wref = g.add_initializer("w", w.astype(np.int32), fx((n, k), 20))
    g.mark_output(g.add_node("matmul", [x, wref, bias], {"frac": 12, "transpose_b": True}, "yf"))
    tab = g.add_node("qgather", [refs[0], refs[1], refs[2], g.add_input("ids", TensorType(DType.I64, (3,)))],
                     {"block_size": bs, "frac": 12}, "emb")
    g.mark_output(tab)
    return g.build(), w / 2.0**20


def test_qmatmul_bounds_are_matmuls_on_the_dequantized_weight(monkeypatch):
    graph, w = pair_graph()
    a = Analysis(graph, [(-3.0, 5.0), (0.0, 1e9)])
    yq, yf, emb = (graph.nodes[i].output for i in range(3))
    assert a.iv[yq] == pytest.approx(a.iv[yf], rel=1e-12)
    assert a.iv[emb] == pytest.approx((min(0.0, w.min()), max(0.0, w.max())))
    monkeypatch.setattr(Analysis, "QW_CHUNK", 7)  # a row at a time
    b = Analysis(graph, [(-3.0, 5.0), (0.0, 1e9)])
    assert b.iv[yq] == pytest.approx(a.iv[yq], rel=1e-12)


def test_the_accumulator_rule_names_the_scale():
    graph, _ = pair_graph()
    a = Analysis(graph, [(-2.0**26, 2.0**26), (0.0, 1.0)])  # a huge input: 16 + 20 + log2(bound) > 62
    bits = accumulator_bits(a)
    assert "s" in bits and bits["s"] < 20 and "q" not in bits


@pytest.mark.parametrize("weights", ["int8", "int4"])
def test_analysed_intervals_hold_every_digit(digits, weights):
    x, _ = digits
    fe = lower_model(MODELS / "digits_mlp.onnx", QuantPolicy(analyse=True, weights=weights,
                                                           input_ranges={"input": (0.0, 1.0)}),
                     input_shapes={"input": x.shape})
    g = fe.graph
    assert [n.op for n in g.nodes] == ["qmatmul", "relu", "qmatmul"]
    sat: dict[int, int] = {}
    values = run_graph(g, [quantize(x, g.values[g.inputs[0]].type.frac)], sat)
    assert sat == {}
    for node in g.nodes:
        t = g.values[node.output].type
        real = dequantize(values[node.output], t.frac)
        lo, hi = fe.analysis.iv[node.output]
        slack = 2.0 ** -t.frac * 8  # the rounding of the fixed-point run itself
        assert lo - slack <= real.min() and real.max() <= hi + slack, node.op
