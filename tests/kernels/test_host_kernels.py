"""The host kernels (opmlc/backend/kernels/native/) against the interpreter, bit for bit and
count for count, on random shapes that reach every tile and tail, with int32 edge values, on 1,
2 and 3 threads; and the MIPS module untouched by them. (The portable kernels' tests in
test_kernels.py and test_qweight_kernels.py run the host kernels too wherever those take a node:
the native build is the host module.)"""

from __future__ import annotations

import numpy as np
import pytest

from opmlc.backend.codegen import generate_module
from opmlc.backend.kernels.native import SPLIT_MIN_WORK, qmatmul_vnni, split_worth
from opmlc.backend.native import NativeSession, host_module, native_program
from opmlc.ir.interpreter import run_graph
from opmlc.ir.types import DType
from tests.kernels.test_kernels import check_all_backends, fx, rand_fx, single_op
from tests.kernels.test_qweight_kernels import qmatmul_graph


def _matmul(rng, m, k, n, trans, batch_a=(), batch_b=(), bias=True, scales=None):
    fa, fb = (int(v) for v in rng.integers(0, 31, size=2))
    fo = int(rng.integers(0, min(fa + fb, 30) + 1))
    types = [fx((*batch_a, m, k), fa), fx((*batch_b, n, k) if trans else (*batch_b, k, n), fb)]
    if bias:
        types.append(fx((n,), int(rng.integers(0, min(fa + fb, 30) + 1))))
    return single_op("matmul", types, {"frac": fo, "transpose_b": trans}, rng, scales=scales,
                     as_init=(1, 2) if bias else (1,))


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("trans", [True, False])
def test_host_matmul_equals_interpreter_on_random_shapes_and_edges(seed, trans):
    rng = np.random.default_rng(100 + seed)
    m, n = (int(v) for v in rng.integers(1, 40, size=2))
    k = int(rng.integers(8, 45))
    g, x = _matmul(rng, m, k, n, trans, bias=seed % 3 != 0)
    assert "x i64>" in host_module(g) or (not trans and n < 8), "the host kernel took the node"
    check_all_backends(g, x, mips=False)


@pytest.mark.parametrize("trans", [True, False])
def test_host_matmul_counts_saturation_like_the_interpreter(trans):
    """No rounding shift (fo = fa + fb): the edge values' products saturate most outputs."""
    rng = np.random.default_rng(9)
    types = [fx((6, 23), 10), fx((19, 23) if trans else (23, 19), 12), fx((19,), 22)]
    g, x = single_op("matmul", types, {"frac": 22, "transpose_b": trans}, rng, as_init=(1, 2))
    assert check_all_backends(g, x, mips=False).saturated


@pytest.mark.parametrize("trans", [True, False])
def test_host_matmul_with_broadcast_batch(trans):
    rng = np.random.default_rng(7)
    g, x = _matmul(rng, 5, 19, 21, trans, batch_a=(2, 1), batch_b=(3,), bias=False)
    check_all_backends(g, x, mips=False)


def test_host_matmul_small_values_do_not_saturate():
    """In-range values (the common case): exact sums, no saturation counted."""
    rng = np.random.default_rng(3)
    g, x = _matmul(rng, 9, 64, 33, True, bias=False, scales=[1000, 1000])
    assert not check_all_backends(g, x, mips=False).saturated


@pytest.mark.parametrize("trans", [True, False])
def test_split_node_gives_the_same_bits_and_counts_on_any_thread_count(trans):
    rng = np.random.default_rng(11)
    m, k, n = 17, 136, SPLIT_MIN_WORK // (17 * 136) + 35  # just over the split threshold, ragged
    g, x = _matmul(rng, m, k, n, trans)
    assert split_worth(g, 0)
    want_sat: dict[int, int] = {}
    want = run_graph(g, x, saturated=want_sat)[g.outputs[0]]
    session = NativeSession(native_program(g), g, threads=1)
    for threads in (1, 2, 3, 1):
        sat: dict[int, int] = {}
        (got,) = session.run(x, saturated=sat, threads=threads)
        assert np.array_equal(got, want), f"{threads} threads"
        assert sat == want_sat and sat, f"{threads} threads: counts {sat} vs {want_sat}"
        (got,) = session.run(x, node=0, values=[None] * len(g.values), saturated=(sat := {}), threads=threads)
        assert np.array_equal(got, want) and sat == want_sat, f"node task, {threads} threads"


