"""frontend/weights.py: round-to-nearest quantization of one weight (per output channel, per
block with a shorter last block, with and without a zero point), the error it reports, reading
a [K, N] read-only memmap in chunks, and the `--weights`/`--block-size` checks."""

from __future__ import annotations

import numpy as np
import pytest

from opmlc.frontend import weights as wq
from opmlc.frontend.weights import check_format, from_unsigned, quantize_weight


def dequant(qw):
    k = qw.q.shape[1]
    blk = np.arange(k) // qw.block_size
    zp = 0 if qw.zero_point is None else qw.zero_point.astype(np.float64)[:, blk]
    return (qw.q - zp) * qw.scale[:, blk]


def test_int8_per_channel_maps_the_largest_magnitude_onto_minus_128():
    w = np.array([[1.0, -0.5, 0.25], [0.0, 0.0, 0.0], [-2.0, 1.0, 0.004], [-1.0, 1.0, 0.5]], np.float32)
    qw = quantize_weight(w, 8)
    assert qw.block_size == 3 and qw.zero_point is None
    assert np.allclose(qw.scale[:, 0], [-1 / 128, 0.0, 2 / 128, 1 / 128])
    # 0.5·128 = 64 exactly; 0.004·64 rounds to 0; in row 3 the +1.0 of −m's size clips to 127
    assert qw.q.tolist() == [[-128, 64, -32], [0, 0, 0], [-128, 64, 0], [-128, 127, 64]]
    err = np.abs(dequant(qw) - w)
    assert err[:3].max() <= np.abs(qw.scale).max() / 2 + 1e-12  # round to nearest
    assert err[3, 1] == pytest.approx(1 / 128)  # the clipped element: one step
    assert qw.error.max_abs == pytest.approx(err.max())
    assert qw.error.rel_rms == pytest.approx(np.sqrt((err**2).sum() / (w.astype(np.float64) ** 2).sum()))


def test_int4_blocks_with_a_shorter_last_block():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(5, 70)).astype(np.float32)
    qw = quantize_weight(w, 4, 32)
    assert qw.scale.shape == (5, 3) and qw.q.min() >= -8 and qw.q.max() <= 7
    last = np.abs(w[:, 64:]).max(1) / 8  # the last block holds 6 elements
    assert np.allclose(np.abs(qw.scale[:, 2]), last)
    assert np.abs(dequant(qw) - w).max() <= np.abs(qw.scale).max() + 1e-9  # half a step, a step if clipped
    assert (qw.q == -8).sum() >= 5 * 3  # each block's extreme


@pytest.mark.parametrize("bits", [8, 4])
def test_zero_point_maps_each_block_onto_the_full_signed_range(bits):
    rng = np.random.default_rng(bits)
    w = (rng.random((4, 48)) * 3 + 0.5).astype(np.float32)  # all positive: a zero point pays off
    asym = quantize_weight(w, bits, 16, symmetric=False)
    sym = quantize_weight(w, bits, 16)
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    assert asym.zero_point is not None and asym.zero_point.min() >= lo and asym.zero_point.max() <= hi
    assert asym.q.min() >= lo and asym.q.max() <= hi
    assert np.abs(dequant(asym) - w).max() <= asym.scale.max() / 2 + 1e-9
    assert asym.error.rel_rms < sym.error.rel_rms
    assert np.abs(dequant(sym) - w).max() <= np.abs(sym.scale).max() + 1e-9


def test_transposed_read_only_memmap_in_chunks_gives_the_same_result(tmp_path, monkeypatch):
    rng = np.random.default_rng(3)
    w_nk = rng.normal(size=(37, 100)).astype(np.float32)
    path = tmp_path / "w.npy"
    np.save(path, np.ascontiguousarray(w_nk.T))  # ONNX MatMul's [K, N]
    mm = np.load(path, mmap_mode="r")
    monkeypatch.setattr(wq, "CHUNK_ELEMENTS", 300)  # 3 rows at a time
    a = quantize_weight(mm, 4, 32, transposed=True)
    b = quantize_weight(w_nk, 4, 32)
    assert np.array_equal(a.q, b.q) and np.array_equal(a.scale, b.scale)
    assert a.error.sum_sq_err == pytest.approx(b.error.sum_sq_err)


def test_unsigned_sources_shift_to_signed_keeping_q_minus_zp():
    q = np.array([0, 7, 15], np.uint8)
    qs, zs = from_unsigned(q, np.array([8], np.uint8), 4)
    assert qs.tolist() == [-8, -1, 7] and zs.tolist() == [0]
    assert (qs.astype(int) - zs[0]).tolist() == (q.astype(int) - 8).tolist()


@pytest.mark.parametrize("weights,block,message", [
    ("int3", None, "must be one of int8, int4"),
    ("int4", 24, "power of two"),
    ("int4", 8, "power of two ≥ 16"),
    (None, 32, "needs --weights"),
])
def test_bad_formats_are_refused(weights, block, message):
    with pytest.raises(ValueError, match=message):
        check_format(weights, block)


def test_formats_and_their_default_blocks():
    assert check_format("int8", None) == (8, None)
    assert check_format("int4", None) == (4, 32)
    assert check_format("int4", 128) == (4, 128)
    assert check_format(None, None) == (None, None)


def test_a_weight_holding_nan_is_a_one_line_model_error(tmp_path):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from opmlc.errors import UnsupportedError
    from opmlc.frontend import QuantPolicy, lower_model

    w = np.ones((4, 3), np.float32)
    w[1, 2] = np.nan
    g = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])],
                          [numpy_helper.from_array(w, "w")])
    path = tmp_path / "nan.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), path)
    with pytest.raises(UnsupportedError, match="weight 'w.T': the weight holds a NaN"):
        lower_model(path, QuantPolicy(analyse=True, weights="int8"))


def test_block_peaks_are_max_abs_q_minus_zp_per_block(monkeypatch):
    from opmlc.frontend.weights import block_peaks

    rng = np.random.default_rng(5)
    w = rng.normal(size=(9, 37)).astype(np.float32)
    qw = quantize_weight(w, 8, 16, symmetric=False)
    monkeypatch.setattr(wq, "CHUNK_ELEMENTS", 40)
    got = block_peaks(qw)
    d = np.abs(qw.q.astype(int) - np.repeat(qw.zero_point.astype(int), 16, 1)[:, :37])
    want = np.stack([d[:, i:i + 16].max(1) for i in range(0, 37, 16)], 1)
    assert np.array_equal(got, want)
