"""The native build's host-only variants of the portable kernels against the interpreter, bit for
bit and count for count: the nonlinear ops whose division needs no `sdiv` fallback
(div_round_q32's wide_divisor: sigmoid, tanh, erf, log) on int32 edge values, random values and
lengths that reach the vector loops' tails, at output fracs up to 30 (MAX_FRAC); and a reshape whose output
shares its input's buffer in a NativeSession (kernels/reshape.py), on 1 and 2 threads."""

from __future__ import annotations

import numpy as np
import pytest

from opmlc.backend.native import NativeSession, alias_of, host_module, native_program
from opmlc.ir.graph import GraphBuilder
from opmlc.ir.interpreter import run_graph
from opmlc.ir.types import DType, TensorType
from tests.kernels.test_kernels import check_all_backends, rand_fx, single_op


def fx(shape, frac):
    return TensorType(DType.FX32, tuple(shape), frac)


@pytest.mark.parametrize("kind", ["sigmoid", "tanh", "erf", "log"])
@pytest.mark.parametrize("f,fo,scale", [(16, 16, None), (24, 30, 1 << 26), (8, 30, 1 << 12), (0, 0, 40),
                                        (30, 24, None), (20, 12, 1 << 22)])
def test_wide_divisor_kernels_equal_the_interpreter(kind, f, fo, scale):
    rng = np.random.default_rng(f * 37 + fo)
    g, x = single_op("unary", [fx((3, 77), f)], {"kind": kind, "frac": fo}, rng, scales=[scale])
    assert "opmlc.div_round_q32.wide" in host_module(g), "the host module takes the wide-divisor division"
    check_all_backends(g, x, mips=False)


def test_sigmoid_and_tanh_over_the_whole_exp_range():
    """Every 2^k and its neighbours as input: e runs from 2^30 down to 0, the divisor over
    [2^30, 2^31], the numerator up to 2^(30 + fo)."""
    vals = sorted({s * ((1 << k) + d) for k in range(31) for d in (-1, 0, 1) for s in (1, -1)} | {0})
    x = np.array([v for v in vals if -(2**31) <= v < 2**31], dtype=np.int32)
    for f, fo in ((16, 30), (0, 24), (30, 30)):
        for kind in ("sigmoid", "tanh"):
            b = GraphBuilder("edges")
            b.mark_output(b.add_node("unary", [b.add_input("x", fx(x.shape, f))], {"kind": kind, "frac": fo}))
            check_all_backends(b.build(), [x], mips=False)


# erf's |x| at f = 24 (a = 4|x|) whose 2^60 / (2^30 + shr_round(a·P, 26)) + 1/2 lies closest
# below (gap 5e-9 … 1e-7) and above (3e-10 … 5e-10) an integer, of all |x| below the clamp: found
# by scanning every one through those two steps (12 s; the test checks that each still is).
ERF_TIES_BELOW = (100155675, 62583028, 50829472, 77499271, 39485589, 26956785)
ERF_TIES_ABOVE = (96737356, 83990787, 81507796, 79954513, 52014087, 43168207)


def _tie_gaps(n, d):
    """(gap below, gap above): how far n/d + 1/2 lies below the next integer, above the last."""
    rem = (2 * n + d) % (2 * d)
    return (2 * d - rem) / (2 * d), rem / (2 * d)


def test_the_divisions_near_their_ties():
    """nonlinear.py's Lanes.round_div estimates low on purpose and corrects once: inputs whose
    division lies just below a rounding tie (an estimate taken at n/d + 1/2 could round up) and
    just above one (the low estimate is one short, corrected): erf's 2^60 / (2^30 + shr_round(a·P,
    26)) at f = 24 (GELU's; ERF_TIES_*), and sigmoid's 2^(30 + fo) / (2^30 + e) at f = fo = 16,
    the closest of every |x| whose e is not 0."""
    from opmlc.ir import fixedpoint as fp
    from opmlc.ir.ops import unary as unary_op

    ax = np.array(ERF_TIES_BELOW + ERF_TIES_ABOVE, dtype=np.int64)
    below, above = _tie_gaps(np.int64(1) << 60, fp.ONE_Q30 + fp.shr_round(4 * ax * unary_op.ERF_P_Q30, unary_op.ERF_FRAC))
    assert (below[:6] < 2e-7).all() and (above[6:] < 1e-9).all()
    x_erf = np.concatenate([ax, -ax]).astype(np.int32)

    ax = np.arange(0, 22 << 16, dtype=np.int64)  # e = exp(−|x|) > 0: |x| < 22 at f = 16
    below, above = _tie_gaps(np.int64(1) << 46, fp.ONE_Q30 + fp.exp_nonpositive_q30(-ax, 16))
    x_sig = np.concatenate([ax[np.argsort(below)[:40]], ax[np.argsort(above)[:40]]]).astype(np.int32)
    for kind, x, f in (("erf", x_erf, 24), ("sigmoid", x_sig, 16)):
        b = GraphBuilder("ties")
        b.mark_output(b.add_node("unary", [b.add_input("x", fx(x.shape, f))], {"kind": kind, "frac": f}))
        check_all_backends(b.build(), [x], mips=False)


def reshape_graph():
    b = GraphBuilder("aliased")
    x = b.add_input("x", fx((4, 6, 5), 16))
    r = b.add_node("reshape", [x], {"shape": [24, 5]})
    y = b.add_node("unary", [r], {"kind": "sigmoid", "frac": 16})
    r2 = b.add_node("reshape", [y], {"shape": [4, 30]})
    b.mark_output(r2)
    b.mark_output(b.add_node("reshape", [r2], {"shape": [120]}))
    return b.build()


