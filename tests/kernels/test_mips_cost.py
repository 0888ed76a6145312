"""Issue 13's cheaper MIPS code: the kernels' i64-division-free helper (backend/kernels/_fx.py
div_round_q32) against exact integer division, natively on many random and edge operands and
as a MIPS ELF; the nonlinear unary kinds, the tiled matmul and the two-path conv bit for bit
with the interpreter (saturation counts included) natively on dense sweeps and in the VM and
unicorn on edges; and the MIPS step budgets (≤ 300 steps per element, ≤ 7 per multiply-add),
counted in the VM (tests/kernels/cost.py; bench/mips_cost.py prints the figures)."""

from __future__ import annotations

import numpy as np
import pytest
from llvmlite import ir

from opmlc.backend.kernels._fx import div_round_q32
from opmlc.backend.kernels._ir import I64, PTR, VOID, c32, load, loop, store
from opmlc.backend.target import load_native
from tests.backend.backend_harness import run_both


def helper_module(count: int) -> str:
    """task(regions): out[i] = div_round_q32(n[i], d[i], down[i]) for i < count."""
    m = ir.Module("div")
    fn = ir.Function(m, ir.FunctionType(VOID, [PTR, ir.IntType(32)]), "task")
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    regions = fn.args[0]
    n, d, down, out = (b.load(b.gep(regions, [c32(i)], source_etype=PTR), typ=PTR) for i in range(4))
    with loop(b, count) as i:
        args = [load(b, n, i, I64), load(b, d, i, I64), load(b, down, i, I64)]
        store(b, b.call(div_round_q32(m), args), out, i)
    b.ret_void()
    return str(m)


def expected(n: np.ndarray, d: np.ndarray, down: np.ndarray) -> np.ndarray:
    """floor(n/d) + (2r ≥ d) (down = 0: fixedpoint.round_div) or + (2r > d) (down = 1:
    −round_div(−n, d)), or 2^32 when floor(n/d) ≥ 2^32, exactly."""
    from opmlc.ir import fixedpoint as fp

    out = []
    for a, c, t in zip(n.tolist(), d.tolist(), down.tolist(), strict=True):
        q, r = divmod(a, c)
        out.append(1 << 32 if q >= 1 << 32 else q + (2 * r > c if t else 2 * r >= c))
    out = np.array(out, dtype=np.int64)
    small = (out < 1 << 32) & (n < 1 << 62)  # the numpy definitions agree where they apply
    assert np.array_equal(out[small & (down == 0)], fp.round_div(n, d)[small & (down == 0)])
    assert np.array_equal(out[small & (down == 1)], -fp.round_div(-n, d)[small & (down == 1)])
    return out


