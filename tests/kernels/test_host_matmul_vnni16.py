"""The VNNI matmul kernel of a constant weight (opmlc/backend/kernels/native/matmul_vnni16.py)
against the interpreter, bit for bit and count for count: each plane scheme forced in turn with
no other kernel behind it (`ONLY`: a run the kernel refused would leave the output unwritten),
on random shapes (odd and short K, N off multiples of 16, folded batch dimensions), at the edges
of each scheme's range, at the widening interval's limit, and split over threads; then the
other kernels behind it on inputs it refuses, and its facts and derived planes."""

from __future__ import annotations

import numpy as np
import pytest

from opmlc.backend.kernels.native import SPLIT_MIN_WORK, matmul_vnni16, split_worth
from opmlc.backend.native import NativeSession, native_program, run_native
from opmlc.ir import fixedpoint as fp
from opmlc.ir.interpreter import run_graph
from tests.kernels.harness import const_matmul_graph, int_array, threads_equal_interpreter
from tests.kernels.test_kernels import check_all_backends

pytestmark = pytest.mark.skipif(not matmul_vnni16.has_vnni(), reason="the host has no AVX-512 VNNI")


@pytest.fixture
def only(monkeypatch):
    """The VNNI kernel alone, for any number of output columns; `only(name)` forces one scheme."""
    monkeypatch.setattr(matmul_vnni16, "ONLY", True)
    monkeypatch.setattr(matmul_vnni16, "MIN_COLS", 1)

    def force(name):
        monkeypatch.setattr(matmul_vnni16, "FORCE", name)

    return force


def _graph(x_shape, w, trans=True, bias=None, fracs=(20, 20, 16)):
    return const_matmul_graph("t_mm16", x_shape, w, trans, bias, fracs)


_ints = int_array


# scheme → (x bits, w bits) it takes (module docstring)
RANGES = {"A1": (9, 12), "A2": (22, 12), "B": (23, 21), "C": (28, 23), "W": (23, 21)}


@pytest.mark.parametrize("scheme", sorted(RANGES))
def test_each_scheme_equals_interpreter_on_random_shapes(only, scheme):
    only(scheme)
    rng = np.random.default_rng(len(scheme) * 7 + ord(scheme[-1]))
    xb, wb = RANGES[scheme]
    for m, k, n, batch, trans in [(1, 9, 5, (), True), (7, 33, 17, (1,), False), (13, 64, 40, (2,), True),
                                  (70, 15, 3, (), True), (4, 130, 33, (3, 2), True), (9, 20, 130, (), False)]:
        w = _ints(rng, wb, (n, k) if trans else (k, n))
        bias = _ints(rng, 20, (n,)) if m % 2 else None
        g = _graph((*batch, m, k), w, trans, bias)
        check_all_backends(g, [_ints(rng, xb, (*batch, m, k))], mips=False)


@pytest.mark.parametrize("multiplied", [True, False])
def test_scheme_edges(only, monkeypatch, multiplied):
    """|x| right at the one-plane limit (−2^15 takes A1, +2^15 does not), x at the two-plane
    limit (2^30), weights at ±2^15 (one plane or split), int32 extremes in the output's
    saturation (fo = 0); one chunk's sums recombined by `vpmuldq` and by shifts (the branch
    taken when a coefficient leaves i32)."""
    monkeypatch.setattr(matmul_vnni16, "MULTIPLIED", multiplied)
    rng = np.random.default_rng(3)
    cases = [  # (forced scheme, x values, w values)
        ("A1", [-(1 << 15), (1 << 15) - 1, 0, 1], [-3, 2, 1]),
        ("A2", [1 << 15, -(1 << 15) - 1, 7], [-(1 << 15), (1 << 15) - 1]),
        ("A2", [(1 << 30) - 1, -(1 << 30), 3], [1, -1, 0]),
        ("C", [(1 << 30) - 1, -(1 << 30), (1 << 29) + 12345], [1 << 15, -(1 << 15) - 1, 5]),
        ("B", [(1 << 18) - 1, -(1 << 18)], [1 << 15, -(1 << 15) - 1, 1 << 16]),
        # s_w = 9: x's high plane ±2^13 beside the weight's ±2^6, sums of both signs
        ("W", [(1 << 22) - 1, -(1 << 22), 255, -256, 0], [1 << 15, -(1 << 15) - 1, 5, -256, 255]),
    ]
    for scheme, xs, ws in cases:
        only(scheme)
        m, k, n = 5, 37, 21
        x = rng.choice(np.array(xs, np.int64), size=(m, k)).astype(np.int32)
        w = rng.choice(np.array(ws, np.int64), size=(n, k)).astype(np.int32)
        g = _graph((m, k), w, fracs=(20, 20, 0))
        check_all_backends(g, [x], mips=False)


