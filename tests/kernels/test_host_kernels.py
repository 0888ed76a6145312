"""The host kernels (opmlc/backend/kernels/native/) against the interpreter, bit for bit and
count for count, on random shapes that reach every tile and tail, with int32 edge values, on 1,
2 and 3 threads; and the MIPS module untouched by them. (The portable kernels' tests in
test_kernels.py and test_qweight_kernels.py run the host kernels too wherever those take a node:
the native build is the host module.)"""

from __future__ import annotations

import numpy as np
import pytest

from opmlc.backend.codegen import generate_module
from opmlc.backend.kernels.native import SPLIT_MIN_WORK, split_worth
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


@pytest.mark.parametrize("dtype,x_shape,n,bs,zp,bias", QCASES)
def test_host_qmatmul_equals_interpreter_at_the_edges(dtype, x_shape, n, bs, zp, bias):
    """int32-edge activations against weights with the dtype's extremes (q − zp up to ±255)."""
    rng = np.random.default_rng(sum(x_shape) + n + bs)
    g = qmatmul_graph(rng, dtype, x_shape, n, bs, zp, bias)
    assert "<8 x i8>" in host_module(g), "the host kernel took the node"
    out = check_all_backends(g, [rand_fx(rng, x_shape)], mips=False)
    assert out.saturated


@pytest.mark.parametrize("dtype", [DType.I8, DType.I4])
def test_host_qmatmul_split_over_threads(dtype):
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
