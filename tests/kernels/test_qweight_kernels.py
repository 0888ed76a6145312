"""The q-kernels (qmatmul, qconv, qgather) against the interpreter, bit for bit and saturation
counts included: random shapes, block sizes, with and without zero points and biases, i8 and
i4 weights at their extremes; natively, and as a MIPS ELF in the VM (and unicorn) for small
shapes."""

from __future__ import annotations

import numpy as np
import pytest

from opmlc.ir.graph import GraphBuilder
from opmlc.ir.types import DType, TensorType
from tests.kernels.test_kernels import check_all_backends, fx, rand_fx


def qdata(rng, dtype, shape, edges=True):
    lo, hi = dtype.int_range
    q = rng.integers(lo, hi, shape, endpoint=True).astype(np.int8)
    if edges:  # the dtype's extremes, in a row of their own and scattered
        q.reshape(shape[0], -1)[0, ::2] = lo
        q.reshape(shape[0], -1)[0, 1::2] = hi
    return q


def qmatmul_graph(rng, dtype, x_shape, n, bs, zp, bias, fa=12, fs=20, fo=16, scale_bits=16):
    k = x_shape[-1]
    nb = -(-k // bs)
    g = GraphBuilder("t_qmatmul")
    refs = [g.add_input("x", fx(x_shape, fa))]
    refs.append(g.add_initializer("w", qdata(rng, dtype, (n, k)), TensorType(dtype, (n, k))))
    s = rng.integers(-(1 << scale_bits), 1 << scale_bits, (n, nb)).astype(np.int32)
    refs.append(g.add_initializer("w/scale", s, fx((n, nb), fs)))
    if zp:
        refs.append(g.add_initializer("w/zp", qdata(rng, dtype, (n, nb), edges=False), TensorType(dtype, (n, nb))))
    if bias:
        refs.append(g.add_initializer("b", rand_fx(rng, (n,), 1 << 24), fx((n,), fa + fs - 4)))
    g.mark_output(g.add_node("qmatmul", refs, {"block_size": bs, "frac": fo}, "y"))
    return g.build()


CASES = [  # dtype, x shape, N, block, zero point, bias
    (DType.I8, (1, 40), 5, 40, False, True),
    (DType.I8, (6, 33), 3, 16, True, False),
    (DType.I4, (1, 64), 4, 32, False, True),
    (DType.I4, (5, 70), 3, 16, True, True),   # K not a multiple of the block; row tiles + rest
    (DType.I4, (2, 3, 9), 2, 9, True, False),  # odd K: the element-wise nibble path, batch dims
    (DType.I4, (1, 37), 3, 16, False, False),  # odd K, blocks
]


@pytest.mark.parametrize("dtype,x_shape,n,bs,zp,bias", CASES)
def test_qmatmul_native_and_mips_equal_interpreter(dtype, x_shape, n, bs, zp, bias):
    rng = np.random.default_rng(sum(x_shape) + n + bs)
    g = qmatmul_graph(rng, dtype, x_shape, n, bs, zp, bias)
    out = check_all_backends(g, [rand_fx(rng, x_shape)])
    assert out.saturated, "int32-edge activations saturate some outputs: the counts were compared"


@pytest.mark.parametrize("dtype", [DType.I8, DType.I4])
def test_qmatmul_native_on_larger_random_shapes(dtype):
    rng = np.random.default_rng(7)
    for _ in range(4):
        m, n = int(rng.integers(1, 9)), int(rng.integers(1, 40))
        bs = int(rng.choice([16, 32, 64, 128]))
        k = int(rng.integers(1, 300))
        g = qmatmul_graph(rng, dtype, (m, k), n, bs, bool(rng.integers(2)), bool(rng.integers(2)))
        check_all_backends(g, [rand_fx(rng, (m, k), 1 << 20)], mips=False)


@pytest.mark.parametrize("dtype,zp,bias,group", [(DType.I8, False, True, 1), (DType.I4, True, True, 2),
                                                 (DType.I4, False, False, 1)])
def test_qconv_native_and_mips_equal_interpreter(dtype, zp, bias, group):
    rng = np.random.default_rng(11 + group)
    x_shape, m, kern = (1, 4, 6, 5), 4, (3, 2)
    qshape = (m, 4 // group, *kern)
    red = int(np.prod(qshape[1:]))
    g = GraphBuilder("t_qconv")
    refs = [g.add_input("x", fx(x_shape, 12))]
    refs.append(g.add_initializer("w", qdata(rng, dtype, qshape), TensorType(dtype, qshape)))
    refs.append(g.add_initializer("w/scale", rng.integers(-4096, 4096, (m, 1)).astype(np.int32), fx((m, 1), 16)))
    if zp:
        refs.append(g.add_initializer("w/zp", qdata(rng, dtype, (m, 1), False), TensorType(dtype, (m, 1))))
    if bias:
        refs.append(g.add_initializer("b", rand_fx(rng, (m,), 1 << 20), fx((m,), 20)))
    attrs = {"strides": [1, 2], "dilations": [1, 1], "pads": [1, 0, 1, 1], "group": group, "frac": 12,
             "block_size": red}
    g.mark_output(g.add_node("qconv", refs, attrs, "y"))
    check_all_backends(g.build(), [rand_fx(rng, x_shape)])


@pytest.mark.parametrize("dtype,zp,bs,d", [(DType.I8, False, 8, 8), (DType.I4, True, 4, 10), (DType.I4, False, 16, 7)])
def test_qgather_native_and_mips_equal_interpreter(dtype, zp, bs, d):
    rng = np.random.default_rng(d)
    v = 6
    nb = -(-d // bs)
    g = GraphBuilder("t_qgather")
    refs = [g.add_initializer("emb", qdata(rng, dtype, (v, d)), TensorType(dtype, (v, d)))]
    s = rng.integers(-(1 << 24), 1 << 24, (v, nb)).astype(np.int32)
    s[0] = (1 << 31) - 1  # row 0 saturates at frac 20 when chosen (and must not count when not)
    refs.append(g.add_initializer("emb/scale", s, fx((v, nb), 22)))
    if zp:
        refs.append(g.add_initializer("emb/zp", qdata(rng, dtype, (v, nb), False), TensorType(dtype, (v, nb))))
    refs.append(g.add_input("ids", TensorType(DType.I64, (2, 5))))
    g.mark_output(g.add_node("qgather", refs, {"block_size": bs, "frac": 20}, "y"))
    ids = np.array([[0, 5, -1, 6, -7], [3, 1, 0, 100, -6]], np.int64)
    out = check_all_backends(g.build(), [ids])
    assert out.saturated