@pytest.mark.parametrize("base", [1 << 24, -(1 << 20) - 65535, fp.INT32_MIN, fp.INT32_MAX - 65535, -(1 << 15)])
def test_offset_plane_equals_interpreter(only, base):
    """Scheme A1o (x − c in one plane, c·Σ w added back): x anywhere in int32 with max − min
    exactly 2^16 − 1 (the widest range it takes), positive, negative and at both int32 ends."""
    only("A1o")
    rng = np.random.default_rng(abs(base) % 1000)
    for m, k, n, batch, trans in [(7, 33, 17, (1,), False), (13, 64, 40, (2,), True), (4, 9, 70, (), True)]:
        x = (base + rng.integers(0, 1 << 16, size=(*batch, m, k))).astype(np.int32)
        x.reshape(-1)[:2] = [base, base + 65535]
        w = _ints(rng, 12, (n, k) if trans else (k, n))  # F ≥ MIN_FLUSH: |w| ≤ 2^12 − 1 at the widest x range
        w.reshape(-1)[:2] = [-(1 << 12) + 1, (1 << 12) - 1]
        bias = _ints(rng, 20, (n,)) if m % 2 else None
        check_all_backends(_graph((*batch, m, k), w, trans, bias, fracs=(20, 20, 30)), [x], mips=False)


def _forced(g, x) -> tuple[np.ndarray, np.ndarray]:
    """(the interpreter's output, the forced scheme's alone: unwritten, zeros, if it refused x)."""
    (got,) = NativeSession(native_program(g), g, threads=1).run([x])
    return run_graph(g, [x])[g.outputs[0]], got


def _refused_then_exact(monkeypatch, g, x) -> None:
    """The forced scheme alone (ONLY) writes nothing for x; unforced, the kernel computes it exactly."""
    want, got = _forced(g, x)
    assert want.any() and not got.any()
    monkeypatch.setattr(matmul_vnni16, "ONLY", False)
    monkeypatch.setattr(matmul_vnni16, "FORCE", None)
    check_all_backends(g, [x], mips=False)


def test_offset_plane_refuses_a_range_of_2_to_the_16(only, monkeypatch):
    """max − min = 2^16: A1o alone writes nothing (ONLY); behind it A2 or the fallback, exact."""
    only("A1o")
    rng = np.random.default_rng(21)
    x = (-(1 << 20) + rng.integers(0, 1 << 16, size=(6, 40))).astype(np.int32)
    x[0, :2] = [-(1 << 20), -(1 << 20) + (1 << 16)]
    _refused_then_exact(monkeypatch, _graph((6, 40), _ints(rng, 12, (24, 40)), fracs=(20, 20, 16)), x)


def test_widening_at_the_interval_limit(only):
    """Every product at its bound with one sign, over a reduction many intervals long: each
    lane reaches the largest sum the bound allows before it is widened."""
    for scheme, xv, wv in [("A1", -(1 << 13), -(1 << 13)), ("A1", 1 << 12, -(1 << 14)), ("C", -(1 << 27), (1 << 23)),
                           ("B", -(1 << 22) + 1, -(1 << 21) + 1)]:
        only(scheme)
        m, k, n = 3, 2 * 40 * 3 + 1, 18
        g = _graph((m, k), np.full((n, k), wv, np.int32), fracs=(20, 20, 30))
        check_all_backends(g, [np.full((m, k), xv, np.int32)], mips=False)