def test_mips_module_has_no_host_kernel():
    """The MIPS module (and the plain counting one) is what the portable kernels give: generating
    a host module first leaves no state behind, and no vector type or thread entry leaks in."""
    rng = np.random.default_rng(5)
    g, _ = _matmul(rng, 64, 136, 130, True)
    plain, counted = generate_module(g), generate_module(g, count_saturation=True)
    host = host_module(g)
    assert "<8 x i64>" in host and "task_part" in host and "task_span" in host
    assert generate_module(g) == plain and generate_module(g, count_saturation=True) == counted
    for text in (plain, counted):
        assert "x i64>" not in text and "task_part" not in text and "task_span" not in text


def test_session_rejects_a_bad_thread_count():
    from opmlc.errors import InputError

    rng = np.random.default_rng(1)
    g, _ = _matmul(rng, 2, 8, 8, True)
    for bad in (0, -1, 1.5, True):
        with pytest.raises(InputError, match="threads"):
            NativeSession(native_program(g), g, threads=bad)


QCASES = [  # dtype, x shape, N, block, zero point, bias
    (DType.I8, (1, 40), 5, 40, False, True),   # one token, per-channel scale
    (DType.I8, (6, 48), 9, 16, True, False),   # row tiles and a leftover row
    (DType.I8, (2, 3, 24), 7, 8, True, True),  # batch dimensions
    (DType.I4, (1, 64), 6, 32, False, True),
    (DType.I4, (5, 96), 11, 16, True, True),
    (DType.I4, (4, 32), 3, 32, True, False),
]


@pytest.fixture
def lane_kernel(monkeypatch):
    """qmatmul.py's double / i64 lane kernel, even on a host with VNNI (which takes its nodes)."""
    monkeypatch.setattr(qmatmul_vnni, "ENABLED", False)


@pytest.mark.parametrize("dtype,x_shape,n,bs,zp,bias", QCASES)
def test_host_qmatmul_equals_interpreter_at_the_edges(lane_kernel, dtype, x_shape, n, bs, zp, bias):
    """int32-edge activations against weights with the dtype's extremes (q − zp up to ±255)."""
    rng = np.random.default_rng(sum(x_shape) + n + bs)
    g = qmatmul_graph(rng, dtype, x_shape, n, bs, zp, bias)
    assert "<8 x i8>" in host_module(g), "the host kernel took the node"
    out = check_all_backends(g, [rand_fx(rng, x_shape)], mips=False)
    assert out.saturated


@pytest.mark.parametrize("dtype", [DType.I8, DType.I4])
def test_host_qmatmul_split_over_threads(lane_kernel, dtype):
    rng = np.random.default_rng(21)
    m, k = 5, 256
    n = SPLIT_MIN_WORK // (m * k) + 13
    g = qmatmul_graph(rng, dtype, (m, k), n, 32, True, True, scale_bits=8)
    assert split_worth(g, 0)
    x = [rand_fx(rng, (m, k), 1 << 20)]
    want_sat: dict[int, int] = {}
    want = run_graph(g, x, saturated=want_sat)[g.outputs[0]]
    session = NativeSession(native_program(g), g)
    for threads in (1, 2, 3):
        sat: dict[int, int] = {}
        (got,) = session.run(x, saturated=sat, threads=threads)
        assert np.array_equal(got, want) and sat == want_sat, f"{threads} threads"


