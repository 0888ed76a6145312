"""The norm host kernel (kernels/native/norm.py: eight rows' chains a vector) against the
interpreter, bit for bit and count for count: row counts that leave a partial block, rows of
int32 extremes (the largest variance: Σ sq near 2^63 for layer, the two-step division), constant
rows (zero variance: V = eps), a huge eps, outputs that saturate, the output's left-shift path,
bias at another fraction; and a node large enough to be split, on 1 and 2 threads."""

from __future__ import annotations

import numpy as np
import pytest

from opmlc.backend.kernels.native import host_kernel_for, split_worth
from opmlc.ir import fixedpoint as fp
from opmlc.ir.graph import GraphBuilder
from opmlc.ir.ops.norm import eps_units
from opmlc.ir.types import DType, TensorType
from tests.kernels.harness import interp_and_native, jit_host_function, threads_equal_interpreter


def norm_graph(rows, n, f, fg, fb, fo, kind, eps, bias=True):
    b = GraphBuilder("norm")
    ins = [b.add_input("x", TensorType(DType.FX32, (rows, n), f)), b.add_input("g", TensorType(DType.FX32, (n,), fg))]
    if bias:
        ins.append(b.add_input("b", TensorType(DType.FX32, (n,), fb)))
    b.mark_output(b.add_node("norm", ins, {"kind": kind, "eps": eps, "frac": fo}))
    return b.build()


def edge_rows(rng, rows, n):
    lo, hi = fp.INT32_MIN, fp.INT32_MAX
    x = (rng.integers(lo, hi, (rows, n), endpoint=True) >> rng.integers(0, 31, (rows, 1))).astype(np.int64)
    x[0] = hi
    x[1 % rows] = lo
    x[2 % rows] = np.where(np.arange(n) % 2, lo, hi)  # the largest variance
    x[3 % rows] = np.where(np.arange(n) == 0, hi, lo)
    x[4 % rows] = 0
    return x.astype(np.int32)


@pytest.mark.parametrize("kind", ["layer", "rms"])
@pytest.mark.parametrize("rows,n,f,fg,fb,fo", [(13, 64, 16, 14, 16, 16), (5, 8, 20, 0, 24, 30), (17, 512, 19, 24, 24, 24),
                                               (9, 16, 0, 30, 30, 0)])
def test_norm_rows_in_lanes(kind, rows, n, f, fg, fb, fo):
    rng = np.random.default_rng(rows * n + f)
    for eps, scale in ((eps_units(1e-5, f, n), 1 << 30), (0, 1 << 30), (1 << 40, 3)):
        g = norm_graph(rows, n, f, fg, fb, fo, kind, eps)
        assert host_kernel_for(g, 0) is not None
        x = edge_rows(rng, rows, n)
        gamma = rng.integers(-scale, scale, n, endpoint=True).astype(np.int32)
        beta = rng.integers(-(2**31), 2**31, n).astype(np.int32)
        out = interp_and_native(g, [x, gamma, beta])  # also compares the saturation counts
        np.testing.assert_array_equal(out.native[g.outputs[0]], out.values[g.outputs[0]])


def test_norm_split_on_1_and_2_threads():
    g = norm_graph(2051, 64, 18, 24, 24, 24, "layer", 7, bias=False)
    assert split_worth(g, 0)
    rng = np.random.default_rng(4)
    x, gamma = edge_rows(rng, 2051, 64), rng.integers(-(2**31), 2**31, 64).astype(np.int32)
    _, sat_want = threads_equal_interpreter(g, [x, gamma])
    assert sat_want[0] > 0


def _lane_function(body):
    """A one-function module out[0..8) = body(b, in[0..8)) on <8 x i64>, compiled for this host."""
    import ctypes

    from llvmlite import ir

    from opmlc.backend.kernels.native._vec import VI64

    module = ir.Module("lanes")
    fn = ir.Function(module, ir.FunctionType(ir.VoidType(), [ir.PointerType()] * 2), "lanes")
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    b.store(body(b, b.load(fn.args[0], typ=VI64, align=8)), fn.args[1], align=8)
    b.ret_void()
    engine, address = jit_host_function(module, "lanes")
    f = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p)(address)

    def run(x):
        x = np.ascontiguousarray(x, dtype=np.int64)
        out = np.empty_like(x)
        for i in range(0, x.size, 8):
            f(x[i:].ctypes.data, out[i:].ctypes.data)
        return out

    return engine, run


@pytest.mark.parametrize("n", [8, 24, 64, 512, 4096])
def test_row_chain_divisions(n):
    """The chain's round_div by n on its whole ranges: means (|T| < 2^31·n) and mean squares
    (0 ≤ S < 2^63, the two-step estimate), at multiples of n, ties, and their neighbours."""
    from opmlc.backend.kernels.native import norm

    rng = np.random.default_rng(n)
    k = np.concatenate([rng.integers(0, 2**63 // n, 600), [2**63 // n - 1, 2**63 // n - 2, 0, 1]])
    s = np.concatenate([k * n + d for d in (0, 1, -1, n // 2, n // 2 - 1, n // 2 + 1, n - 1)])
    s = np.concatenate([s, rng.integers(0, 2**63 - 1, 800, dtype=np.int64)])
    s = s[(s >= 0) & (s < 2**63 - 1)]
    s = s[: s.size // 8 * 8]
    engine, run = _lane_function(lambda b, x: norm._round_div_const(b, x, n, two_steps=True))
    np.testing.assert_array_equal(run(s), fp.round_div(s, np.int64(n)))
    t = np.concatenate([s >> 12, -(s >> 12), s % (2**31 * n), -(s % (2**31 * n))])
    t = t[(np.abs(t) < 2**31 * n)][: t.size // 8 * 8]
    t = t[: t.size // 8 * 8]
    engine2, run2 = _lane_function(lambda b, x: norm._round_div_const(b, x, n, two_steps=False))
    np.testing.assert_array_equal(run2(t), fp.round_div(t, np.int64(n)))
    del engine, engine2


def test_row_chain_isqrt():
    """isqrt64 on [2^60, 2^62): perfect squares, their neighbours, random values."""
    from opmlc.backend.kernels.native import nonlinear, norm

    rng = np.random.default_rng(1)
    root = np.concatenate([rng.integers(2**30, 2**31, 3000), [2**30, 2**31 - 1]])
    w = np.concatenate([root * root + d for d in (-1, 0, 1)] + [rng.integers(2**60, 2**62, 3000, dtype=np.int64)])
    w = w[(w >= 2**60) & (w < 2**62)]
    w = w[: w.size // 8 * 8]
    engine, run = _lane_function(lambda b, x: norm._isqrt(b, nonlinear.Lanes(b, 1), x))
    np.testing.assert_array_equal(run(w), fp.isqrt64(w))
    del engine