@pytest.mark.parametrize("k", [320, 319, 328])
def test_winograd_at_the_interval_limit(only, k):
    """Scheme W with every sum at its bound: x = −2^23 + 1 (planes at s_w = 11: h = −2^12, l = 1)
    and w = −2^21 + 1 (h = −2^10, l = 1), so each step adds 2·(2^12 + 2^10)² to a lane, the
    Δ its F is computed from: F = 40 steps, and K = 320 (160 pairs) runs two chunks of exactly
    40, the largest sum the bound allows (one step more would leave i32); K = 319 pads the last
    k with a zero; K = 328 (164 pairs) runs three chunks, where an F one too large would run two
    of 41 steps."""
    only("W")
    m, n = 3, 18
    g = _graph((m, k), np.full((n, k), -(1 << 21) + 1, np.int32), fracs=(20, 20, 30))
    check_all_backends(g, [np.full((m, k), -(1 << 23) + 1, np.int32)], mips=False)


def test_winograd_refuses_short_chunks(only, monkeypatch):
    """x of 25 bits against a 21-bit weight: W's sums allow F = 3 steps a chunk, fewer than
    W_STEPS, so W alone writes nothing (ONLY); unforced, scheme B or C computes it, exact."""
    only("W")
    rng = np.random.default_rng(23)
    x = _ints(rng, 25, (6, 200))
    x[0, 0] = (1 << 25) - 1
    _refused_then_exact(monkeypatch, _graph((6, 200), _ints(rng, 21, (24, 200)), fracs=(20, 20, 26)), x)


def _winograd_squares_case(k: int, big: int, quads: list[int]):
    """w = 2^15 everywhere (s_w = 9: w_h = 64, w_l = 0) and rows of x that are big·2^9 on the
    four k's of each quad in `quads`, 0 elsewhere: x's high plane is `big` there, F is one step,
    and each such quad adds 2·(big + 64)² to the hh lanes, the rest 2·64² a step."""
    x = np.zeros((3, k), np.int32)
    for q in quads:
        x[:, 4 * q:4 * q + 4] = big << 9
    g = _graph((3, k), np.full((20, k), 1 << 15, np.int32), fracs=(20, 20, 10))
    return g, x


@pytest.mark.parametrize("big, taken", [(32510, True), (32511, False)])
def test_winograd_squares_bound_the_whole_reduction(only, monkeypatch, big, taken):
    """K = 64 (no chunks of blocks): x's even and odd pairs hold 2·big² of squares each, the
    weight's 32·64²: r = ⌊√2·big⌋ + 1 + 363, and r² ≤ 2^31 − 2^16 up to big = 32510 (the lanes
    then reach 2·32574² + 30·64², 98.8 % of 2^31, in one chunk); from 32511 W refuses (ONLY:
    nothing written), and unforced another scheme computes it."""
    only("W")
    g, x = _winograd_squares_case(64, big, [5])
    want, got = _forced(g, x)
    assert want.all() and (np.array_equal(got, want) if taken else not got.any())
    monkeypatch.setattr(matmul_vnni16, "ONLY", False)
    monkeypatch.setattr(matmul_vnni16, "FORCE", None)
    check_all_backends(g, [x], mips=False)


@pytest.mark.parametrize("big, taken", [(32404, True), (32405, False)])
def test_winograd_squares_by_chunks_of_blocks(only, big, taken):
    """K = 256: two chunks of 4 blocks (64 pairs), a wide quad in each (quads 31 and 32, on both
    sides of the boundary): the whole reduction's squares fail, each chunk's (the weight's
    64·64², ⌈√⌉ = 513) hold up to big = 32404, and W runs the two aligned chunks, exact; from
    32405 it refuses."""
    only("W")
    assert matmul_vnni16._w_top(256) == 4
    g, x = _winograd_squares_case(256, big, [31, 32])
    want, got = _forced(g, x)
    assert want.all() and (np.array_equal(got, want) if taken else not got.any())