def _host_divmod():
    """floor_divmod_host compiled natively as `void divmod(ptr n, ptr d, ptr q, ptr r, i32 count)`."""
    import ctypes

    from llvmlite import ir

    from opmlc.backend.kernels._host import floor_divmod_host, host_arithmetic
    from opmlc.backend.kernels._ir import I32, I64, PTR, VOID, load, loop, store
    from opmlc.backend.target import load_native

    module = ir.Module("divmod")
    with host_arithmetic(module):
        fn = ir.Function(module, ir.FunctionType(VOID, [PTR] * 4 + [I32]), "divmod")
        b = ir.IRBuilder(fn.append_basic_block("entry"))
        n_p, d_p, q_p, r_p, count = fn.args
        with loop(b, count) as i:
            q, r = floor_divmod_host(b, load(b, n_p, i, I64), load(b, d_p, i, I64))
            store(b, q, q_p, i)
            store(b, r, r_p, i)
        b.ret_void()
    task = ir.Function(module, ir.FunctionType(VOID, [PTR, I32]), "task")
    ir.IRBuilder(task.append_basic_block("entry")).ret_void()
    program = load_native(str(module), cache_dir=None)
    cfn = ctypes.CFUNCTYPE(None, *[ctypes.c_void_p] * 4, ctypes.c_int32)(
        program._engine.get_function_address("divmod"))
    return program, cfn