def operands(rng, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Divisors over every bit length 1..32 (the normalisation shift), the sigmoid/tanh/erf
    ranges [2^30, 2^32) more often, and numerators around multiples of d (the corrections and
    the half-way rounding), up to quotients beyond 2^32."""
    bits = np.where(rng.random(size) < 0.5, rng.integers(31, 33, size), rng.integers(1, 33, size))
    d = rng.integers(1 << (bits - 1), 1 << bits, dtype=np.int64)
    q = rng.integers(0, 1 << 33, size, dtype=np.int64) >> rng.integers(0, 33, size)
    near = rng.integers(-3, 4, size) + np.where(rng.random(size) < 0.3, d // 2, 0)
    n = np.clip(q * d + near, 0, (1 << 63) - 1)
    wild = rng.random(size) < 0.2
    n = np.where(wild, rng.integers(0, (1 << 63) - 1, size, dtype=np.int64) >> rng.integers(0, 63, size), n)
    edges_n = [0, 1, (1 << 62), (1 << 63) - 1, (1 << 60), (1 << 32) - 1, 1 << 32, (1 << 61) + (1 << 30)]
    edges_d = [1, (1 << 32) - 1, 1 << 30, (1 << 31) + 1, 3 << 30, 1 << 31, (1 << 31) - 1, 65535, 65536]
    en, ed = np.meshgrid(np.array(edges_n, np.int64), np.array(edges_d, np.int64))
    n, d = np.concatenate([en.ravel(), n]), np.concatenate([ed.ravel(), d])
    return n, d, rng.integers(0, 2, n.size, dtype=np.int64)


def test_div_round_q32_natively_on_random_and_edge_operands():
    rng = np.random.default_rng(13)
    n, d, down = operands(rng, 200_000)
    out = np.zeros_like(n)
    load_native(helper_module(len(n)), cache_dir=None).run([n, d, down, out])
    want = expected(n, d, down)
    bad = np.flatnonzero(out != want)
    assert bad.size == 0, f"n={n[bad[0]]} d={d[bad[0]]}: {out[bad[0]]} != {want[bad[0]]}"


def test_div_round_q32_on_mips_equals_native():
    rng = np.random.default_rng(14)
    n, d, down = operands(rng, 600)
    both = run_both(helper_module(len(n)), [n, d, down, np.zeros_like(n)], outputs=[3])
    assert both.mips == both.native
    assert np.array_equal(np.frombuffer(both.mips[0], dtype=">i8"), expected(n, d, down))


def isqrt_module(count: int) -> str:
    """task(regions): out[i] = isqrt64(n[i]) for i < count, the MIPS path (no host context)."""
    from opmlc.backend.kernels._fx import isqrt64

    m = ir.Module("isqrt")
    fn = ir.Function(m, ir.FunctionType(VOID, [PTR, ir.IntType(32)]), "task")
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    n, out = (b.load(b.gep(fn.args[0], [c32(i)], source_etype=PTR), typ=PTR) for i in range(2))
    with loop(b, count) as i:
        store(b, b.call(isqrt64(m), [load(b, n, i, I64)]), out, i)
    b.ret_void()
    return str(m)


def isqrt_operands(rng, size: int) -> np.ndarray:
    """Every bit length 0..62, perfect squares and their neighbours (the corrections), powers
    of two and the ends of the range."""
    n = rng.integers(0, (1 << 63) - 1, size, dtype=np.int64) >> rng.integers(0, 63, size)
    r = rng.integers(0, 3037000499, size // 2, dtype=np.int64) >> rng.integers(0, 31, size // 2)
    sq = r * r + rng.integers(-1, 2, size // 2)
    p2 = np.array([1 << k for k in range(63)], np.int64)
    edges = np.concatenate([p2, p2 - 1, p2 + 1, [0, 1, 2, 3, (1 << 63) - 1, 3037000499 ** 2, 3037000499 ** 2 - 1]])
    return np.concatenate([edges, n, np.clip(sq, 0, None)]).astype(np.int64)


def test_isqrt64_mips_path_natively_on_random_and_edge_operands():
    """The MIPS isqrt64 (Newton on the top word, one Karatsuba step) equals the definition."""
    from opmlc.ir import fixedpoint as fp

    n = isqrt_operands(np.random.default_rng(15), 400_000)
    out = np.zeros_like(n)
    load_native(isqrt_module(len(n)), cache_dir=None).run([n, out])
    want = fp.isqrt64(n)
    bad = np.flatnonzero(out != want)
    assert bad.size == 0, f"n={n[bad[0]]}: {out[bad[0]]} != {want[bad[0]]}"


def test_isqrt64_on_mips_equals_native():
    n = isqrt_operands(np.random.default_rng(16), 400)
    both = run_both(isqrt_module(len(n)), [n, np.zeros_like(n)], outputs=[1])
    assert both.mips == both.native


def test_helper_products_fit_32_bits():
    """The Horner partial sums that kernels multiply as 32 × 32-bit products (mul32) stay in
    the int32 range: exp2's over r in [0, 2^30), erf's over t in (0, 2^30] (dense sweeps)."""
    from opmlc.ir import fixedpoint as fp
    from opmlc.ir.ops import unary as unary_op

    for coeffs, xs in ((fp.EXP2_Q30, np.arange(0, 1 << 30, 997, dtype=np.int64)),
                       (unary_op.ERF_A_Q30, np.append(np.arange(1, 1 << 30, 997, dtype=np.int64), 1 << 30))):
        p = np.full(xs.shape, coeffs[-1], dtype=np.int64)
        for c in coeffs[-2::-1]:
            p = fp.shr_round(p * xs, fp.Q30) + c
            assert np.abs(p).max() < 1 << 31


@pytest.mark.parametrize("trans", [False, True])
def test_matmul_tiles_unrolled_reductions_and_remainders(trans):
    """Row tiles, column tiles of a leftover row, leftover columns, and reductions shorter
    than, equal to and longer than each unroll (with a straight-line rest): natively on all
    shapes, in the VM and unicorn on two of them."""
    from tests.kernels.test_kernels import check_all_backends, fx, single_op

    rng = np.random.default_rng(31 + trans)
    for i, (m, k, n) in enumerate([(1, 1, 1), (1, 3, 4), (1, 9, 9), (5, 4, 3), (6, 17, 5), (4, 8, 8), (9, 2, 7)]):
        types = [fx((m, k), 16), fx((n, k) if trans else (k, n), 16), fx((n,), 20)]
        g, x = single_op("matmul", types, {"frac": 16, "transpose_b": trans}, rng, as_init=(2,))
        check_all_backends(g, x, mips=i in (2, 4))


@pytest.mark.parametrize("case", [
    # channel tiles (M/group a multiple of 4), dilations and strides clipping the window, pads
    # larger than the kernel (positions whose window misses the input entirely), 1-D and 3-D,
    # kernels too large to write out straight-line, and no interior at all
    dict(x=(2, 3, 7, 6), w=(8, 3, 3, 3), strides=[1, 2], pads=[1, 2, 1, 0], dilations=[2, 1], group=1),
    dict(x=(1, 4, 5, 5), w=(8, 2, 3, 3), strides=[1, 1], pads=[4, 4, 4, 4], dilations=[1, 1], group=2),
    dict(x=(1, 2, 11), w=(4, 2, 5), strides=[3], pads=[3, 2], dilations=[2], group=1),
    dict(x=(1, 2, 4, 3, 3), w=(4, 1, 2, 2, 2), strides=[1, 1, 2], pads=[1, 0, 1, 0, 1, 1], dilations=[1, 2, 1], group=2),
    dict(x=(1, 1, 10, 10), w=(4, 1, 9, 9), strides=[1, 1], pads=[1, 1, 1, 1], dilations=[1, 1], group=1),
    dict(x=(1, 2, 3, 3), w=(3, 2, 4, 4), strides=[1, 1], pads=[1, 1, 1, 1], dilations=[1, 1], group=1),
])
def test_conv_interior_and_clipped_border_paths(case):
    from tests.kernels.test_cnn_kernels import fx, graph_of
    from tests.kernels.test_kernels import check_all_backends

    rng = np.random.default_rng(len(case["x"]) * 7 + case["group"])
    xt, wt, bt = fx(case["x"], 16), fx(case["w"], 14), fx((case["w"][0],), 20)
    attrs = {k: case[k] for k in ("strides", "pads", "dilations", "group")}
    nodes = [("conv", [0, 1, 2], {**attrs, "frac": 16}), ("conv", [0, 1], {**attrs, "frac": 8})]
    g, x = graph_of("conv", [xt, wt, bt], nodes, rng)  # full int32 range: wrap-around sums
    check_all_backends(g, x, mips=case["x"][-1] < 10)


def sweep(f: int, size: int, rng) -> np.ndarray:
    """x over the int32 range: the extremes, ±1 ulp around 0 and around them, a dense grid
    of |x| < 16 in value (where the nonlinear ops change), and random values of every size."""
    from opmlc.ir import fixedpoint as fp

    edges = np.array([0, 1, -1, 2, -2, fp.INT32_MIN, fp.INT32_MIN + 1, fp.INT32_MAX, fp.INT32_MAX - 1], np.int64)
    grid = np.linspace(-(16 << f) if f < 27 else fp.INT32_MIN, (16 << f) if f < 27 else fp.INT32_MAX, size)
    wild = rng.integers(fp.INT32_MIN, fp.INT32_MAX, size, endpoint=True) >> rng.integers(0, 32, size)
    return np.concatenate([edges, grid.astype(np.int64), wild]).astype(np.int32)


@pytest.mark.parametrize("f,fo", [(16, 16), (0, 30), (30, 8), (24, 30), (12, 29), (20, 0)])
def test_nonlinear_unary_kinds_natively_on_a_dense_sweep(f, fo):
    """sigmoid, tanh, exp, erf and log bit for bit with the interpreter, saturation counts
    included, natively on 60,000 inputs per kind."""
    from opmlc.ir.graph import GraphBuilder
    from tests.kernels.harness import interp_and_native
    from tests.kernels.test_cnn_kernels import fx

    rng = np.random.default_rng(f * 100 + fo)
    x = sweep(f, 30_000, rng)
    kinds = ["sigmoid", "tanh", "exp", "erf", "log"]
    gb = GraphBuilder("sweep")
    ref = gb.add_input("x", fx((x.size,), f))
    for kind in kinds:
        gb.mark_output(gb.add_node("unary", [ref], {"kind": kind, "frac": fo}))
    g = gb.build()
    out = interp_and_native(g, [x])  # asserts equal saturation counts per node
    for v in g.outputs:
        assert np.array_equal(out.values[v], out.native[v])


@pytest.mark.parametrize("f,fo", [(16, 16), (24, 30), (8, 2)])
def test_nonlinear_unary_kinds_in_the_vm_on_edges(f, fo):
    from tests.kernels.test_cnn_kernels import fx, graph_of
    from tests.kernels.test_kernels import check_all_backends

    rng = np.random.default_rng(f + fo)
    kinds = ["sigmoid", "tanh", "exp", "erf", "log"]
    g, x = graph_of("edges", [fx((60,), f)], [("unary", [0], {"kind": k, "frac": fo}) for k in kinds], rng)
    x[0][:] = sweep(f, 30, rng)[:60]
    check_all_backends(g, x)


@pytest.mark.parametrize("f,fo", [(16, 16), (30, 30), (0, 15), (20, 10)])
def test_sqrt_in_the_vm_on_edges(f, fo):
    """unary sqrt (MIPS: the Karatsuba isqrt64) bit for bit with the interpreter in the VM and
    unicorn, shifts 2fo − f from 0 to 30, the int32 extremes and negatives (0)."""
    from tests.kernels.test_cnn_kernels import fx, graph_of
    from tests.kernels.test_kernels import check_all_backends

    rng = np.random.default_rng(f * 31 + fo)
    g, x = graph_of("sqrt", [fx((60,), f)], [("unary", [0], {"kind": "sqrt", "frac": fo})], rng)
    x[0][:] = sweep(f, 30, rng)[:60]
    check_all_backends(g, x)


STEP_BUDGETS = {  # issue 13: MIPS steps per element / per multiply-add (bench/mips_cost.py)
    "sigmoid": (lambda c: c.per_element(c.unary("sigmoid"), 32), 300),
    "tanh": (lambda c: c.per_element(c.unary("tanh"), 32), 300),
    "exp": (lambda c: c.per_element(c.unary("exp"), 32), 300),
    "erf": (lambda c: c.per_element(c.unary("erf"), 32), 300),
    "log": (lambda c: c.per_element(c.unary("log"), 32), 300),
    "div (binary, fx)": (lambda c: c.per_element(c.binary("div"), 32), 300),
    "sqrt": (lambda c: c.per_element(c.unary("sqrt"), 32), 300),
    "softmax row 32": (lambda c: c.per_element(c.softmax(32), 64), 300),
    "layer norm row 64": (lambda c: c.per_element(c.norm("layer", 64), 64), 300),
    "matmul 1x8": (lambda c: c.per_element(c.matmul(1, 8, True), 32) / 8, 7),
    "matmul 5x9": (lambda c: c.per_element(c.matmul(5, 9, False), 32) / 45, 7),
    "conv 3x3 pad 1": (lambda c: c.per_element(c.conv(6, 1), 2) / c.conv_madds(6, 1), 7),
    "qconv i8 3x3 pad 1": (lambda c: c.qconv_per_madd(6, 1), 7),
    # one hand-written madd chain per block (kernels/_mipsdot.py); blocks of 32 pay its call
    "qmatmul i8 1x8": (lambda c: c.qmatmul_per_madd("I8", 1, 8, 128, False), 7),
    "qmatmul i4 1x8 block 32": (lambda c: c.qmatmul_per_madd("I4", 1, 8, 32, False), 7),
    "qmatmul i8 1x8 block 32 zp": (lambda c: c.qmatmul_per_madd("I8", 1, 8, 32, True), 7),
    "qmatmul i4 1x8 block 32 zp": (lambda c: c.qmatmul_per_madd("I4", 1, 8, 32, True), 7),
    "qmatmul i8 4x8": (lambda c: c.qmatmul_per_madd("I8", 4, 8, 128, False), 7),
}


@pytest.mark.parametrize("name", list(STEP_BUDGETS))
def test_mips_steps_stay_within_the_budget(name):
    """A count of VM steps (deterministic), not a timing."""
    from tests.kernels import cost

    measure, budget = STEP_BUDGETS[name]
    assert measure(cost) <= budget


@pytest.mark.parametrize("fa,fb,fo", [(30, 0, 0), (20, 0, 1), (16, 16, 15), (16, 16, 16), (8, 20, 0),
                                      (0, 30, 1), (0, 16, 15), (30, 30, 30)])
def test_fx_division_natively_on_a_dense_sweep(fa, fb, fo):
    """binary div (shift s = fo + fb − fa from −30 to 31: divisors shifted past 2^32, quotients
    past int32, division by 0) bit for bit with the interpreter, counts included."""
    from opmlc.ir.graph import GraphBuilder
    from tests.kernels.harness import interp_and_native
    from tests.kernels.test_cnn_kernels import fx

    rng = np.random.default_rng(fa * 1000 + fb * 10 + fo)
    a = sweep(fa, 20_000, rng)
    bb = rng.permutation(sweep(fb, 20_000, rng))
    bb[:9] = 0  # the edges of a divided by 0
    gb = GraphBuilder("divs")
    ra, rb = gb.add_input("a", fx((a.size,), fa)), gb.add_input("b", fx((a.size,), fb))
    gb.mark_output(gb.add_node("binary", [ra, rb], {"kind": "div", "frac": fo}))
    g = gb.build()
    out = interp_and_native(g, [a, bb])
    assert np.array_equal(out.values[g.outputs[0]], out.native[g.outputs[0]])


@pytest.mark.parametrize("fa,fb,fo", [(16, 16, 16), (30, 0, 0), (0, 30, 1), (16, 16, 15), (8, 20, 0), (20, 0, 16)])
def test_fx_division_in_the_vm_on_edges(fa, fb, fo):
    """binary div's MIPS path (no i64 division: div_round_q32 on the magnitude, ties down for a
    negative quotient; for s < 0 divisors shifted past 2^32) bit for bit with the interpreter
    in the VM and unicorn: shifts s from −30 to 30, the int32 extremes, division by 0, exact
    halves and quotients past int32."""
    from opmlc.ir.graph import GraphBuilder
    from tests.kernels.test_cnn_kernels import fx
    from tests.kernels.test_kernels import check_all_backends

    rng = np.random.default_rng(fa * 1000 + fb * 10 + fo)
    a = sweep(fa, 24, rng)
    bb = rng.permutation(sweep(fb, 24, rng))
    bb[:9] = 0  # the edges of a divided by 0
    s = fo + fb - fa
    if s >= 0:  # exact halves: a·2^s = (2j + 1)·b/2 for even b, quotients j and −j − 1
        b_half = np.array([2, -2, 6, -6, 1 << 20, -(1 << 20)], np.int64)
        a_half = (np.array([3, 3, -9, 9, 5 << 19, -(5 << 19)], np.int64) >> s) << s
        a = np.concatenate([a, a_half.astype(np.int32)])
        bb = np.concatenate([bb, b_half.astype(np.int32)])
    gb = GraphBuilder("divs")
    ra, rb = gb.add_input("a", fx((a.size,), fa)), gb.add_input("b", fx((a.size,), fb))
    gb.mark_output(gb.add_node("binary", [ra, rb], {"kind": "div", "frac": fo}))
    check_all_backends(gb.build(), [a, bb])


@pytest.mark.parametrize("dtype,m,k,n,bs,zp", [
    ("I8", 1, 70, 9, 16, True),   # column tiles + a leftover column, unrolled blocks with a rest
    ("I4", 1, 68, 6, 34, False),  # packed pairs, 17 pairs per block: unrolled by 4 + 1
    ("I4", 3, 45, 5, 9, True),    # odd blocks: the element-wise nibble path, three leftover rows
    ("I8", 5, 12, 4, 12, False),  # a row tile, then a column tile of the fifth row
])
def test_qmatmul_column_tiles(dtype, m, k, n, bs, zp):
    from opmlc.ir.types import DType
    from tests.kernels.test_kernels import check_all_backends, rand_fx
    from tests.kernels.test_qweight_kernels import qmatmul_graph

    rng = np.random.default_rng(m * 100 + k + n)
    g = qmatmul_graph(rng, DType[dtype], (m, k), n, bs, zp, True)
    check_all_backends(g, [rand_fx(rng, (m, k))])


def qconv_graph(rng, dtype, x_shape, w_shape, zp, attrs):
    from opmlc.ir.graph import GraphBuilder
    from opmlc.ir.types import DType, TensorType
    from tests.kernels.test_kernels import fx, rand_fx
    from tests.kernels.test_qweight_kernels import qdata

    dtype, m = DType[dtype], w_shape[0]
    g = GraphBuilder("t_qconv")
    refs = [g.add_input("x", fx(x_shape, 12))]
    refs.append(g.add_initializer("w", qdata(rng, dtype, w_shape), TensorType(dtype, w_shape)))
    refs.append(g.add_initializer("w/scale", rng.integers(-4096, 4096, (m, 1)).astype(np.int32), fx((m, 1), 16)))
    if zp:
        refs.append(g.add_initializer("w/zp", qdata(rng, dtype, (m, 1), False), TensorType(dtype, (m, 1))))
    refs.append(g.add_initializer("b", rand_fx(rng, (m,), 1 << 20), fx((m,), 20)))
    g.mark_output(g.add_node("qconv", refs, {**attrs, "frac": 12, "block_size": int(np.prod(w_shape[1:]))}, "y"))
    return g.build(), [rand_fx(rng, x_shape)]


@pytest.mark.parametrize("dtype,x_shape,w_shape,zp,strides,pads,dilations,group", [
    ("I8", (1, 4, 7, 6), (8, 2, 3, 3), True, [1, 2], [4, 1, 3, 0], [2, 1], 2),  # tiles, windows off the input
    ("I4", (2, 3, 9), (4, 3, 5), False, [2], [3, 2], [2], 1),
    ("I8", (1, 1, 10, 10), (4, 1, 9, 9), False, [1, 1], [1, 1, 1, 1], [1, 1], 1),  # 81 taps: loops
])
def test_qconv_interior_and_clipped_border_paths(dtype, x_shape, w_shape, zp, strides, pads, dilations, group):
    from tests.kernels.test_kernels import check_all_backends

    rng = np.random.default_rng(len(x_shape) + group)
    attrs = {"strides": strides, "pads": pads, "dilations": dilations, "group": group}
    g, x = qconv_graph(rng, dtype, x_shape, w_shape, zp, attrs)
    check_all_backends(g, x, mips=x_shape[-1] < 10)