BUDGET = (1 << 31) - (1 << 16)  # the most a lane may change from its low part (module docstring)


@pytest.mark.parametrize("k", [64, 71])
def test_row_sums_at_the_whole_reduction_limit(only, k):
    """Scheme A1, every product positive: a row's Σ|x|·W exactly at the budget (one chunk for the
    whole reduction, the lane ends at 2^31 − 2^16) and one past it (F's chunks), both exact; 16 pairs at a
    time and the scalar tail (odd K)."""
    only("A1")
    wv = 1 << 12  # W = 4096 (four significant bits: the header's bound is exact)
    for extra in (0, 1):
        x = np.full((3, k), BUDGET // wv // k, np.int64)
        x[:, 0] += BUDGET // wv - x.sum(axis=1) + extra
        assert x.sum(axis=1).max() * wv == BUDGET + extra * wv
        assert BUDGET // (2 * int(x.max()) * wv) < -(-k // 2)  # F alone: more than one chunk
        g = _graph((3, k), np.full((20, k), wv, np.int32), fracs=(20, 20, 30))
        check_all_backends(g, [x.astype(np.int32)], mips=False)


def _squares_to(total: int, head: int, k: int) -> np.ndarray:
    """k non-negative integers, the first `head`, whose squares sum to `total` (greedy)."""
    v = np.zeros(k, np.int64)
    v[0], left = head, total - head * head
    for i in range(1, k):
        v[i] = min(int(np.sqrt(left)), head)
        while v[i] * v[i] > left:
            v[i] -= 1
        left -= int(v[i]) ** 2
    assert left == 0
    return v


@pytest.mark.parametrize("k", [64, 63])
def test_squares_at_the_whole_reduction_limit(only, k):
    """Scheme A1, one row equal to one weight column (Cauchy–Schwarz is then an equality): its
    Σ x² at the budget, where the row sums (Σ|x|·W) forbid one chunk and the squares
    ((max row Σ x²)·Q ≤ budget²) allow it, so that lane ends at 2^31 − 2^16; and Σ x² past
    2^31, where one chunk would wrap the lane (the kernel must widen). 16-pair vectors (vpmaddwd)
    and the scalar tail (odd K)."""
    only("A1")
    rng = np.random.default_rng(k)
    for total in (BUDGET, (1 << 31) + 5):
        v = _squares_to(total, 1 << 13, k) * rng.choice([-1, 1], k)
        assert np.abs(v).sum() * (1 << 13) > BUDGET  # the row sums alone: chunks
        w = _ints(rng, 6, (20, k))
        w[7] = v
        x = _ints(rng, 6, (3, k))
        x[1] = v
        check_all_backends(_graph((3, k), w.astype(np.int32), fracs=(20, 20, 30)), [x.astype(np.int32)],
                           mips=False)


@pytest.mark.parametrize("k", [384, 383, 200])
def test_squares_of_chunks_of_blocks(only, k):
    """Scheme A1 (chunks of 6 blocks of 16 pairs: two here), one row equal to one weight column,
    both reductions too long for one chunk and F's chunks short: each chunk of blocks with Σ x²
    at the budget takes the blocks' chunks (the lane ends the chunk at 2^31 − 2^16); a chunk
    past 2^31 must not (the lane would wrap). Vector blocks, a last chunk of vector blocks and
    the tail (odd K), and one of the tail alone (K = 200)."""
    only("A1")
    head = 1 << 13
    rng = np.random.default_rng(k)
    cut = 2 * 16 * 6  # elements of the first chunk
    cases = [(BUDGET, BUDGET), (BUDGET, (1 << 31) + 5), ((1 << 31) + 5, BUDGET)] if k > 300 else \
        [(BUDGET, 3 * head * head), ((1 << 31) + 5, 3 * head * head)]
    for first, second in cases:
        v = np.concatenate([_squares_to(first, head, cut), _squares_to(second, head, k - cut)])
        v *= rng.choice([-1, 1], k)
        w = _ints(rng, 6, (20, k))
        w[3] = v
        x = _ints(rng, 6, (5, k))
        x[2] = v
        assert int(np.square(v).sum()) > BUDGET  # neither whole-reduction bound holds
        check_all_backends(_graph((5, k), w.astype(np.int32), fracs=(20, 20, 30)), [x.astype(np.int32)],
                           mips=False)


def test_squares_chunks_and_counts_on_two_threads(only):
    """The chunks of blocks at the budget (as above, K = 384) on a node split over threads, with
    a bias that saturates some columns both ways: the same bits and counts on 1 and 2 threads
    (each part splits x and chooses its chunks itself)."""
    only("A1")
    rng = np.random.default_rng(3)
    k, m = 384, 5
    n = SPLIT_MIN_WORK // (m * k) + 37
    v = np.concatenate([_squares_to(BUDGET, 1 << 13, 192), _squares_to(BUDGET, 1 << 13, 192)]) * rng.choice([-1, 1], k)
    w = _ints(rng, 6, (n, k))
    w[n - 2] = v
    x = _ints(rng, 6, (m, k))
    x[1] = v
    bias = _ints(rng, 10, (n,))
    bias[::7] = fp.INT32_MAX
    bias[3::7] = fp.INT32_MIN
    g = _graph((m, k), w.astype(np.int32), bias=bias.astype(np.int32), fracs=(20, 20, 28))
    assert split_worth(g, 0)
    _, counts = threads_equal_interpreter(g, [x.astype(np.int32)])
    assert counts  # the bias saturated some outputs


def test_squares_allow_one_chunk_for_a_decoder_s_projection(only):
    """Scheme B on a decoder's lm-head shapes (x and w of 26 bits, K = 64, as tiny_gpt2's): the
    row sums ask for chunks, the squares bound holds (checked here), same bits."""
    only("B")
    rng = np.random.default_rng(69)
    x = np.clip(rng.normal(0, 2 ** 23.5, (32, 64)), -(1 << 26), 1 << 26).astype(np.int64)
    w = np.clip(rng.normal(0, 2 ** 23.5, (256, 64)), -(1 << 26), 1 << 26).astype(np.int64)
    s, _, bounds = matmul_vnni16.weight_planes(w)
    xs, ws = matmul_vnni16._split(x, s), matmul_vnni16._split(w, s)
    xs, ws = (*xs, xs[0] + xs[1]), (*ws, ws[0] + ws[1])
    rowsum = max(int(np.abs(xs[p]).sum(axis=1).max()) * bounds[p] for p in range(3))
    squares = max(int(np.square(xs[p]).sum(axis=1).max()) * int(np.square(ws[p]).sum(axis=1).max()) for p in range(3))
    assert rowsum > BUDGET and squares <= BUDGET * BUDGET
    check_all_backends(_graph((1, 32, 64), w.astype(np.int32), bias=_ints(rng, 20, (256,)), fracs=(24, 24, 23)),
                       [x.reshape(1, 32, 64).astype(np.int32)], mips=False)


@pytest.mark.parametrize("scheme", ["A1", "A1o", "A2", "B", "C"])
def test_row_sums_with_a_few_wide_elements(only, scheme):
    """Mostly small x with a few elements at the scheme's bound: F (from max |x|) is short, the
    rows' plane sums allow the whole reduction in one chunk (or not, by row group); random
    signs, odd and even K, 16-pair vectors and the tail."""
    only(scheme)
    rng = np.random.default_rng(len(scheme) + 40)
    wide, wb = {"A1": ((1 << 15) - 1, 13), "A1o": (1 << 15, 12), "A2": (1 << 29, 12), "B": (1 << 26, 23),
                "C": (1 << 29, 23)}[scheme]
    for m, k, n in [(5, 64, 20), (9, 95, 33), (3, 200, 64), (7, 33, 17)]:
        x = _ints(rng, 5, (m, k)).astype(np.int64)
        x[rng.integers(0, m, 3), rng.integers(0, k, 3)] = [wide, -wide, wide - 1]
        if scheme == "A1o":
            x = (1 << 24) + np.clip(x, -(1 << 15), (1 << 15) - 1)
        w = _ints(rng, wb, (n, k))
        check_all_backends(_graph((m, k), w, bias=_ints(rng, 20, (n,)), fracs=(20, 20, 30)), [x.astype(np.int32)],
                           mips=False)


def test_row_sums_on_two_threads(monkeypatch):
    """Scheme B's whole-reduction chunks (small rows, one wide element) on 1 and 2 threads."""
    monkeypatch.setattr(matmul_vnni16, "FORCE", "B")
    monkeypatch.setattr(matmul_vnni16, "ONLY", True)
    rng = np.random.default_rng(9)
    m, k = 9, 800
    n = SPLIT_MIN_WORK // (m * k) + 37
    g = _graph((1, m, k), _ints(rng, 23, (n, k)), bias=_ints(rng, 20, (n,)), fracs=(20, 20, 22))
    assert split_worth(g, 0)
    x = _ints(rng, 6, (1, m, k))
    x[0, 2, 5] = 1 << 26
    want = run_graph(g, [x])[g.outputs[0]]
    session = NativeSession(native_program(g), g, threads=1)
    for threads in (1, 2):
        (got,) = session.run([x], threads=threads)
        assert np.array_equal(got, want), f"{threads} threads"


def test_refused_inputs_run_the_other_kernels():
    """x with int32 extremes (beyond every scheme): the double or i64 kernels, same bits."""
    rng = np.random.default_rng(5)
    w = _ints(rng, 20, (24, 40))
    x = _ints(rng, 20, (6, 40))
    x[0, :3] = [fp.INT32_MIN, fp.INT32_MAX, -1]
    check_all_backends(_graph((6, 40), w, bias=_ints(rng, 20, (24,)), fracs=(20, 20, 0)), [x], mips=False)


def test_fallback_lanes_equal_interpreter(monkeypatch):
    """No scheme (FORCE names none): every run takes the kernel's i64 fallback, which reads the
    weight back from its planes (one, two or three of them), on odd K, partial column blocks,
    folded batch dimensions, plain b, bias, and int32 extremes in x and in the output."""
    monkeypatch.setattr(matmul_vnni16, "MIN_COLS", 1)
    monkeypatch.setattr(matmul_vnni16, "FORCE", "none")
    rng = np.random.default_rng(11)
    for (m, k, n, batch, trans), wb in zip([(5, 9, 5, (), True), (7, 33, 70, (1,), False), (6, 64, 40, (2,), True),
                                            (1, 15, 3, (), True)], (12, 21, 26, 30), strict=True):
        w = _ints(rng, wb, (n, k) if trans else (k, n))
        x = _ints(rng, 30, (*batch, m, k))
        x.reshape(-1)[:2] = [fp.INT32_MIN, fp.INT32_MAX]
        bias = _ints(rng, 20, (n,)) if m % 2 else None
        check_all_backends(_graph((*batch, m, k), w, trans, bias, fracs=(20, 20, 8)), [x], mips=False)


def test_without_vnni_the_folded_batch_takes_the_double_kernel(monkeypatch):
    monkeypatch.setattr(matmul_vnni16, "ENABLED", False)
    rng = np.random.default_rng(6)
    g = _graph((1, 32, 64), _ints(rng, 22, (40, 64)))
    check_all_backends(g, [_ints(rng, 24, (1, 32, 64))], mips=False)


@pytest.mark.parametrize("scheme", ["B", "W"])
def test_row_groups_of_a_long_reduction(only, scheme):
    """K long enough that the x planes' scratch holds only some rows at a time (W: each group's
    rows have their own ξ)."""
    only(scheme)
    rng = np.random.default_rng(4)
    m, k, n = 21, 5001, 19
    sc = {"B": matmul_vnni16.B3, "W": matmul_vnni16.W4}[scheme]
    assert matmul_vnni16._group(sc, m, -(-k // 2)) < m
    g = _graph((m, k), _ints(rng, 21, (n, k)), bias=_ints(rng, 20, (n,)), fracs=(20, 20, 22))
    check_all_backends(g, [_ints(rng, 23, (m, k))], mips=False)


@pytest.mark.parametrize("k", [40, 300])
@pytest.mark.parametrize("scheme", ["A1", "A1o", "A2", "B", "C", "W"])
def test_outputs_from_the_last_chunk_s_accumulators(monkeypatch, scheme, k):
    """K = 40 (20 pairs, within every scheme's F here: one chunk) and K = 300 (several): the
    outputs finished straight from the last chunk's accumulators (module docstring, "One
    chunk"), with bias (zero, small, ±2^20 << 14: saturated
    on both sides), a rounding shift of 2 (ties), padding columns, row tiles and their tail, on
    1 and 2 threads, saturation counts included."""
    monkeypatch.setattr(matmul_vnni16, "FORCE", scheme)
    monkeypatch.setattr(matmul_vnni16, "ONLY", True)
    rng = np.random.default_rng(12)
    m = 9
    n = SPLIT_MIN_WORK // (m * k) + 37
    xb, wb = {"A1o": (15, 8)}.get(scheme, RANGES.get(scheme))
    bias = rng.choice(np.array([0, 0, 5, -7, 1 << 20, -(1 << 20)], np.int32), size=n)
    g = _graph((1, m, k), _ints(rng, wb, (n, k)), bias=bias, fracs=(16, 16, 30))
    assert split_worth(g, 0)
    x = _ints(rng, xb, (1, m, k)) + ((5 << 24) if scheme == "A1o" else 0)
    want, want_sat = threads_equal_interpreter(g, [x])
    assert want_sat and (want == fp.INT32_MAX).any() and (want == fp.INT32_MIN).any()


@pytest.mark.parametrize("scheme", ["C", "A1o", "W", "none"])
def test_split_over_threads_gives_the_same_bits(monkeypatch, scheme):
    """Scheme C (the largest scratch: a worker thread's stack holds it too), the offset plane,
    scheme W (each part its rows' ξ, its columns' η) and the fallback on 1 and 2 threads; 229
    columns, so the parts meet on a block that is not a multiple of 64 (112)."""
    monkeypatch.setattr(matmul_vnni16, "FORCE", scheme)
    monkeypatch.setattr(matmul_vnni16, "ONLY", scheme != "none")  # the scheme or an unwritten output
    rng = np.random.default_rng(8)
    m, k = 9, 800
    n = max(SPLIT_MIN_WORK // (m * k), 3 * 64) + 37
    wbits, fo = {"A1o": (12, 30), "W": (21, 22)}.get(scheme, (23, 22))
    w = _ints(rng, wbits, (n, k))
    assert matmul_vnni16.weight_facts(w) is not None  # the node takes this kernel
    g = _graph((1, m, k), w, bias=_ints(rng, 20, (n,)), fracs=(20, 20, fo))
    assert split_worth(g, 0)
    x = [_ints(rng, 27 if scheme != "W" else 23, (1, m, k)) if scheme != "A1o"
         else (5 << 24) + _ints(rng, 15, (1, m, k))]
    _, want_sat = threads_equal_interpreter(g, x)
    assert want_sat


def test_weight_facts_and_planes(monkeypatch):
    monkeypatch.setattr(matmul_vnni16, "MIN_COLS", 1)
    w = np.array([[1 << 15, -(1 << 15) - 1, 3], [-(1 << 21), (1 << 21) - 1, 0]], np.int32)
    facts = matmul_vnni16.weight_facts(w)
    assert facts == {"derived": True, "planes": 3}
    buf = matmul_vnni16.derive(facts, w)
    assert buf.ctypes.data % 64 == 0
    split, count, bits, *bounds = buf[:2 * matmul_vnni16.HEADER].view(np.int32)[:6]
    assert (split, count, bits) == (11, 3, 21)
    # [block, pair, plane, column, k]: one block of 16 columns (2 padded to whole blocks), 2 pairs
    # → [plane, block, pair, column, k]
    end = 2 * matmul_vnni16.HEADER + 1 * 2 * 3 * 16 * 2
    planes = buf[2 * matmul_vnni16.HEADER:end].reshape(1, 2, 3, 16, 2).transpose(2, 0, 1, 3, 4).astype(np.int64)
    for q, bound in enumerate(bounds):
        assert np.abs(planes[q]).max() <= bound < 1 << 15
    # Q_q and the one block's Q_q[0] (K = 3: one block): the largest column's Σ w_q², after the planes
    squares = [int(np.square(planes[q]).sum(axis=(1, 3)).max()) for q in range(3)]
    assert list(buf[:2 * matmul_vnni16.HEADER].view(np.int64)[matmul_vnni16.NORMS:][:3]) == squares
    # then scheme W's η per padded column: w[0]·w[2] + w[1]·w[3] (K = 3: w[3] = 0)
    eta = buf[end:end + 4 * 16].view(np.int64)
    assert list(eta[:2]) == [(1 << 15) * 3, 0] and not eta[2:].any()
    at = buf[:2 * matmul_vnni16.HEADER].view(np.int32)[matmul_vnni16.BLOCKS_AT]
    assert at * 4 == end + 4 * 16 and list(buf.view(np.int64)[at:at + 3]) == squares
    # scheme W's squares by parity, whole ([l, h][even, odd] in the header) and per block (after
    # B's): pair 0 holds k = 0, 1, pair 1 k = 2 (and the padding)
    parity = [int(np.square(planes[q][0, par]).sum(axis=1).max()) for q in range(2) for par in range(2)]
    head = buf[:2 * matmul_vnni16.HEADER].view(np.int64)
    assert list(head[matmul_vnni16.PARITY_NORMS:][:4]) == parity and list(buf.view(np.int64)[at + 3:]) == parity
    got = (planes[0] + (planes[1] << 11)).transpose(0, 2, 1, 3).reshape(16, 4)  # back to [N, K]
    assert np.array_equal(got[:2, :3], w) and not got[2:].any() and not got[:, 3].any()
    assert np.array_equal(planes[2], planes[0] + planes[1])
    one = np.array([[-(1 << 15), 5]], np.int32)
    assert matmul_vnni16.weight_facts(one) == {"derived": True, "planes": 1}
    assert matmul_vnni16.weight_facts(np.array([[fp.INT32_MAX]], np.int32)) == {}
    assert matmul_vnni16.weight_facts(np.ones((64, 2 * matmul_vnni16.MAX_PAIRS), np.int32))["planes"] == 1
    assert matmul_vnni16.weight_facts(np.ones((64, 2 * matmul_vnni16.MAX_PAIRS + 1), np.int32)) == {}  # the scratch
    with pytest.raises(ValueError, match="generated for"):
        matmul_vnni16.derive(matmul_vnni16.weight_facts(one), w)
    monkeypatch.setattr(matmul_vnni16, "MIN_COLS", 64)
    assert matmul_vnni16.weight_facts(np.ones((63, 8), np.int32)) == {}  # too few columns
    assert matmul_vnni16.weight_facts(np.ones((64, 8), np.int32))["planes"] == 1


def test_run_native_refuses_weights_other_than_the_module_s(monkeypatch):
    """The planes (and their bounds) are derived from the region table's weight: one whose plane
    count differs from the compiled kernel's is an error, never a silent wrong answer."""
    monkeypatch.setattr(matmul_vnni16, "MIN_COLS", 1)
    rng = np.random.default_rng(9)
    w = _ints(rng, 12, (20, 16))
    g = _graph((4, 16), w)
    program = native_program(g)
    values = [None] * len(g.values)
    values[1] = w * 64
    with pytest.raises(ValueError, match="generated for"):
        run_native(program, g, [_ints(rng, 10, (4, 16))], values=values)
