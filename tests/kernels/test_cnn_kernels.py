"""The CNN / conformance ops' LLVM kernels against their interpreter semantics, bit for bit:
many nodes per graph (so one MIPS build serves a whole op family), random and int32-edge
values, natively and as a MIPS ELF in the VM and in unicorn."""

from __future__ import annotations

import numpy as np
import pytest

from opmlc.ir import fixedpoint as fp
from opmlc.ir.graph import GraphBuilder
from opmlc.ir.ops import binary as binary_op
from opmlc.ir.ops import unary as unary_op
from opmlc.ir.types import DType, TensorType
from tests.kernels.test_kernels import check_all_backends, rand_fx


def fx(shape, frac):
    return TensorType(DType.FX32, tuple(shape), frac)


def rand_of(rng, t: TensorType, scale=None):
    if t.dtype is DType.BOOL:
        return rng.random(t.shape) < 0.5
    if t.dtype is DType.I64:
        pool = np.array([-(1 << 63), -1, 0, 1, (1 << 63) - 1, fp.INT32_MIN], dtype=np.int64)
        v = rng.integers(-(1 << 62), 1 << 62, size=t.shape, dtype=np.int64)
        return np.where(rng.random(t.shape) < 0.2, rng.choice(pool, t.shape), v)
    return rand_fx(rng, t.shape, scale)


def graph_of(name, inputs, nodes, rng, scales=None):
    """inputs: list of types; nodes: (op, [input positions or node refs], attrs). All nodes are outputs."""
    b = GraphBuilder(name)
    refs = [b.add_input(f"x{i}", t) for i, t in enumerate(inputs)]
    data = [rand_of(rng, t, None if scales is None else scales[i]) for i, t in enumerate(inputs)]
    for op, ins, attrs in nodes:
        b.mark_output(b.add_node(op, [refs[i] for i in ins], attrs))
    return b.build(), data


@pytest.mark.parametrize("fracs", [(16, 16, 16), (8, 24, 12), (30, 2, 20)])
def test_binary_fx_kinds(fracs):
    rng = np.random.default_rng(fracs[0])
    fa, fb, fo = fracs
    kinds = [k for k in binary_op.FX_KINDS + binary_op.CMP]
    nodes = []
    for k in kinds:
        attrs = {"kind": k, "frac": fo}
        if k == "div":
            attrs["frac"] = min(fo, fa - fb + 31)
        nodes.append(("binary", [0, 1], attrs))
    g, x = graph_of("bin_fx", [fx((3, 4), fa), fx((4,), fb)], nodes, rng)
    x[1][0] = 0  # division by zero
    check_all_backends(g, x)


@pytest.mark.parametrize("dt", [DType.I32, DType.I64])
def test_binary_int_kinds(dt):
    rng = np.random.default_rng(1)
    t = TensorType(dt, (2, 5))
    nodes = [("binary", [0, 1], {"kind": k}) for k in binary_op.INT_KINDS + binary_op.CMP]
    g, x = graph_of("bin_int", [t, t], nodes, rng)
    x[1][0, :3] = [0, -1, 7]  # zero divisor, INT_MIN / -1, a small divisor
    x[0][0, 1] = fp.INT32_MIN if dt is DType.I32 else -(1 << 63)
    check_all_backends(g, x)


def test_binary_bool_kinds_and_unary_not():
    rng = np.random.default_rng(2)
    t = TensorType(DType.BOOL, (3, 3))
    nodes = [("binary", [0, 1], {"kind": k}) for k in binary_op.BOOL_KINDS] + [("unary", [0], {"kind": "not"})]
    g, x = graph_of("bools", [t, t], nodes, rng)
    check_all_backends(g, x)


