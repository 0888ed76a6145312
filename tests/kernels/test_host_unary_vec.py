"""The host kernel of sigmoid, tanh and erf on explicit <8 x i64> lanes (kernels/native/nonlinear.py)
against the interpreter, bit for bit and count for count: int32 edge values (every ±2^k and its
neighbours: the exp's and the erf clamp's thresholds), random values, lengths that reach the
4-vector loop, the single-vector loop and the scalar tail, input fracs on both sides of erf's
ERF_FRAC, output fracs 0..30; and a node large enough to be split, on 1 and 2 threads."""

from __future__ import annotations

import numpy as np
import pytest

from opmlc.backend.kernels.native import nonlinear, split_worth
from opmlc.backend.native import host_module
from opmlc.ir.graph import GraphBuilder
from opmlc.ir.types import DType, TensorType
from tests.kernels.harness import interp_and_native, jit_host_function, threads_equal_interpreter

EDGES = np.array(sorted({s * ((1 << k) + d) for k in range(32) for d in (-1, 0, 1) for s in (1, -1)
                         if -(2**31) <= s * ((1 << k) + d) < 2**31} | {0, 2**31 - 1}), dtype=np.int64)


def unary_graph(kind: str, n: int, f: int, fo: int):
    b = GraphBuilder("vec")
    b.mark_output(b.add_node("unary", [b.add_input("x", TensorType(DType.FX32, (n,), f))], {"kind": kind, "frac": fo}))
    return b.build()


@pytest.mark.parametrize("kind", nonlinear.KINDS)
@pytest.mark.parametrize("f,fo", [(24, 24), (16, 30), (30, 0), (0, 16), (26, 26), (8, 12), (28, 30)])
def test_vector_kernel_equals_the_interpreter(kind, f, fo):
    rng = np.random.default_rng(f * 31 + fo)
    n = 4 * 32 + 8 + 5 + EDGES.size  # every loop: blocks of 32, single vectors of 8, a scalar tail
    n += (-n) % 8 + 8 + 5  # a tail of 5 after one single vector
    x = np.concatenate([rng.permutation(EDGES), rng.integers(-(2**31), 2**31, n - EDGES.size)
                        >> rng.integers(0, 31, n - EDGES.size)]).astype(np.int32)
    small = rng.integers(-(6 << f), 6 << f, 64, endpoint=True) if f < 28 else rng.integers(-(2**31), 2**31, 64)
    x[-64:] = np.clip(small, -(2**31), 2**31 - 1)  # the nonlinear part of the curve at this frac
    g = unary_graph(kind, n, f, fo)
    text = host_module(g)
    assert "<8 x double>" in text, "the host kernel takes the node"
    out = interp_and_native(g, [x])  # also asserts the saturation counts are the interpreter's
    np.testing.assert_array_equal(out.native[g.outputs[0]], out.values[g.outputs[0]])


def test_a_split_node_gives_the_interpreters_bits_on_1_and_2_threads():
    rng = np.random.default_rng(3)
    n = 70_003
    g = unary_graph("sigmoid", n, 16, 30)
    assert split_worth(g, 0)
    x = (rng.integers(-(2**31), 2**31, n) >> rng.integers(0, 31, n)).astype(np.int32)
    x[: EDGES.size] = EDGES
    threads_equal_interpreter(g, [x])