def test_host_division_is_exact_floor_division_at_the_edges():
    """The FPU path and its sdiv fallback against Python's integers: the fast path's bounds
    (|n| near 2^62, |n / d| near 2^50), quotients one off a multiple, INT64_MIN, d = 1."""
    _program, divmod_fn = _host_divmod()
    rng = np.random.default_rng(0)
    i64 = np.iinfo(np.int64)
    special_n = [0, 1, -1, i64.min, i64.max, (1 << 62) - 1, 1 << 62, -(1 << 62), -(1 << 62) - 1,
                 (1 << 60), (1 << 54) + 1, -(1 << 53) - 3, (1 << 50) * 3 - 1, (1 << 50) * 3]
    special_d = [1, 2, 3, (1 << 30), (1 << 30) + 1, (1 << 31) - 1, (1 << 53) + 1, (1 << 62) - 1, i64.max]
    pairs = [(n, d) for n in special_n for d in special_d]
    d_rand = rng.integers(1, 1 << 40, 4000)
    q_rand = rng.integers(-(1 << 50), 1 << 50, 4000)
    for d, q in zip(d_rand.tolist(), q_rand.tolist(), strict=True):  # n right at multiples of d, ± 1
        for n in (q * d - 1, q * d, q * d + 1, q * d + d // 2, q * d + (d - 1) // 2):
            if i64.min <= n <= i64.max:
                pairs.append((n, d))
    pairs += list(zip(rng.integers(i64.min, i64.max, 4000).tolist(), rng.integers(1, i64.max, 4000).tolist(), strict=True))
    n = np.array([p[0] for p in pairs], np.int64)
    d = np.array([p[1] for p in pairs], np.int64)
    q, r = np.empty_like(n), np.empty_like(n)
    divmod_fn(n.ctypes.data, d.ctypes.data, q.ctypes.data, r.ctypes.data, len(n))
    want = [divmod(int(a), int(c)) for a, c in pairs]
    assert q.tolist() == [w[0] for w in want] and r.tolist() == [w[1] for w in want]


@pytest.mark.parametrize("sign", [1, -1])
def test_host_qmatmul_i8_long_block_of_extreme_products_is_exact(lane_kernel, sign):
    """The i8 kernel sums a block in doubles: a 4096-element block of the largest products
    (|x| = 2^31, |q − zp| = 255) lands near 2^51, unsaturated (shift 20), on the exact bits."""
    from opmlc.ir.graph import GraphBuilder
    from opmlc.ir.types import TensorType

    k, n = 4096, 5
    g = GraphBuilder("t_long_block")
    x = g.add_input("x", fx((2, k), 12))
    q = np.full((n, k), -128 if sign > 0 else 127, np.int8)
    q[:, 1::7] = 127 if sign > 0 else -128  # a few of the other sign: the sum is not a multiple of a power of two
    zp = np.full((n, 1), 127 if sign > 0 else -128, np.int8)
    refs = [x, g.add_initializer("w", q, TensorType(DType.I8, (n, k))),
            g.add_initializer("w/scale", np.array([[1], [3], [-1], [7], [1 << 10]], np.int32), fx((n, 1), 20)),
            g.add_initializer("w/zp", zp, TensorType(DType.I8, (n, 1)))]
    g.mark_output(g.add_node("qmatmul", refs, {"block_size": k, "frac": 12}, "y"))
    graph = g.build()
    assert "fma" in host_module(graph)
    xs = np.where(np.arange(2 * k).reshape(2, k) % 5 == 0, np.int32(2**31 - 1), np.int32(-2**31))
    out = check_all_backends(graph, [xs.astype(np.int32)], mips=False)
    assert not np.all(np.abs(out.values[graph.outputs[0]][:, :4]) == 2**31 - 1), "most outputs stay in range"


# ---- the VNNI byte-plane kernel (kernels/native/qmatmul_vnni.py), on hosts that have VNNI

needs_vnni = pytest.mark.skipif(not qmatmul_vnni.has_vnni(), reason="this host's CPU has no AVX-512 VNNI")

VCASES = [  # dtype, x shape, N, block, zero point, bias: every chunk/block/tail/tile arrangement
    (DType.I8, (1, 64), 4, 64, False, False),    # one chunk, one 1×4 tile
    (DType.I8, (1, 67), 9, 67, True, True),      # per channel, K = a chunk + 3 (masked weight tail), odd K
    (DType.I8, (3, 40), 7, 8, True, True),       # 8 blocks a chunk, K < a chunk; 2×3 and 1-row tiles
    (DType.I8, (2, 3, 200), 13, 4, False, True),  # blocks of 4 (one a lane), batch dimensions
    (DType.I8, (5, 1100), 5, 1100, False, True),  # per channel, 18 chunks: two i32 runs (FLUSH) and a tail
    (DType.I8, (4, 2100), 6, 1024, True, False),  # blocks of 16 chunks, the last block short
    (DType.I8, (2, 300), 4, 128, False, False),   # blocks of two chunks, the last one masked
    (DType.I4, (1, 128), 5, 32, False, True),     # 4 blocks a chunk
    (DType.I4, (5, 100), 9, 32, True, True),      # K < a chunk, the last block short
    (DType.I4, (3, 300), 14, 300, True, False),   # per channel, masked tail
    (DType.I4, (2, 520), 7, 8, False, True),      # blocks of 8 (one a lane)
    (DType.I4, (6, 2200), 3, 2048, True, True),   # blocks of 16 chunks, a short last block
    (DType.I4, (1, 4200), 4, 4200, False, True),  # per channel, 33 chunks: three i32 runs
]


@needs_vnni
@pytest.mark.parametrize("exact_bits", [False, True])
@pytest.mark.parametrize("dtype,x_shape,n,bs,zp,bias", VCASES)
def test_vnni_qmatmul_equals_interpreter(dtype, x_shape, n, bs, zp, bias, exact_bits):
    """int32-edge activations (INT32_MIN/MAX, −1, 0, 1 among random ones) against q at the
    dtype's extremes, zero points included. `exact_bits`: small scales and a rounding shift of 12
    keep most outputs unsaturated, so every bit above the 12th of each sum is compared; else the
    usual scales saturate most outputs (the counts are compared)."""
    rng = np.random.default_rng(sum(x_shape) + n + bs)
    kw = {"scale_bits": 1, "fs": 4, "fo": 4} if exact_bits else {}
    g = qmatmul_graph(rng, dtype, x_shape, n, bs, zp, bias, **kw)
    assert "vpdpbusd" in host_module(g), "the VNNI kernel took the node"
    out = check_all_backends(g, [rand_fx(rng, x_shape)], mips=False)
    y = out.values[g.outputs[0]]
    if exact_bits:
        assert np.mean(np.abs(y.astype(np.int64)) < 2**31 - 1) > 0.5, "most outputs are in range"
    else:
        assert out.saturated


@needs_vnni
@pytest.mark.parametrize("dtype", [DType.I8, DType.I4])
def test_vnni_qmatmul_on_random_shapes(dtype):
    """Random shapes and block sizes (any the kernel takes), small activations: exact low bits."""
    rng = np.random.default_rng(17 if dtype is DType.I8 else 18)
    blocks = [4, 8, 16, 32, 64, 128, 256] if dtype is DType.I8 else [8, 16, 32, 64, 128, 256]
    for _ in range(6):
        m, n = int(rng.integers(1, 8)), int(rng.integers(1, 30))
        k = int(rng.integers(1, 400)) * (2 if dtype is DType.I4 else 1)
        bs = k if rng.random() < 0.3 else int(rng.choice(blocks))
        g = qmatmul_graph(rng, dtype, (m, k), n, bs, bool(rng.integers(2)), bool(rng.integers(2)), fo=30)
        assert "vpdpbusd" in host_module(g), (m, k, n, bs)
        check_all_backends(g, [rand_fx(rng, (m, k), 1 << 20)], mips=False)


@needs_vnni
def test_vnni_qmatmul_leaves_other_blocks_to_the_lane_kernel():
    """Blocks that straddle a lane or a chunk (and i4 rows of odd K) go to qmatmul.py's kernel."""
    rng = np.random.default_rng(4)
    for dtype, k, bs in [(DType.I8, 96, 48), (DType.I4, 96, 12), (DType.I4, 37, 16)]:
        g = qmatmul_graph(rng, dtype, (2, k), 3, bs, True, True)
        assert "vpdpbusd" not in host_module(g)
        check_all_backends(g, [rand_fx(rng, (2, k))], mips=False)


@needs_vnni
@pytest.mark.parametrize("dtype", [DType.I8, DType.I4])
def test_vnni_qmatmul_split_over_threads(dtype):
    """Parts of output columns (ragged: N not a multiple of the tiles or of the threads) give the
    bits and counts of one thread."""
    rng = np.random.default_rng(23)
    m, k = 5, 320
    n = SPLIT_MIN_WORK // (m * k) + 13
    g = qmatmul_graph(rng, dtype, (m, k), n, 32, True, True, scale_bits=8)
    assert split_worth(g, 0) and "vpdpbusd" in host_module(g)
    x = [rand_fx(rng, (m, k))]
    want_sat: dict[int, int] = {}
    want = run_graph(g, x, saturated=want_sat)[g.outputs[0]]
    session = NativeSession(native_program(g), g)
    for threads in (1, 2, 3):
        sat: dict[int, int] = {}
        (got,) = session.run(x, saturated=sat, threads=threads)
        assert np.array_equal(got, want) and sat == want_sat, f"{threads} threads"


# ---- the double-lane matmul (kernels/native/matmul_fma.py), taken when the operands' ranges allow

@pytest.mark.parametrize("seed", range(4))
def test_fma_matmul_equals_interpreter_on_bounded_operands(seed):
    """Dense layers on a batch with values in range (the run-time check passes): random shapes
    reaching the 8×3 tiles, the leftover rows and columns and the K mod 8 tail."""
    rng = np.random.default_rng(300 + seed)
    m, n = int(rng.integers(4, 40)), int(rng.integers(1, 40))
    k = int(rng.integers(8, 300))
    g, x = _matmul(rng, m, k, n, True, bias=seed % 2 == 0, scales=[1 << 20, 1 << 14, 1 << 24])
    assert "mm.fma" in host_module(g)
    check_all_backends(g, x, mips=False)


def _fma_kernel(m, k, n):
    """matmul_fma's range check and kernel compiled alone as `i32 f(ptr x, ptr w, ptr out)`: the
    raw i64 sums of x [m, k] @ w [n, k]ᵀ (no rescale, no saturation), and the check's verdict."""
    import ctypes

    from llvmlite import ir

    from opmlc.backend.kernels._ir import I32, PTR, VOID, c32, store
    from opmlc.backend.kernels.native import matmul_fma
    from opmlc.backend.target import load_native

    module = ir.Module("fma")
    fn = ir.Function(module, ir.FunctionType(I32, [PTR] * 3), "fma_sums")
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    xp, wp, outp = fn.args
    ok = matmul_fma.in_range(b, xp, wp, m, k, c32(0), c32(n))
    matmul_fma.emit(b, xp, wp, m, k, c32(0), c32(n),
                    lambda total, _base, i, j: store(b, total, outp, b.add(b.mul(i, c32(n)), j)))
    b.ret(b.zext(ok, I32))
    task = ir.Function(module, ir.FunctionType(VOID, [PTR, I32]), "task")
    ir.IRBuilder(task.append_basic_block("entry")).ret_void()
    program = load_native(str(module), cache_dir=None)
    cfn = ctypes.CFUNCTYPE(ctypes.c_int32, *[ctypes.c_void_p] * 3)(program._engine.get_function_address("fma_sums"))

    def run(x, w):
        out = np.zeros((m, n), np.int64)
        verdict = cfn(x.ctypes.data, w.ctypes.data, out.ctypes.data)
        return bool(verdict), out

    return program, run


@pytest.mark.parametrize("over", [0, 1])
def test_fma_matmul_is_exact_up_to_its_bound(over):
    """Operands at the check's edge: |x| = 2^31 (INT32_MIN) and |w| up to 2^(20 + over), K = 24
    + 5 (three products a lane, ceil(log2 3) = 2, and a tail of 5): e_a + e_b + 2 = 53 + over.
    At 53 the check passes and the raw sums equal Python's integers (odd sums near 2^53, where
    a rounded double would show); at 54 it refuses (the i64 kernel takes the part)."""
    m, k, n = 9, 29, 7
    w = np.full((n, k), -(1 << (20 + over)), np.int32)
    w[:, 1::2] += 1 + 2 * np.arange(n)[:, None]  # odd, near the extreme
    x = np.full((m, k), np.iinfo(np.int32).min, np.int32)
    x[:, ::3] = np.iinfo(np.int32).max
    x[1] = 7
    _program, run = _fma_kernel(m, k, n)
    ok, got = run(x, w)
    assert ok == (over == 0)
    if ok:
        want = x.astype(object) @ w.astype(object).T
        assert (got.astype(object) == want).all()
        assert np.abs(got).max() > 2**52, "the sums reach the bound"


def test_fma_matmul_random_in_range_sums_are_exact():
    rng = np.random.default_rng(5)
    m, k, n = 13, 203, 11
    _program, run = _fma_kernel(m, k, n)
    for ea in (10, 20, 26):
        x = rng.integers(-(1 << ea), 1 << ea, (m, k), endpoint=True).astype(np.int32)
        w = rng.integers(-(1 << (53 - 5 - ea)), 1 << (53 - 5 - ea), (n, k)).astype(np.int32)
        ok, got = run(x, w)
        assert ok
        assert (got.astype(object) == x.astype(object) @ w.astype(object).T).all()


def test_fma_matmul_split_over_threads(monkeypatch):
    from opmlc.backend.kernels.native import matmul_vnni16

    monkeypatch.setattr(matmul_vnni16, "ENABLED", False)  # a constant weight of ≥ 64 columns: else VNNI's
    rng = np.random.default_rng(12)
    m, k = 33, 200
    n = SPLIT_MIN_WORK // (m * k) + 29
    g, x = _matmul(rng, m, k, n, True, scales=[1 << 16, 1 << 15, 1 << 24])
    assert split_worth(g, 0) and "mm.fma" in host_module(g)
    want = run_graph(g, x)[g.outputs[0]]
    session = NativeSession(native_program(g), g)
    for threads in (1, 2, 3):
        (got,) = session.run(x, threads=threads)
        assert np.array_equal(got, want), f"{threads} threads"
