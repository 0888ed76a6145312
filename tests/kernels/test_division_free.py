"""The kernels' i64-division-free helpers (backend/kernels/_fx.py div_round_q32) against
fixedpoint's exact integer formulas, natively on many random and edge operands and as a MIPS
ELF under unicorn on a sample."""

from __future__ import annotations

import numpy as np
import pytest
from llvmlite import ir

from opmlc.backend.kernels._fx import div_round_q32
from opmlc.backend.kernels._ir import I64, PTR, VOID, c32, load, loop, store
from opmlc.backend.target import load_native
from tests.backend.backend_harness import run_both


def helper_module(count: int) -> str:
    """task(regions): out[i] = div_round_q32(n[i], d[i]) for i < count."""
    m = ir.Module("div")
    fn = ir.Function(m, ir.FunctionType(VOID, [PTR, ir.IntType(32)]), "task")
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    regions = fn.args[0]
    n, d, out = (b.load(b.gep(regions, [c32(i)], source_etype=PTR), typ=PTR) for i in range(3))
    with loop(b, count) as i:
        store(b, b.call(div_round_q32(m), [load(b, n, i, I64), load(b, d, i, I64)]), out, i)
    b.ret_void()
    return str(m)


def expected(n: np.ndarray, d: np.ndarray) -> np.ndarray:
    """round_div(n, d) = floor(n/d) + (2r ≥ d), or 2^32 when floor(n/d) ≥ 2^32, exactly."""
    out = []
    for a, c in zip(n.tolist(), d.tolist(), strict=True):
        q, r = divmod(a, c)
        out.append(1 << 32 if q >= 1 << 32 else q + (2 * r >= c))
    return np.array(out, dtype=np.int64)


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
    return np.concatenate([en.ravel(), n]), np.concatenate([ed.ravel(), d])


def test_div_round_q32_natively_on_random_and_edge_operands():
    rng = np.random.default_rng(13)
    n, d = operands(rng, 200_000)
    out = np.zeros_like(n)
    load_native(helper_module(len(n)), cache_dir=None).run([n, d, out])
    want = expected(n, d)
    bad = np.flatnonzero(out != want)
    assert bad.size == 0, f"n={n[bad[0]]} d={d[bad[0]]}: {out[bad[0]]} != {want[bad[0]]}"


def test_div_round_q32_on_mips_equals_native():
    rng = np.random.default_rng(14)
    n, d = operands(rng, 600)
    both = run_both(helper_module(len(n)), [n, d, np.zeros_like(n)], outputs=[2])
    assert both.mips == both.native
    assert np.array_equal(np.frombuffer(both.mips[0], dtype=">i8"), expected(n, d))


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