def test_reshape_output_shares_its_input_buffer_and_gives_the_interpreters_bits():
    g = reshape_graph()
    aliases = alias_of(g)
    assert len(aliases) == 3
    rng = np.random.default_rng(5)
    check_all_backends(g, [rand_fx(rng, (4, 6, 5))], mips=False)  # separate buffers: the copy runs
    for threads in (1, 2):
        session = NativeSession(native_program(g), g, threads=threads)
        for out, src in aliases.items():
            assert np.shares_memory(session.bufs[out], session.bufs[src])
        for seed in range(3):
            x = rand_fx(np.random.default_rng(seed), (4, 6, 5))
            want = run_graph(g, [x])
            got = session.run([x])
            for v, arr in zip(g.outputs, got, strict=True):
                np.testing.assert_array_equal(arr, want[v])


@pytest.mark.parametrize("fa,fb,fo", [(24, 28, 24), (17, 28, 19), (16, 16, 16), (0, 30, 1), (30, 0, 10),
                                      (10, 30, 10), (20, 20, 10), (8, 28, 0)])
def test_division_by_a_scalar_equals_the_interpreter_on_both_sides_of_the_fast_test(fa, fb, fo):
    """The host module tests the scalar divisor once (binary._fast_scalar_division): divisors just
    below, at and above 2^(s − 19), zero, negative and the int32 edges, each against numerators
    with int32 edge values; the quotients and the saturation counts are the interpreter's."""
    from opmlc.ir.ops.binary import div_shift

    s = div_shift(fa, fb, fo)
    t = 1 << max(s - 19, 0)
    rng = np.random.default_rng(fa + 3 * fb + 7 * fo)
    a = rand_fx(rng, (5, 41))
    a.flat[:6] = [-(2**31), 2**31 - 1, 0, 1, -1, -(2**31) + 1]
    for d in sorted({t - 1, t, t + 1, -t, -t - 1, 0, 1, -1, 2**31 - 1, -(2**31), 3 << 27, 12345}):
        if not -(2**31) <= d < 2**31:
            continue
        b = GraphBuilder("div")
        x = b.add_input("x", fx(a.shape, fa))
        w = b.add_initializer("d", np.array(d, dtype=np.int32), fx((), fb))
        b.mark_output(b.add_node("binary", [x, w], {"kind": "div", "frac": fo}))
        g = b.build()
        text = host_module(g)
        assert ("div.all_fast" in text) == (s <= 30)
        assert ("fdiv double 0x3ff0000000000000" in text) == (s <= 30), "the fast loop uses the divisor's reciprocal"
        check_all_backends(g, [a], mips=False)


@pytest.mark.parametrize("n", [1, 7, 32, 33, 100])
@pytest.mark.parametrize("f,fo", [(15, 24), (16, 16), (0, 30), (30, 8)])
def test_softmax_host_rows_equal_the_interpreter_on_edge_rows(n, f, fo):
    """softmax in the host module (the row's 2^62 / s through the FPU, exps through 32 × 32-bit
    products: kernels/softmax.py, _ir.mul32) on rows of int32 extremes, all-equal rows (s =
    n·2^30), a single large value among minima (s = 2^30), and random rows, on 1 and 2 threads."""
    rng = np.random.default_rng(n * 131 + f)
    lo, hi = -(2**31), 2**31 - 1
    rows = [np.full(n, lo), np.full(n, hi), np.full(n, 0), np.full(n, 12345), np.where(np.arange(n) == n // 2, hi, lo),
            np.where(np.arange(n) % 2 == 0, hi, lo), np.arange(n) - n // 2]
    rows += [rng.integers(lo, hi, n, endpoint=True) >> rng.integers(0, 31) for _ in range(9)]
    x = np.stack(rows).astype(np.int32)
    b = GraphBuilder("softmax_edges")
    b.mark_output(b.add_node("softmax", [b.add_input("x", fx(x.shape, f))], {"frac": fo}))
    g = b.build()
    check_all_backends(g, [x], mips=False)
    want = run_graph(g, [x])[g.outputs[0]]
    for threads in (1, 2):
        got = NativeSession(native_program(g), g, threads=threads).run([x])[0]
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("kind", ["add", "sub"])
@pytest.mark.parametrize("shapes", [((3, 37), (3, 37)), ((37,), (2, 3, 37)), ((2, 3, 37), ()), ((4, 1), (1, 50))])
def test_same_fraction_add_and_sub_saturate_in_i32_like_the_interpreter(kind, shapes):
    """The host module's add/sub of one fraction (binary._saturating_i32: llvm.sadd.sat /
    ssub.sat on the i32 operands) on int32 extremes and their neighbours against every value,
    broadcast, with the saturation counts equal to the interpreter's (check_all_backends)."""
    edges = np.array([-(2**31), -(2**31) + 1, -1, 0, 1, 2**30, -(2**30), 2**31 - 2, 2**31 - 1], dtype=np.int64)
    rng = np.random.default_rng(len(shapes[0]) * 7 + len(shapes[1]))
    ops = []
    for shape in shapes:
        v = rng.integers(-(2**31), 2**31, shape, dtype=np.int64) >> rng.integers(0, 3, shape)
        flat = v.reshape(-1)
        flat[: min(flat.size, edges.size)] = rng.permutation(edges)[: min(flat.size, edges.size)]
        ops.append(v.astype(np.int32))
    b = GraphBuilder("sat")
    refs = [b.add_input(f"x{i}", fx(v.shape, 20)) for i, v in enumerate(ops)]
    b.mark_output(b.add_node("binary", refs, {"kind": kind, "frac": 20}))
    g = b.build()
    assert f"llvm.s{kind}.sat.i32" in host_module(g)
    out = check_all_backends(g, ops, mips=False)
    assert out.saturated, "the edge values saturate some elements"
