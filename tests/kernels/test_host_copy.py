"""The host kernels that only move elements (kernels/native/copy.py): views whose box is the
whole output (transposes, slices at an offset, rows not a multiple of a vector) and concats
without conversion, for 4-, 8- and 1-byte elements, against the interpreter; the nodes they
refuse (a fill box, an inner stride ≠ 1, a concat that rescales) keep the portable kernels; and
nodes large enough to be split, on 1 and 2 threads."""

from __future__ import annotations

import numpy as np
import pytest

from opmlc.backend.kernels.native import host_kernel_for, split_worth
from opmlc.backend.native import NativeSession, native_program
from opmlc.ir.graph import GraphBuilder
from opmlc.ir.types import DType, TensorType
from tests.kernels.harness import interp_and_native


def rand(rng, t: TensorType):
    if t.dtype is DType.BOOL:
        return rng.integers(0, 2, t.shape).astype(np.bool_)
    info = np.iinfo(t.dtype.numpy)
    return rng.integers(info.min, info.max, t.shape, endpoint=True, dtype=np.int64).astype(t.dtype.numpy)


def one_node(op, in_types, attrs):
    b = GraphBuilder(op)
    refs = [b.add_input(f"x{i}", t) for i, t in enumerate(in_types)]
    b.mark_output(b.add_node(op, refs, attrs))
    return b.build()


def check(g, host: bool, threads=(1,)):
    rng = np.random.default_rng(len(g.values))
    xs = [rand(rng, g.values[v].type) for v in g.inputs]
    assert (host_kernel_for(g, 0) is not None) == host
    out = interp_and_native(g, xs)
    np.testing.assert_array_equal(out.native[g.outputs[0]], out.values[g.outputs[0]])
    for t in threads:
        (got,) = NativeSession(native_program(g), g, threads=t).run(xs)
        np.testing.assert_array_equal(got, out.values[g.outputs[0]])


@pytest.mark.parametrize("dtype", [DType.FX32, DType.I64, DType.I8, DType.BOOL])
@pytest.mark.parametrize("src,attrs,host", [
    ((2, 32, 4, 20), {"shape": [2, 4, 32, 20], "offset": 0, "strides": [2560, 20, 80, 1]}, True),  # transpose
    ((1, 8, 3, 70), {"shape": [1, 8, 3, 35], "offset": 35, "strides": [1680, 210, 70, 1]}, True),  # slice
    ((5, 6), {"shape": [6, 5], "offset": 0, "strides": [1, 6]}, False),  # inner stride 6
    ((4, 9), {"shape": [4, 9], "offset": 0, "strides": [9, 1], "lo": [1, 0], "hi": [4, 9], "fill": 1}, False),
])
def test_view_rows(dtype, src, attrs, host):
    g = one_node("view", [TensorType(dtype, src, 16 if dtype is DType.FX32 else 0)],
                 {**attrs, "frac": 16} if dtype is DType.FX32 else attrs)
    check(g, host)


@pytest.mark.parametrize("dtype", [DType.FX32, DType.I64, DType.I8, DType.BOOL])
@pytest.mark.parametrize("shapes,axis", [(((2, 3, 33), (2, 3, 31)), 2), (((1, 4, 32, 8), (1, 4, 32, 8)), 3),
                                         (((3, 5), (1, 5), (2, 5)), 0), (((2, 0, 4), (2, 3, 4)), 1)])
def test_concat_slabs(dtype, shapes, axis):
    fx = dtype is DType.FX32
    g = one_node("concat", [TensorType(dtype, s, 20 if fx else 0) for s in shapes],
                 {"axis": axis, **({"frac": 20} if fx else {})})
    check(g, True)


def test_concat_that_rescales_keeps_the_portable_kernel():
    g = one_node("concat", [TensorType(DType.FX32, (2, 8), 20), TensorType(DType.FX32, (2, 8), 16)],
                 {"axis": 1, "frac": 20})
    check(g, False)


def test_split_copies_on_1_and_2_threads():
    g = one_node("view", [TensorType(DType.FX32, (64, 128, 130), 16)],
                 {"shape": [128, 64, 130], "offset": 0, "strides": [130, 16640, 1], "frac": 16})
    assert split_worth(g, 0)
    check(g, True, threads=(1, 2))
    g = one_node("concat", [TensorType(DType.FX32, (512, 1024), 16), TensorType(DType.FX32, (512, 1030), 16)],
                 {"axis": 1, "frac": 16})
    assert split_worth(g, 0)
    check(g, True, threads=(1, 2))
