"""Every IR op's LLVM kernel against its interpreter semantics, bit for bit: random shapes and
values including the int32 edges, natively and as a MIPS ELF in the VM and in unicorn."""

from __future__ import annotations

import numpy as np
import pytest

from opmlc.ir import fixedpoint as fp
from opmlc.ir.graph import GraphBuilder
from opmlc.ir.types import DType, TensorType
from tests.kernels.harness import build_program, interp_and_native, run_unicorn, run_vm


def rand_fx(rng, shape, scale=None):
    """int32 values mixing small numbers, large ones and the exact edges."""
    size = int(np.prod(shape))
    if scale is not None:
        return rng.integers(-scale, scale, size=shape, endpoint=True).astype(np.int32)
    pool = np.array([fp.INT32_MIN, fp.INT32_MIN + 1, -1, 0, 1, fp.INT32_MAX - 1, fp.INT32_MAX], np.int64)
    vals = np.where(rng.random(size) < 0.2, rng.choice(pool, size),
                    rng.integers(fp.INT32_MIN, fp.INT32_MAX, size=size, endpoint=True))
    return vals.astype(np.int32).reshape(shape)


def single_op(op, in_types, attrs, rng, scales=None, as_init=()):
    b = GraphBuilder(f"t_{op}")
    refs, inputs = [], []
    for i, t in enumerate(in_types):
        data = rand_fx(rng, t.shape, None if scales is None else scales[i])
        if i in as_init:
            refs.append(b.add_initializer(f"w{i}", data, t))
        else:
            refs.append(b.add_input(f"x{i}", t))
            inputs.append(data)
    b.mark_output(b.add_node(op, refs, attrs, "y"))
    return b.build(), inputs


def check_all_backends(graph, inputs, mips=True):
    out = interp_and_native(graph, inputs)
    for v, (want, got) in enumerate(zip(out.values, out.native, strict=True)):
        assert np.array_equal(want, got), f"native differs from the interpreter at value %{v}"
    if not mips:
        return out
    program = build_program(graph)
    state, vm_outs = run_vm(graph, program, out.values)
    assert state.exited and state.exit_code == 0
    for v, got in zip(graph.outputs, vm_outs, strict=True):
        assert np.array_equal(out.values[v], got), "VM differs from the interpreter"
    res, uc_outs = run_unicorn(graph, program, out.values)
    assert res.exit_code == 0, res.panic
    for v, got in zip(graph.outputs, uc_outs, strict=True):
        assert np.array_equal(out.values[v], got), "unicorn differs from the interpreter"
    return out


def fx(shape, frac):
    return TensorType(DType.FX32, tuple(shape), frac)


@pytest.mark.parametrize("seed", range(4))
def test_matmul(seed):
    rng = np.random.default_rng(seed)
    m, k, n = rng.integers(1, 7, size=3)
    fa, fb = rng.integers(0, 31, size=2)
    fo = int(rng.integers(0, fa + fb + 1))
    trans = bool(seed % 2)
    types = [fx((m, k), fa), fx((n, k) if trans else (k, n), fb), fx((n,), int(rng.integers(0, fa + fb + 1)))]
    g, x = single_op("matmul", types, {"frac": fo, "transpose_b": trans}, rng, as_init=(2,))
    check_all_backends(g, x)


@pytest.mark.parametrize("trans", [False, True])
def test_matmul_row_tiles_and_remainder_rows(trans):
    rng = np.random.default_rng(5)
    b_shape = (3, 7) if trans else (7, 3)
    g, x = single_op("matmul", [fx((9, 7), 16), fx(b_shape, 16)], {"frac": 16, "transpose_b": trans}, rng)
    check_all_backends(g, x)


def test_matmul_with_batch_broadcast_and_no_bias():
    rng = np.random.default_rng(7)
    g, x = single_op("matmul", [fx((2, 1, 3, 4), 8), fx((3, 4, 5), 8)], {"frac": 8}, rng)
    check_all_backends(g, x)


@pytest.mark.parametrize("shapes", [((3, 4), (3, 4)), ((2, 3, 4), (4,)), ((3, 1), (1, 5)), ((1,), (2, 2))])
@pytest.mark.parametrize("fracs", [(16, 16, 16), (4, 20, 12), (20, 4, 30)])
def test_add(shapes, fracs):
    rng = np.random.default_rng(len(shapes[0]) * 31 + fracs[0])
    g, x = single_op("binary", [fx(shapes[0], fracs[0]), fx(shapes[1], fracs[1])], {"kind": "add", "frac": fracs[2]}, rng)
    check_all_backends(g, x)


def test_relu_and_reshape():
    rng = np.random.default_rng(3)
    g, x = single_op("relu", [fx((5, 7), 16)], {}, rng)
    check_all_backends(g, x)
    g, x = single_op("reshape", [fx((5, 7), 16)], {"shape": [7, 5]}, rng)
    check_all_backends(g, x)


@pytest.mark.parametrize("shape,frac,fo,scale", [((3, 10), 16, 16, 1 << 20), ((2, 2, 5), 8, 30, 1 << 12),
                                                 ((4, 3), 0, 12, 10), ((2, 6), 24, 16, None)])
def test_softmax(shape, frac, fo, scale):
    rng = np.random.default_rng(frac)
    g, x = single_op("softmax", [fx(shape, frac)], {"frac": fo}, rng, scales=[scale])
    check_all_backends(g, x)


def test_each_node_of_a_graph_runs_as_its_own_task():
    rng = np.random.default_rng(11)
    b = GraphBuilder("chain")
    x = b.add_input("x", fx((2, 6), 16))
    w = b.add_initializer("w", rand_fx(rng, (4, 6), 1 << 16), fx((4, 6), 16))
    h = b.add_node("matmul", [x, w], {"frac": 16, "transpose_b": True})
    r = b.add_node("relu", [h])
    s = b.add_node("softmax", [r], {"frac": 16})
    b.mark_output(s)
    g = b.build()
    inputs = [rand_fx(rng, (2, 6), 1 << 17)]
    out = check_all_backends(g, inputs)
    program = build_program(g)
    for k, node in enumerate(g.nodes):
        state, (got,) = run_vm(g, program, out.values, node=k)
        assert state.exit_code == 0 and np.array_equal(got, out.values[node.output])
