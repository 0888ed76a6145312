"""The decoding step's 4-bit kernel (kernels/native/qmatvec4.py: a block to an i32 lane, weights
and scales laid out again) against the interpreter, bit for bit and count for count: int32-edge
activations, q at −8 and 7, scales at the int32 extremes, every block size it takes, groups
with a short last one, K past the last block, whole tiles and single rows, 1 to 4 rows, 1 and
2 threads; and the nodes it leaves to qmatmul_vnni.py."""

from __future__ import annotations

import numpy as np
import pytest

from opmlc.backend.kernels.native import node_facts, qmatmul_vnni, qmatvec4, split_worth
from opmlc.backend.native import NativeSession, host_module, native_program
from opmlc.ir import fixedpoint as fp
from opmlc.ir.graph import GraphBuilder
from opmlc.ir.interpreter import run_graph
from opmlc.ir.types import DType, TensorType
from tests.kernels.test_kernels import check_all_backends, fx, rand_fx
from tests.kernels.test_qweight_kernels import qdata, qmatmul_graph

pytestmark = pytest.mark.skipif(not qmatmul_vnni.has_vnni(), reason="this host's CPU has no AVX-512 VNNI")


def _took(g) -> bool:
    return node_facts(g, 0).get("layout") == "blocks" and '"xpad"' in host_module(g)


CASES = [  # x shape, N, block, bias: groups, tiles and tails
    ((1, 64), 4, 32, True),        # one group of 2 blocks, one tile
    ((1, 2048), 9, 32, False),     # 4 whole groups; 2 tiles and a single row
    ((1, 5632), 6, 32, True),      # 11 groups (LLaMA-1.1B's MLP down projection's K)
    ((2, 520), 7, 8, True),        # 65 blocks of 8: 5 groups, the last of one block
    ((3, 300), 5, 64, False),      # K past the last whole block, three rows
    ((4, 1000), 6, 256, True),     # the largest block, four rows, a short last block
    ((1, 2, 100), 3, 128, False),  # one block wider than K, batch dimensions, single rows only
    ((1, 776), 13, 16, True),      # 49 blocks: a group of one
]


@pytest.mark.parametrize("exact_bits", [False, True])
@pytest.mark.parametrize("x_shape,n,bs,bias", CASES)
def test_qmatvec4_equals_interpreter(x_shape, n, bs, bias, exact_bits):
    """`exact_bits`: small scales and a rounding shift of 4 keep the outputs in range, so every
    bit above the 4th of each sum is compared; else most saturate (their counts are compared)."""
    rng = np.random.default_rng(sum(x_shape) + n + bs)
    kw = {"scale_bits": 1, "fs": 4, "fo": 4} if exact_bits else {}
    g = qmatmul_graph(rng, DType.I4, x_shape, n, bs, False, bias, **kw)
    assert _took(g)
    x = rand_fx(rng, x_shape)
    x.reshape(-1)[:4] = [fp.INT32_MIN, fp.INT32_MAX, -1, 0]
    out = check_all_backends(g, [x], mips=False)
    y = out.values[g.outputs[0]].astype(np.int64)
    if exact_bits:
        assert np.all(np.abs(y) < 2**31 - 1), "every output is in range"
    else:
        assert out.saturated


