"""The native build's edge (opmlc/backend/edge.py) and the fast path of `opmlc.run(build, x,
backend="native")`: the host functions quantize exactly as fixedpoint.quantize does, counting the
same clipped elements, on random values and on the edges of the float and int32 ranges; a NaN or
an infinity sends the call to the general path, which refuses it; and every input form the API
accepts (float32, float64, float16, a list, a view, a batchless shape, integer token ids) gives
the interpreter's output root, saturation and clip counts, or its one-line error."""

from __future__ import annotations

import numpy as np
import pytest

import opmlc
from opmlc.backend.native import native_program
from opmlc.errors import InputError
from opmlc.ir import fixedpoint as fp
from opmlc.ir.types import DType, TensorType
from tests.conftest import MODELS
from tests.kernels.test_kernels import single_op


@pytest.fixture(scope="module")
def program():
    t = TensorType(DType.FX32, (4,), 8)
    g, _ = single_op("relu", [t], {}, np.random.default_rng(0))
    return native_program(g)


def edge_values(dtype) -> np.ndarray:
    """Values where quantization can go wrong: signed zeros, halves and near-halves at every scale,
    the int32 limits after scaling, tiny and huge magnitudes, subnormals."""
    info = np.finfo(dtype)
    base = [0.0, -0.0, 0.5, -0.5, 1.5, -1.5, 2.5, -2.5, 1.0, -1.0, info.tiny, -info.tiny,
            info.smallest_subnormal, -info.smallest_subnormal, info.max, -info.max, info.eps, 1 - info.eps / 2]
    out = []
    for f in range(0, 31):
        s = 2.0 ** -f
        for m in (2**31 - 1, 2**31 - 0.5, 2**31, 2**31 + 1, 2**30, 2**24 + 0.5, 3.5, 0.49999997, 0.5000001):
            out += [m * s, -m * s]
    return np.array(base + out, dtype=dtype)


def native_quantize(program, x: np.ndarray, frac: int) -> tuple[np.ndarray, int]:
    fn = {np.float32: program.quantize_f32, np.float64: program.quantize_f64}[x.dtype.type]
    x = np.ascontiguousarray(x)
    out = np.empty(x.shape, np.int32)
    n = fn(x.ctypes.data, out.ctypes.data, x.size, frac)
    return out, n


def reference(x: np.ndarray, frac: int) -> tuple[np.ndarray, int]:
    with fp.count_saturation() as c:
        q = fp.quantize(x, frac)
    return q, c.n


@pytest.mark.filterwarnings("ignore:overflow encountered")  # numpy's, on the huge edge values
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("frac", [0, 1, 8, 16, 24, 30])
def test_quantize_equals_fixedpoint_on_edges_and_random_values(program, dtype, frac):
    rng = np.random.default_rng(frac)
    for x in (edge_values(dtype),
              (rng.standard_normal(1000) * 10.0 ** rng.integers(-6, 8, 1000)).astype(dtype),
              rng.uniform(-2.0**(31 - frac) * 1.01, 2.0**(31 - frac) * 1.01, 517).astype(dtype)):
        got, n = native_quantize(program, x, frac)
        want, n_want = reference(x, frac)
        np.testing.assert_array_equal(got, want)
        assert n == n_want


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_quantize_reports_a_non_finite_value(program, bad):
    for dtype in (np.float32, np.float64):
        x = np.array([1.0, bad, 2.0**40], dtype=dtype)
        assert native_quantize(program, x, 16)[1] == -1


def test_narrow_counts_values_outside_int32(program):
    x = np.array([0, -1, 2**31 - 1, -(2**31), 7], dtype=np.int64)
    out = np.empty(5, np.int32)
    assert program.narrow_i64(x.ctypes.data, out.ctypes.data, 5) == 0
    np.testing.assert_array_equal(out, x.astype(np.int32))
    x = np.array([2**31, -(2**31) - 1, 5, -(2**63)], dtype=np.int64)
    assert program.narrow_i64(x.ctypes.data, out.ctypes.data, 4) == 3


@pytest.fixture(scope="module")
def builds(tmp_path_factory):
    root = tmp_path_factory.mktemp("edge")
    return {name: opmlc.Build.load(opmlc.compile_model(MODELS / f"{name}.onnx", root / name).directory)
            for name in ("digits_mlp", "tiny_llama")}


def same_as_interpreter(build, x) -> opmlc.RunResult:
    got = opmlc.run(build, [x], backend="native")
    want = opmlc.run(build, [x], backend="interp")
    assert got.output_roots == want.output_roots
    assert got.saturated == want.saturated
    assert got.clipped_inputs == want.clipped_inputs
    return got


def test_every_float_input_form_gives_the_interpreters_result(builds):
    b = builds["digits_mlp"]
    assert b.native.program.quantize_f32 is not None, "the build's object has the edge functions"
    x = np.random.default_rng(1).random((1, 64)) * 16
    wide = np.random.default_rng(2).random((1, 128)) * 16
    for form in (x.astype(np.float32), x, x.astype(np.float16), x.tolist(), x[0].astype(np.float32),
                 wide[:, ::2], np.asfortranarray(x.reshape(8, 8)).reshape(1, 64)):
        same_as_interpreter(b, form)


def test_clipped_inputs_are_counted_and_bad_inputs_refused_as_before(builds):
    b = builds["digits_mlp"]
    x = np.random.default_rng(3).random((1, 64)).astype(np.float32) * 16
    x[0, :5] = 1e12  # far outside the int32 range of the input's bits
    x[0, 5] = -1e30
    assert same_as_interpreter(b, x).clipped_inputs == {b.manifest["inputs"][0]["name"]: 6}
    for bad, msg in ((np.nan, "inf or NaN"), (np.inf, "inf or NaN")):
        y = x.copy()
        y[0, 7] = bad
        with pytest.raises(InputError, match=msg):
            opmlc.run(b, [y], backend="native")
    with pytest.raises(InputError, match="shape"):
        opmlc.run(b, [np.zeros((2, 64), np.float32)], backend="native")
    with pytest.raises(InputError, match="float array"):
        opmlc.run(b, [np.zeros((1, 64), np.int64)], backend="native")
    with pytest.raises(InputError, match="input"):
        opmlc.run(b, [x, x], backend="native")
    # the session is unharmed by the refused calls
    same_as_interpreter(b, x)


def test_token_inputs_in_every_integer_form(builds):
    b = builds["tiny_llama"]
    t = b.graph.values[b.graph.inputs[0]].type
    ids = np.random.default_rng(4).integers(0, 256, t.shape)
    for form in (ids, ids.astype(np.int32), ids.astype(np.uint8), ids.astype(np.float32), ids.tolist()):
        same_as_interpreter(b, form)
    with pytest.raises(InputError, match="must hold integers"):
        opmlc.run(b, [ids + 0.5], backend="native")


def test_a_program_without_edge_functions_takes_the_general_path(builds, monkeypatch):
    """An object written before the edge functions existed binds none of them: every input is
    then checked and quantized by the API, with the same result."""
    b = builds["digits_mlp"]
    x = np.random.default_rng(6).random((1, 64)).astype(np.float32) * 16
    x[0, 0] = 1e12
    want = opmlc.run(b, [x], backend="native")
    for name in ("quantize_f32", "quantize_f64", "narrow_i64"):
        monkeypatch.setattr(b.native.program, name, None)
    got = same_as_interpreter(b, x)
    assert got.output_roots == want.output_roots and got.clipped_inputs == want.clipped_inputs