@pytest.mark.parametrize("f,fo,scale", [(16, 16, None), (24, 12, 1 << 26), (8, 30, 1 << 10), (0, 16, 40)])
def test_unary_fx_kinds(f, fo, scale):
    rng = np.random.default_rng(f + fo)
    nodes = []
    for k in unary_op.FX_KINDS:
        o = max(-(-f // 2), min(fo, (f + 31) // 2)) if k == "sqrt" else fo
        nodes.append(("unary", [0], {"kind": k, "frac": o}))
    g, x = graph_of("un_fx", [fx((4, 6), f)], nodes, rng, scales=[scale])
    check_all_backends(g, x)


@pytest.mark.parametrize("dt", [DType.I32, DType.I64])
def test_unary_int_kinds(dt):
    rng = np.random.default_rng(3)
    nodes = [("unary", [0], {"kind": k}) for k in unary_op.INT_KINDS]
    g, x = graph_of("un_int", [TensorType(dt, (9,))], nodes, rng)
    check_all_backends(g, x)


def test_cast_between_all_types():
    rng = np.random.default_rng(4)
    ins = [fx((7,), 12), TensorType(DType.I32, (7,)), TensorType(DType.I64, (7,)), TensorType(DType.BOOL, (7,))]
    nodes = []
    for i in range(4):
        for to, frac in (("fx32", 20), ("fx32", 3), ("i32", 0), ("i64", 0), ("bool", 0)):
            nodes.append(("cast", [i], {"to": to, "frac": frac}))
    g, x = graph_of("casts", ins, nodes, rng)
    check_all_backends(g, x)


def test_where_view_and_concat():
    rng = np.random.default_rng(5)
    ins = [TensorType(DType.BOOL, (3, 1)), fx((3, 4), 10), fx((4,), 20), TensorType(DType.I64, (2, 4))]
    nodes = [
        ("where", [0, 1, 2], {"frac": 16}),
        ("view", [1], {"shape": [4, 3], "offset": 0, "strides": [1, 4]}),  # transpose
        ("view", [1], {"shape": [2, 2], "offset": 11, "strides": [-4, -2]}),  # negative steps
        ("view", [1], {"shape": [5, 7], "offset": -5, "strides": [4, 1], "lo": [1, 1], "hi": [4, 5],
                       "fill": -12345}),  # constant pad
        ("view", [2], {"shape": [2, 3, 4], "offset": 0, "strides": [0, 0, 1]}),  # expand
        ("view", [3], {"shape": [4, 2], "offset": 0, "strides": [1, 4]}),
        ("concat", [1, 1], {"axis": 0, "frac": 12}),
        ("concat", [3, 3, 3], {"axis": 0}),
    ]
    g, x = graph_of("moves", ins, nodes, rng)
    check_all_backends(g, x)


def test_reduce_kinds():
    rng = np.random.default_rng(6)
    nodes = []
    for kind in ("sum", "mean", "max", "min", "prod"):
        for axes, keep in (([1], 1), ([0, 2], 0), ([0, 1, 2], 1)):
            nodes.append(("reduce", [0], {"kind": kind, "axes": axes, "keepdims": keep, "frac": 14}))
    for kind in ("argmax", "argmin"):
        for last in (0, 1):
            nodes.append(("reduce", [0], {"kind": kind, "axes": [1], "keepdims": 1, "select_last": last}))
            nodes.append(("reduce", [1], {"kind": kind, "axes": [0], "keepdims": 0, "select_last": last}))
    nodes += [("reduce", [1], {"kind": k, "axes": [1], "keepdims": 0}) for k in ("sum", "max", "min", "prod")]
    g, x = graph_of("reduces", [fx((2, 3, 4), 16), TensorType(DType.I32, (3, 2))], nodes, rng, scales=[1 << 17, 3])
    x[0][0, :, 0] = 7  # ties for the arg kinds
    check_all_backends(g, x)


@pytest.mark.parametrize("case", [
    dict(x=(1, 2, 6, 6), w=(3, 2, 3, 3), strides=[1, 1], pads=[1, 1, 1, 1], dilations=[1, 1], group=1),
    dict(x=(2, 4, 7, 5), w=(4, 2, 2, 3), strides=[2, 1], pads=[0, 1, 2, 0], dilations=[2, 1], group=2),
    dict(x=(1, 3, 9), w=(6, 1, 3), strides=[2], pads=[1, 1], dilations=[1], group=3),
])
def test_conv(case):
    rng = np.random.default_rng(len(case["x"]) + case["group"])
    xt, wt, bt = fx(case["x"], 16), fx(case["w"], 14), fx((case["w"][0],), 20)
    attrs = {k: case[k] for k in ("strides", "pads", "dilations", "group")}
    nodes = [("conv", [0, 1, 2], {**attrs, "frac": 16}), ("conv", [0, 1], {**attrs, "frac": 30})]
    g, x = graph_of("conv", [xt, wt, bt], nodes, rng, scales=[1 << 18, 1 << 15, 1 << 20])
    check_all_backends(g, x)


def test_conv_with_extreme_values_wraps_like_the_interpreter():
    rng = np.random.default_rng(8)
    attrs = {"strides": [1, 1], "pads": [1, 0, 0, 1], "dilations": [1, 1], "group": 1, "frac": 10}
    g, x = graph_of("conv_edges", [fx((1, 2, 4, 4), 20), fx((2, 2, 2, 2), 20)], [("conv", [0, 1], attrs)], rng)
    check_all_backends(g, x, mips=False)


@pytest.mark.parametrize("kind", ["max", "avg"])
def test_pool(kind):
    rng = np.random.default_rng(9)
    nodes = []
    for ceil, incl in ((0, 0), (1, 0), (1, 1)):
        nodes.append(("pool", [0], {"kind": kind, "kernel": [3, 2], "strides": [2, 2], "dilations": [1, 2],
                                    "pads": [1, 0, 1, 1], "ceil_mode": ceil, "count_include_pad": incl}))
    nodes.append(("pool", [1], {"kind": kind, "kernel": [2], "strides": [1], "dilations": [1], "pads": [0, 0],
                                "ceil_mode": 0, "count_include_pad": 0}))
    g, x = graph_of("pool", [fx((2, 2, 7, 6), 16), fx((1, 3, 5), 8)], nodes, rng)
    check_all_backends(g, x)