def _extreme_graph(rng, m, k, n, bs):
    """q of one row all −8 and another all 7, scales at ±2^31 in some columns (the i64 totals
    wrap), int32 x at its extremes: the kernel's products at their bounds."""
    nb = -(-k // bs)
    q = qdata(rng, DType.I4, (n, k))
    q[1], q[2] = -8, 7
    s = rng.integers(-(1 << 20), 1 << 20, (n, nb)).astype(np.int32)
    s[3] = np.resize(np.array([fp.INT32_MIN, fp.INT32_MAX], np.int32), nb)
    g = GraphBuilder("t_qmatvec4")
    refs = [g.add_input("x", fx((m, k), 8)),
            g.add_initializer("w", q, TensorType(DType.I4, (n, k))),
            g.add_initializer("w/scale", s, fx((n, nb), 30))]
    g.mark_output(g.add_node("qmatmul", refs, {"block_size": bs, "frac": 8}, "y"))
    return g.build()


@pytest.mark.parametrize("bs", [8, 32, 256])
def test_qmatvec4_at_the_bounds(bs):
    """x all INT32_MIN, then all INT32_MAX, then alternating, against q all −8 / all 7: each
    plane's accumulator at its extreme (module docstring: |acc_p| < 2^21)."""
    rng = np.random.default_rng(bs)
    m, k, n = 2, 4 * bs + 8, 6
    g = _extreme_graph(rng, m, k, n, bs)
    assert _took(g)
    for x in (np.full((m, k), fp.INT32_MIN, np.int32), np.full((m, k), fp.INT32_MAX, np.int32),
              np.resize(np.array([fp.INT32_MIN, fp.INT32_MAX], np.int32), (m, k))):
        check_all_backends(g, [x], mips=False)


def test_qmatvec4_split_over_threads():
    """Parts of weight rows on tile boundaries (N not a multiple of the tile or of the threads)
    give the bits and counts of one thread."""
    rng = np.random.default_rng(41)
    k, n = 2048, 530
    g = qmatmul_graph(rng, DType.I4, (1, k), n, 32, False, True, scale_bits=8)
    assert _took(g) and split_worth(g, 0)
    x = [rand_fx(rng, (1, k))]
    want_sat: dict[int, int] = {}
    want = run_graph(g, x, saturated=want_sat)[g.outputs[0]]
    session = NativeSession(native_program(g), g)
    for threads in (1, 2):
        sat: dict[int, int] = {}
        (got,) = session.run(x, saturated=sat, threads=threads)
        assert np.array_equal(got, want) and sat == want_sat, f"{threads} threads"


def test_qmatvec4_leaves_other_nodes_to_the_byte_plane_kernel():
    """A zero point, five rows of x, or a q that is a graph input: qmatmul_vnni.py's kernel,
    with the same bits."""
    rng = np.random.default_rng(5)
    for x_shape, zp in [((1, 256), True), ((5, 256), False)]:
        g = qmatmul_graph(rng, DType.I4, x_shape, 5, 32, zp, True)
        assert not _took(g) and "vpdpbusd" in host_module(g)
        check_all_backends(g, [rand_fx(rng, x_shape)], mips=False)
    b = GraphBuilder("t_qmatvec4_input")
    refs = [b.add_input("x", fx((1, 128), 12)), b.add_input("w", TensorType(DType.I4, (3, 128))),
            b.add_initializer("w/scale", np.ones((3, 4), np.int32), fx((3, 4), 20))]
    b.mark_output(b.add_node("qmatmul", refs, {"block_size": 32, "frac": 16}, "y"))
    g = b.build()
    assert not _took(g) and node_facts(g, 0) == {}
    check_all_backends(g, [rand_fx(rng, (1, 128)), qdata(rng, DType.I4, (3, 128))], mips=False)


def test_qmatvec4_layout_of_a_tile_and_a_single_row():
    """The derived buffer as the module docstring lays it out: rows 0..3 a tile (lines alternate
    by row), row 4 alone; each line's nibbles and each group's scales where they are said to be."""
    from opmlc.ir.types import pack_i4

    n, k, bs = 5, 40, 8  # 5 blocks: one group, T = 1
    q = np.arange(n * k).reshape(n, k) % 16 - 8
    s = np.arange(1, n * 5 + 1, dtype=np.int32).reshape(n, 5)
    d = qmatvec4.derive({"n": n, "k": k, "block": bs}, [None, pack_i4(q), s])
    lines = d.reshape(-1, 64)
    assert lines.shape == (n * 2, 64)  # a row: G·(T + 1) lines
    for row in range(n):
        first = 2 * row if row == 4 else row  # the tile's line t = 0 of row r is line r
        w = lines[first].reshape(16, 4)
        for lane in range(5):
            k0 = lane * bs
            assert list(w[lane] & 0x0F) == list(q[row, k0:k0 + 4] + 8)
            assert list(w[lane] >> 4) == list(q[row, k0 + 4:k0 + 8] + 8)
        assert not w[5:].any()
        scales = lines[4 + row if row < 4 else 2 * row + 1].view(np.int32)
        assert list(scales[:5]) == list(s[row]) and not scales[5:].any()
