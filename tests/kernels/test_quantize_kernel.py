"""quantize_linear's kernel against its interpreter semantics, bit for bit (native, MIPS in
the VM and in unicorn), per tensor, per axis and per element, on random and edge values, including exact
ties (rounded half to even) and the quantized types' saturation."""

from __future__ import annotations

import numpy as np

from opmlc.ir.graph import GraphBuilder
from opmlc.ir.ops.quantize import round_half_even_shr
from opmlc.ir.types import DType, TensorType
from tests.kernels.test_kernels import check_all_backends, rand_fx


def test_round_half_even_shr_matches_numpy_rint():
    p = np.arange(-64, 65, dtype=np.int64)
    for s in (1, 2, 3):
        assert np.array_equal(round_half_even_shr(p, s), np.rint(p / 2**s).astype(np.int64))


def test_quantize_linear_per_tensor_and_per_axis():
    rng = np.random.default_rng(3)
    b = GraphBuilder("q")
    x = b.add_input("x", TensorType(DType.FX32, (2, 3, 5), 8))
    cases = [  # (m, zp, shift, axis, qmin, qmax)
        (np.int32(1 << 30), np.int32(128), 39, 0, 0, 255),  # x / 2 at 8 bits: ties at odd x
        (np.int32(-1234567), np.int32(-3), 30, 0, -128, 127),
        (np.int32(2**31 - 1), np.int32(0), 62, 0, -8, 7),
        (rng.integers(1, 2**31 - 1, 3).astype(np.int32), rng.integers(-5, 5, 3).astype(np.int32), 40, 1, 0, 255),
        (rng.integers(-2**31, 2**31 - 1, 5).astype(np.int32), np.int32(7), 33, 2, -(2**31), 2**31 - 1),
        (rng.integers(1, 2**31 - 1, (2, 3, 5)).astype(np.int32), rng.integers(-3, 3, (2, 3, 5)).astype(np.int32),
         36, 0, -8, 7),  # per element (blocked)
    ]
    for k, (m, zp, shift, axis, lo, hi) in enumerate(cases):
        mt = TensorType(DType.I32, np.shape(m))
        zt = TensorType(DType.I32, np.shape(zp))
        rm = b.add_initializer(f"m{k}", np.asarray(m, np.int32), mt)
        rz = b.add_initializer(f"z{k}", np.asarray(zp, np.int32), zt)
        attrs = {"shift": shift, "axis": axis, "qmin": lo, "qmax": hi}
        b.mark_output(b.add_node("quantize_linear", [x, rm, rz], attrs))
    g = b.build()
    data = rand_fx(rng, (2, 3, 5))
    data.flat[:6] = [-3, -1, 1, 3, 5, 2**31 - 1]
    out = check_all_backends(g, [data])
    first = out.values[g.outputs[0]]
    assert np.array_equal(first, np.clip(np.rint(data.astype(np.int64) / 512.0) + 128, 0, 255))
