"""Quantized weights in the IR: the i8/i4 encodings (packing, tensor roots) and the semantics of
qmatmul, qconv and qgather against Python's exact integers on hand-checked and random cases."""

from __future__ import annotations

import numpy as np
import pytest

from opmlc.commit import from_bytes, region_size, tensor_bytes, tensor_root
from opmlc.ir import fixedpoint as fp
from opmlc.ir.ops import IRTypeError, get_op
from opmlc.ir.types import DType, TensorType, pack_i4, unpack_i4
from tests.ir.test_ops import exact_round_shift, sat, wrap64
from vm.merkle import subtree_root


def fx(shape, frac):
    return TensorType(DType.FX32, tuple(shape), frac)


def evaluate(op, args, types, attrs):
    out = get_op(op).infer(types, attrs)
    with fp.count_saturation() as c:
        res = get_op(op).evaluate(args, types, attrs, out)
    return res, out, c.n


# -- encodings ---------------------------------------------------------------------------------

def test_i4_packs_high_nibble_first_and_pads_an_odd_count():
    assert pack_i4(np.array([1, -1, 7], np.int8)).tolist() == [0x1F, 0x70]
    assert pack_i4(np.array([-8, 0], np.int8)).tolist() == [0x80]


@pytest.mark.parametrize("n", [1, 2, 3, 31, 64, 65, 1001])
def test_i4_round_trips_and_its_root_is_over_half_the_bytes(n):
    rng = np.random.default_rng(n)
    a = rng.integers(-8, 8, n).astype(np.int8)
    t = TensorType(DType.I4, (n,))
    raw = tensor_bytes(a, t)
    assert len(raw) == (n + 1) // 2 == t.nbytes
    assert np.array_equal(from_bytes(raw + bytes(5), t), a)
    assert np.array_equal(unpack_i4(pack_i4(a), n), a)
    size = region_size(t)
    assert size == max(32, 1 << ((n + 1) // 2 - 1).bit_length())
    assert tensor_root(a, t) == subtree_root(raw + bytes(size - len(raw)))


def test_i8_is_one_signed_byte_per_element():
    a = np.array([[-128, 127, 0], [1, -1, 5]], np.int8)
    t = TensorType(DType.I8, (2, 3))
    assert tensor_bytes(a, t) == bytes([0x80, 0x7F, 0, 1, 0xFF, 5])
    assert t.nbytes == 6 and np.array_equal(from_bytes(tensor_bytes(a, t), t), a)


# -- qmatmul -----------------------------------------------------------------------------------

def test_qmatmul_hand_checked():
    # w = (q − zp) · scale, per block of 2: row 0 = [(1−1)·3, (3−1)·3, (−2−0)·5] = [0, 6, −10]
    x = np.array([[2, 1, 4]], np.int32)  # frac 1: [1, 0.5, 2]
    q = np.array([[1, 3, -2], [0, -8, 7]], np.int8)
    scale = np.array([[3, 5], [1, 2]], np.int32)  # frac 2
    zp = np.array([[1, 0], [0, -1]], np.int8)
    bias = np.array([4, -4], np.int32)  # frac 0 → shifted by 3
    types = [fx((1, 3), 1), TensorType(DType.I4, (2, 3)), fx((2, 2), 2), TensorType(DType.I4, (2, 2)), fx((2,), 0)]
    got, out, n_sat = evaluate("qmatmul", [x, q, scale, zp, bias], types, {"block_size": 2, "frac": 1})
    # row 0: 2·0 + 1·6 + 4·(−10) = −34, + 4<<3 = −2 → shr_round(−2, 2) = 0 (−0.5 rounds up)
    # row 1: w = [0, −8, (7+1)·2 = 16]: 0 − 8 + 64 = 56, − 32 = 24 → 6
    assert out == fx((1, 2), 1) and got.tolist() == [[0, 6]] and n_sat == 0


@pytest.mark.parametrize("dtype,bs,zp,bias", [(DType.I8, 5, False, True), (DType.I4, 4, True, False),
                                               (DType.I8, 16, True, True), (DType.I4, 3, False, False)])
def test_qmatmul_equals_exact_integers(dtype, bs, zp, bias):
    rng = np.random.default_rng(bs)
    m, n, k = 3, 4, 11
    lo, hi = dtype.int_range
    x = rng.integers(fp.INT32_MIN, fp.INT32_MAX, (2, m, k), endpoint=True).astype(np.int32)
    q = rng.integers(lo, hi, (n, k), endpoint=True).astype(np.int8)
    q[0] = lo  # extremes of the dtype
    nb = -(-k // bs)
    s = rng.integers(-(1 << 20), 1 << 20, (n, nb)).astype(np.int32)
    z = rng.integers(lo, hi, (n, nb), endpoint=True).astype(np.int8) if zp else None
    b = rng.integers(-(1 << 30), 1 << 30, (n,)).astype(np.int32) if bias else None
    args = [x, q, s] + ([z] if zp else []) + ([b] if bias else [])
    types = [fx(x.shape, 10), TensorType(dtype, q.shape), fx(s.shape, 20)]
    types += [TensorType(dtype, z.shape)] if zp else []
    types += [fx(b.shape, 12)] if bias else []
    got, _, n_sat = evaluate("qmatmul", args, types, {"block_size": bs, "frac": 8})
    want_sat = 0
    for bi in range(2):
        for i in range(m):
            for j in range(n):
                acc = sum(int(x[bi, i, kk]) * (int(q[j, kk]) - (int(z[j, kk // bs]) if zp else 0)) * int(s[j, kk // bs])
                          for kk in range(k))
                acc = wrap64(acc + ((int(b[j]) << 18) if bias else 0))
                r = exact_round_shift(acc, 22)
                want_sat += r != sat(r)
                assert got[bi, i, j] == sat(r)
    assert n_sat == want_sat > 0  # random int32 activations: many outputs saturate, each counted


def test_qmatmul_refuses_mismatched_scales_and_zero_points():
    x, q = fx((1, 8), 4), TensorType(DType.I8, (3, 8))
    with pytest.raises(IRTypeError, match="scale"):
        get_op("qmatmul").infer([x, q, fx((3, 1), 4)], {"block_size": 4, "frac": 4})
    with pytest.raises(IRTypeError, match="zero point"):
        get_op("qmatmul").infer([x, q, fx((3, 2), 4), TensorType(DType.I4, (3, 2))], {"block_size": 4, "frac": 4})
    with pytest.raises(IRTypeError, match="i8 or i4"):
        get_op("qmatmul").infer([x, fx((3, 8), 4), fx((3, 2), 4)], {"block_size": 4, "frac": 4})


# -- qconv -------------------------------------------------------------------------------------

def test_qconv_is_conv_of_the_dequantized_integer_weight():
    rng = np.random.default_rng(3)
    x = rng.integers(-(1 << 20), 1 << 20, (1, 4, 5, 5)).astype(np.int32)
    q = rng.integers(-8, 8, (6, 2, 3, 3)).astype(np.int8)
    s = rng.integers(1, 1 << 12, (6, 1)).astype(np.int32)
    z = rng.integers(-8, 8, (6, 1)).astype(np.int8)
    b = rng.integers(-1000, 1000, (6,)).astype(np.int32)
    attrs = {"strides": [1, 2], "dilations": [1, 1], "pads": [1, 0, 1, 2], "group": 2, "frac": 10, "block_size": 18}
    qt = [fx(x.shape, 12), TensorType(DType.I4, q.shape), fx(s.shape, 8), TensorType(DType.I4, z.shape), fx(b.shape, 20)]
    got, out, _ = evaluate("qconv", [x, q, s, z, b], qt, attrs)
    w = ((q.astype(np.int64) - z[:, :, None, None]) * s[:, :, None, None]).astype(np.int32)
    conv_attrs = {k: v for k, v in attrs.items() if k != "block_size"}
    want, _, _ = evaluate("conv", [x, w, b], [fx(x.shape, 12), fx(w.shape, 8), fx(b.shape, 20)], conv_attrs)
    assert np.array_equal(got, want) and out.shape == want.shape
    with pytest.raises(IRTypeError, match="scale"):  # blocks would need a [6, 2] scale …
        get_op("qconv").infer(qt[:3], {**attrs, "block_size": 9})
    with pytest.raises(IRTypeError, match="per output channel"):  # … which qconv refuses
        get_op("qconv").infer([qt[0], qt[1], fx((6, 2), 8)], {**attrs, "block_size": 9})


# -- qgather -----------------------------------------------------------------------------------

def test_qgather_dequantizes_the_selected_rows_and_zeroes_bad_indices():
    q = np.array([[1, -2, 3], [-128, 127, 0]], np.int8)
    s = np.array([[4, 8], [1 << 22, 1 << 22]], np.int32)  # blocks of 2: [[4, 4, 8], …]
    idx = np.array([[1, 0, -1, 2, -3]], np.int64)
    types = [TensorType(DType.I8, q.shape), fx(s.shape, 4), TensorType(DType.I64, idx.shape)]
    got, out, n_sat = evaluate("qgather", [q, s, idx], types, {"block_size": 2, "frac": 2})
    assert out == fx((1, 5, 3), 2)
    # row 0: [4, −8, 24] at frac 4 → frac 2: [1, −2, 6]; row 1: [−2^29, 127·2^22, 0] >> 2
    r1 = [-(1 << 27), 127 << 20, 0]
    assert got[0].tolist() == [r1, [1, -2, 6], r1, [0, 0, 0], [0, 0, 0]]
    assert n_sat == 0


def test_qgather_counts_saturation_only_for_selected_rows():
    q = np.array([[100, 100], [1, 1]], np.int8)
    s = np.array([[1 << 30], [1]], np.int32)
    z = np.array([[-100], [0]], np.int8)  # row 0: 200 · 2^30 saturates at any frac ≥ 0 … only if chosen
    types = [TensorType(DType.I8, q.shape), fx(s.shape, 0), TensorType(DType.I8, z.shape), TensorType(DType.I32, (3,))]
    got, _, n_sat = evaluate("qgather", [q, s, z, np.array([1, 5, 1], np.int32)], types, {"block_size": 2, "frac": 0})
    assert n_sat == 0 and got.tolist() == [[1, 1], [0, 0], [1, 1]]
    got, _, n_sat = evaluate("qgather", [q, s, z, np.array([0, 1, 0], np.int32)], types, {"block_size": 2, "frac": 0})
    assert n_sat == 4 and got[0].tolist() == [fp.INT32_MAX, fp.INT32_MAX]


def test_qmatmul_gives_the_same_bits_chunk_by_chunk(monkeypatch):
    from opmlc.ir.ops import qmatmul

    rng = np.random.default_rng(9)
    x = rng.integers(-(1 << 20), 1 << 20, (3, 50)).astype(np.int32)
    q = rng.integers(-128, 128, (7, 50)).astype(np.int8)
    s = rng.integers(1, 1 << 16, (7, 4)).astype(np.int32)
    types = [fx(x.shape, 16), TensorType(DType.I8, q.shape), fx(s.shape, 16)]
    whole, _, _ = evaluate("qmatmul", [x, q, s], types, {"block_size": 16, "frac": 16})
    monkeypatch.setattr(qmatmul, "CHUNK", 60)  # one output channel at a time
    rows, _, _ = evaluate("qmatmul", [x, q, s], types, {"block_size": 16, "frac": 16})
    assert np.array_equal(whole, rows)


def test_an_i4_initializer_outside_its_range_is_refused():
    from opmlc.ir.graph import GraphBuilder

    with pytest.raises(IRTypeError, match="outside i4's range"):
        GraphBuilder("g").add_initializer("q", np.array([8, 0], np.int8), TensorType(DType.I4, (2,)))
