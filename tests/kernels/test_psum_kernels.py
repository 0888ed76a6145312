"""Partial sums' kernels against the interpreter, bit for bit and saturation counts included:
psum (random i64 partial sums at the int64 edges, every finish), and long matmul, qmatmul (i8,
i4, blocks, zero points, bias), conv (over its input channels) and reduce sum/mean rewritten into chunk nodes (`accumulate`)
and psum nodes by backend/psums.py at the smallest budget; natively, in the VM and in unicorn.
The rewritten graph's outputs are also the unsplit graph's."""

from __future__ import annotations

import numpy as np
import pytest

from opmlc.backend.parts import MIN_LOG2_BUDGET
from opmlc.backend.psums import split_reductions
from opmlc.ir.graph import GraphBuilder
from opmlc.ir.interpreter import run_graph
from opmlc.ir.types import DType, TensorType
from tests.kernels.test_kernels import check_all_backends, fx, rand_fx
from tests.kernels.test_qweight_kernels import qmatmul_graph

I64_EDGES = np.array([-(1 << 63), -(1 << 63) + 1, -1, 0, 1, (1 << 63) - 1, 1 << 40, -(1 << 40)], np.int64)


def rand_i64(rng, shape):
    size = int(np.prod(shape))
    wide = rng.integers(-(1 << 62), 1 << 62, size=size, dtype=np.int64) >> rng.integers(0, 62, size=size)
    return np.where(rng.random(size) < 0.2, rng.choice(I64_EDGES, size), wide).reshape(shape)


@pytest.mark.parametrize("attrs", [
    {"dtype": "fx32", "from_frac": 40, "frac": 16},
    {"dtype": "fx32", "from_frac": 16, "frac": 16},
    {"dtype": "fx32", "from_frac": 8, "frac": 20},  # a left shift, clamped first
    {"dtype": "fx32", "from_frac": 30, "frac": 12, "divisor": 2049},  # a mean
    {"dtype": "i32"},
    {"dtype": "i64"},
])
def test_psum_native_and_mips_equal_interpreter(attrs):
    rng = np.random.default_rng(len(str(attrs)))
    shape = (3, 5)
    g = GraphBuilder("t_psum")
    refs = [g.add_input(f"p{i}", TensorType(DType.I64, shape)) for i in range(3)]
    g.mark_output(g.add_node("psum", refs, attrs, "y"))
    out = check_all_backends(g.build(), [rand_i64(rng, shape) for _ in refs])
    if attrs["dtype"] == "fx32":
        assert out.saturated, "int64-edge sums saturate some outputs: the counts were compared"


def _split_and_check(graph, inputs):
    split = split_reductions(graph, MIN_LOG2_BUDGET)
    assert any(n.op == "psum" for n in split.nodes) and sum(bool(n.attrs.get("accumulate")) for n in split.nodes) >= 2
    out = check_all_backends(split, inputs)
    want = run_graph(graph, inputs)
    for v, w in zip(split.outputs, graph.outputs, strict=True):
        assert np.array_equal(out.values[v], want[w]), "the rewrite changed the output"
    return out


@pytest.mark.parametrize("trans,bias", [(True, True), (False, False)])
def test_a_long_matmul_split_into_partial_sums(trans, bias):
    rng = np.random.default_rng(11)
    m, k, n = 3, 300, 4
    g = GraphBuilder("t_long_matmul")
    refs = [g.add_input("a", fx((m, k), 20)),
            g.add_initializer("b", rand_fx(rng, (n, k) if trans else (k, n)), fx((n, k) if trans else (k, n), 20))]
    if bias:
        refs.append(g.add_initializer("c", rand_fx(rng, (n,)), fx((n,), 30)))
    g.mark_output(g.add_node("matmul", refs, {"frac": 16, "transpose_b": trans}, "y"))
    out = _split_and_check(g.build(), [rand_fx(rng, (m, k))])
    assert out.saturated


@pytest.mark.parametrize("dtype,bs,zp,bias", [(DType.I8, 200, True, True), (DType.I4, 201, True, False),
                                            (DType.I8, 32, False, False), (DType.I4, 32, True, True),
                                            (DType.I4, 16, False, True)])
def test_a_long_qmatmul_split_on_block_boundaries(dtype, bs, zp, bias):
    rng = np.random.default_rng(bs)
    k = bs if bs > 100 else 208  # per channel (one block: cut anywhere, odd lengths); blocks
    g = qmatmul_graph(rng, dtype, (2, k), 3, bs, zp, bias)
    _split_and_check(g, [rand_fx(rng, (2, k))])


@pytest.mark.parametrize("kind,dtype", [("sum", DType.FX32), ("mean", DType.FX32), ("sum", DType.I32)])
def test_a_long_reduce_split_along_its_longest_axis(kind, dtype):
    rng = np.random.default_rng(5)
    t = TensorType(dtype, (2, 3, 130), 12 if dtype is DType.FX32 else 0)
    g = GraphBuilder("t_long_reduce")
    x = g.add_input("x", t)
    g.mark_output(g.add_node("reduce", [x], {"kind": kind, "axes": [1, 2], "keepdims": False, "frac": 10}, "y"))
    _split_and_check(g.build(), [rand_fx(rng, t.shape)])


@pytest.mark.parametrize("pads,bias", [([1, 1, 1, 1], True), ([0, 0, 0, 0], False)])
def test_a_long_conv_split_over_its_input_channels(pads, bias):
    rng = np.random.default_rng(13)
    c, m = 40, 3
    g = GraphBuilder("t_long_conv")
    refs = [g.add_input("x", fx((1, c, 4, 5), 20)), g.add_initializer("w", rand_fx(rng, (m, c, 3, 3)), fx((m, c, 3, 3), 20))]
    if bias:
        refs.append(g.add_initializer("b", rand_fx(rng, (m,)), fx((m,), 30)))
    attrs = {"strides": [1, 1], "dilations": [1, 1], "pads": pads, "group": 1, "frac": 16}
    g.mark_output(g.add_node("conv", refs, attrs, "y"))
    out = _split_and_check(g.build(), [rand_fx(rng, (1, c, 4, 5))])
    assert out.saturated