@pytest.mark.parametrize("n", [8, 32, 64])
@pytest.mark.parametrize("f,fo", [(15, 24), (0, 30), (30, 8), (16, 0)])
def test_vector_softmax_equals_the_interpreter(n, f, fo):
    """Rows of int32 extremes (x − max = −(2^32 − 1)), all-equal rows (s = n·2^30, r small), one
    large value among minima (s = 2^30: r = 2^32), and random rows, whole and split in rows."""
    rng = np.random.default_rng(n + f)
    lo, hi = -(2**31), 2**31 - 1
    rows = [np.full(n, lo), np.full(n, hi), np.full(n, 0), np.where(np.arange(n) == n // 2, hi, lo),
            np.where(np.arange(n) % 2 == 0, hi, lo), np.arange(n) - n // 2]
    rows += [rng.integers(lo, hi, n, endpoint=True) >> rng.integers(0, 31) for _ in range(11)]
    x = np.stack(rows).astype(np.int32)  # 17 rows: blocks of 8 or 2 rows, then single rows
    b = GraphBuilder("softmax")
    b.mark_output(b.add_node("softmax", [b.add_input("x", TensorType(DType.FX32, x.shape, f))], {"frac": fo}))
    g = b.build()
    assert "llvm.vector.reduce.smax.v8i64" in host_module(g), "the host kernel takes the node"
    out = interp_and_native(g, [x])
    np.testing.assert_array_equal(out.native[g.outputs[0]], out.values[g.outputs[0]])
    big = np.concatenate([x] * (2**16 // x.size + 1)).astype(np.int32)  # large enough to be split
    b = GraphBuilder("softmax_split")
    b.mark_output(b.add_node("softmax", [b.add_input("x", TensorType(DType.FX32, big.shape, f))], {"frac": fo}))
    g = b.build()
    assert split_worth(g, 0)
    threads_equal_interpreter(g, [big])


def _compile_round_div():
    """A one-function module: out[i] = Lanes.round_div(n[i], d[i]) over eight lanes."""
    from llvmlite import ir

    from opmlc.backend.kernels.native._vec import VI64

    module = ir.Module("round_div")
    ptr = ir.PointerType()
    fn = ir.Function(module, ir.FunctionType(ir.VoidType(), [ptr, ptr, ptr]), "round_div8")
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    n, d = (b.load(a, typ=VI64, align=8) for a in fn.args[:2])
    (q,) = nonlinear.Lanes(b, 1).round_div([n], [d])
    b.store(q, fn.args[2], align=8)
    b.ret_void()
    return jit_host_function(module, "round_div8")


def test_vector_round_div_on_ties_and_near_integers():
    """The quotient step of sigmoid, tanh and erf alone, on the pairs where a floating estimate
    is most likely off by one: exact ties n/d = k + 1/2 (rounded up), n/d an integer, and
    their neighbours ±1, over divisors across [2^30, 2^32) and quotients up to 2^31."""
    import ctypes

    from opmlc.ir import fixedpoint as fp

    engine, addr = _compile_round_div()
    f = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p)(addr)
    rng = np.random.default_rng(11)
    d = np.concatenate([[2**30, 2**30 + 1, 2**31 - 1, 2**31, 2**32 - 2, 2**32 - 1],
                        rng.integers(2**30, 2**32, 4000)]).astype(np.int64)
    d = np.repeat(d, 8)
    k = rng.integers(0, 2**31, d.size)
    k[::7] = 2**31 - 1
    k[::11] = 0
    base = (d // 2) * 2  # even divisors make exact ties possible
    n = np.select([np.arange(d.size) % 4 == s for s in range(3)],
                  [k * base + base // 2, k * d, k * d + d - 1], k * d + (d + 1) // 2)
    d = np.where(np.arange(d.size) % 4 == 0, base, d)
    n = n + rng.integers(-1, 2, d.size)
    n[0], d[0] = 2**61, 2**30  # erf's numerator at the smallest divisor: 2^31
    keep = (n >= 0) & (n <= 2**61)
    n, d = n[keep], d[keep]
    n, d = n[: n.size // 8 * 8].copy(), d[: n.size // 8 * 8].copy()
    got = np.empty_like(n)
    for i in range(0, n.size, 8):
        f(n[i:].ctypes.data, d[i:].ctypes.data, got[i:].ctypes.data)
    np.testing.assert_array_equal(got, fp.round_div(n, d))
    del engine


@pytest.mark.parametrize("kind", nonlinear.KINDS)
def test_without_avx512_the_same_bits(kind, monkeypatch):
    """A host without AVX-512 (another x86, an ARM machine) gets plain i64 multiplies and an
    `fdiv` estimate instead of the inline assembly and `vrcp14pd`: the same bits."""
    monkeypatch.setattr(nonlinear, "_x86_avx512", lambda: False)
    rng = np.random.default_rng(9)
    n = 4 * 32 + 8 + 5
    x = np.concatenate([rng.permutation(EDGES)[:n // 2], rng.integers(-(2**31), 2**31, n - n // 2)]).astype(np.int32)
    g = unary_graph(kind, n, 24, 24)
    text = host_module(g)
    assert "vpmuldq" not in text and "rcp14" not in text
    out = interp_and_native(g, [x])
    np.testing.assert_array_equal(out.native[g.outputs[0]], out.values[g.outputs[0]])
