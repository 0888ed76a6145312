"""The ONNX conformance harness: the ONNX backend node test cases through opmlc.

`opmlc conformance [--json] [--op NAME…] [--native]` builds the cases offline with
`onnx.backend.test.case.node.collect_testcases()` (each a one-node model, or a function op's
expanded subgraph, with inputs and expected outputs), compiles each through the frontend and
runs it on the golden interpreter (and, with --native, on the native build, which must give the
interpreter's bits exactly). It reports passed / failed / unsupported per op and in total.

Compilation of a case:
- Integer inputs that a node reads as a shape parameter (Reshape's shape, Slice's starts,
  Pad's pads, reduction axes…; SHAPE_INPUTS), and the quantization parameters and integer
  weights of the quantized ops, are bound as compile-time constants, as a static compiler must (`lower_model(constant_inputs=…)`); every other input stays a run-time input.
- Fractional bits are calibrated on the case's own inputs (opmlc.frontend.calibrate: the float
  run's peak per tensor, headroom 2, at most 24 bits), exactly as `compile --calibrate` does.

Tolerance rule (per output tensor, from its fractional bits):
- fx32 outputs: let f = min(the output's bits, the bits of every fx32 graph input). Each element
  must satisfy |got − want| ≤ 2^(8 − f) · (1 + |want|). The inputs are quantized with an error
  ≤ 2^−(f+1) and each rounding step adds ≤ 2^−(f+1); 2^8 such units cover the error a node
  amplifies (a sum over up to a few hundred elements, a division by a small quantized value)
  while still failing any wrong semantics. At the calibrated f ≈ 24 this is ≈ 1.5e-5 relative.
  A float16 expectation (itself rounded to 11 bits) adds 8 · eps(float16) · (1 + |want|).
- i32/i64/bool outputs: exact equality.
A case is *unsupported* when opmlc refuses it with an UnsupportedError (an op, attribute, dtype,
or a value range fixed point cannot represent — inf/NaN inputs or expected outputs included),
*failed* when it compiles but an output differs (or the native build differs from the
interpreter), and *passed* otherwise. Nothing is skipped silently: every case is one of the three.
"""

from __future__ import annotations

import re
import tempfile
import warnings
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

from opmlc.errors import OpmlcError, UnsupportedError

# (op type, input index) pairs that are shape parameters: bound as constants when graph inputs.
SHAPE_INPUTS = {
    "Reshape": (1,), "Expand": (1,), "Tile": (1,), "Slice": (1, 2, 3, 4), "Pad": (1, 2, 3),
    "Squeeze": (1,), "Unsqueeze": (1,), "Split": (1,), "ReduceSum": (1,), "ReduceMean": (1,),
    "ReduceMax": (1,), "ReduceMin": (1,), "ReduceProd": (1,), "ReduceL1": (1,), "ReduceL2": (1,),
    "ReduceSumSquare": (1,), "ReduceLogSum": (1,), "ReduceLogSumExp": (1,), "TopK": (1,),
    "OneHot": (1,), "Resize": (1, 2, 3), "Upsample": (1,), "ConstantOfShape": (0,), "Range": (0, 1, 2),
    "CumSum": (1,), "Trilu": (1,), "Gather": (1,), "Clip": (), "CenterCropPad": (1,),
    "Dropout": (1, 2),  # ratio and training_mode: whether the program is random is static
    # quantization parameters (scales, zero points) and the integer weights of the QOperator
    # ops: constants in every exported model (the rules in frontend/rules/quantized.py need them)
    "QuantizeLinear": (1, 2), "DequantizeLinear": (1, 2), "QLinearMatMul": (1, 2, 4, 5, 6, 7),
    "QLinearConv": (1, 2, 3, 4, 5, 6, 7, 8), "MatMulInteger": (2, 3), "ConvInteger": (1, 2, 3),
}
# onnx's 4- and 2-bit integers (ml_dtypes) are given to the frontend as 8-bit ones (the IR holds i32)
NARROW_INTS = {"int4": np.int8, "uint4": np.uint8, "int2": np.int8, "uint2": np.uint8}

TOL_UNITS = 8  # the tolerance is 2^(TOL_UNITS − f) · (1 + |want|)


@dataclass
class CaseResult:
    name: str
    op: str
    status: str  # passed | failed | unsupported
    detail: str = ""


@dataclass
class Report:
    results: list[CaseResult] = field(default_factory=list)

    def totals(self) -> dict[str, int]:
        c = Counter(r.status for r in self.results)
        return {"passed": c["passed"], "failed": c["failed"], "unsupported": c["unsupported"],
                "total": len(self.results)}

    def per_op(self) -> dict[str, dict[str, int]]:
        ops: dict[str, Counter] = defaultdict(Counter)
        for r in self.results:
            ops[r.op][r.status] += 1
        return {op: {"passed": c["passed"], "failed": c["failed"], "unsupported": c["unsupported"]}
                for op, c in sorted(ops.items())}

    def to_json(self, cases: bool = False) -> dict:
        doc = {**self.totals(), "ops": self.per_op()}
        if cases:
            doc["cases"] = [r.__dict__ for r in self.results]
        return doc


def _snake(op: str) -> str:
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", op).lower()


def _op_names() -> list[tuple[str, str]]:
    names = {s.name for s in onnx.defs.get_all_schemas_with_history()}
    keys = []
    for n in names:
        keys += [(_snake(n), n), (n.lower(), n)]
    return sorted(set(keys), key=lambda kv: -len(kv[0]))


_OPS = None


def op_of(case) -> str:
    """The ONNX op a case tests: its one node's type, or the op its name starts with."""
    global _OPS
    nodes = case.model.graph.node
    if len(nodes) == 1:
        return nodes[0].op_type
    _OPS = _OPS or _op_names()
    stem = case.name.removeprefix("test_")
    for key, op in _OPS:
        if stem == key or stem.startswith(key + "_"):
            return op
    return nodes[-1].op_type


def collect(ops: Iterable[str] | None = None) -> list:
    from onnx.backend.test.case.node import collect_testcases

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cases = [c for c in collect_testcases() if c.kind == "node"]
    if ops:
        want = {o.lower() for o in ops}
        cases = [c for c in cases if op_of(c).lower() in want]
    return sorted(cases, key=lambda c: c.name)


def _shape_constants(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    out = {}
    for node in model.graph.node:
        for k in SHAPE_INPUTS.get(node.op_type, ()):
            if k < len(node.input) and node.input[k] in feeds:
                out[node.input[k]] = feeds[node.input[k]]
    return out


def _quantized(arr: np.ndarray, t) -> np.ndarray:
    from opmlc.ir.fixedpoint import encode

    return encode(arr, t)  # fx32 quantized, f32 (tree features) as float32 bits, ints cast


def tolerance(want: np.ndarray, f: int) -> np.ndarray:
    return 2.0 ** (TOL_UNITS - f) * (1.0 + np.abs(want))


def run_case(case, native: bool = False) -> CaseResult:
    from opmlc.frontend import lower_model
    from opmlc.frontend.calibrate import DEFAULT_FRAC, float_values, fracs_from_values
    from opmlc.frontend.context import QuantPolicy
    from opmlc.ir.fixedpoint import dequantize
    from opmlc.ir.interpreter import run_graph
    from opmlc.ir.types import DType

    op = op_of(case)
    model = case.model
    inputs, expected = case.data_sets[0]
    inits = {t.name for t in model.graph.initializer}
    in_names = [i.name for i in model.graph.input if i.name not in inits]
    out_names = [o.name for o in model.graph.output]

    def unsupported(why: str) -> CaseResult:
        return CaseResult(case.name, op, "unsupported", why)

    # Some cases (Cast's) store their data as TensorProto: to numpy, as onnx's own runner does.
    inputs, expected = ([onnx.numpy_helper.to_array(a) if isinstance(a, onnx.TensorProto) else a for a in arrs]
                        for arrs in (inputs, expected))
    if not all(isinstance(a, np.ndarray | np.generic) for a in [*inputs, *expected]):
        return unsupported("sequence, map or optional values have no IR type")
    inputs, expected = ([np.asarray(a).astype(NARROW_INTS[str(np.asarray(a).dtype)])
                         if str(np.asarray(a).dtype) in NARROW_INTS else np.asarray(a) for a in arrs]
                        for arrs in (inputs, expected))
    feeds = {n: np.asarray(a) for n, a in zip(in_names, inputs, strict=False)}
    for name, arr in list(feeds.items()) + list(zip(out_names, expected, strict=False)):
        if arr.dtype.kind in "OUSV" or arr.dtype.names:
            return unsupported(f"{name}: {arr.dtype} tensors have no IR type")
        if np.issubdtype(arr.dtype, np.floating) and not np.all(np.isfinite(arr)):
            return unsupported(f"{name} holds inf or NaN, which fixed point cannot represent")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                values = float_values(model, feeds)
            except Exception:
                values = {}
            values.update(zip(out_names, expected, strict=False))
            values = {k: v for k, v in values.items()
                      if isinstance(v, np.ndarray) and (not np.issubdtype(v.dtype, np.floating)
                                                        or np.all(np.isfinite(v)))}
            policy = QuantPolicy(default=DEFAULT_FRAC, overrides=fracs_from_values(values))
        consts = _shape_constants(model, feeds)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / f"{case.name}.onnx"
            onnx.save(model, path)
            shapes = {n: tuple(a.shape) for n, a in feeds.items() if n not in consts}
            fe = lower_model(path, policy, shapes, constant_inputs=consts)
    except UnsupportedError as exc:
        return unsupported(str(exc).split(": ", 1)[-1][:300])
    except OpmlcError as exc:  # the loader refuses the model (shape inference of optional/sequence types…)
        return unsupported(f"the frontend cannot load it: {str(exc).split(': ', 1)[-1][:300]}")
    except Exception as exc:  # a bug of ours: count it as a failure, never hide it
        return CaseResult(case.name, op, "failed", f"compile crashed: {type(exc).__name__}: {str(exc)[:200]}")

    g = fe.graph
    try:
        q = [_quantized(feeds[n], g.values[v].type) for n, v in zip(fe.input_names, g.inputs, strict=True)]
        values_q = run_graph(g, q)
    except Exception as exc:
        return CaseResult(case.name, op, "failed", f"interpreter crashed: {type(exc).__name__}: {str(exc)[:200]}")
    if native:
        from opmlc.backend.native import native_program, run_native

        bufs = run_native(native_program(g), g, q)
        for v in range(len(g.values)):
            if not np.array_equal(np.ravel(bufs[v]), np.ravel(values_q[v])):
                return CaseResult(case.name, op, "failed", f"native differs from the interpreter at %{v}")
    in_fracs = [g.values[v].type.frac for v in g.inputs if g.values[v].type.dtype is DType.FX32]
    for name, v, want in zip(out_names, g.outputs, expected, strict=True):
        t = g.values[v].type
        want = np.asarray(want)
        got = values_q[v]
        if got.shape != want.shape:
            return CaseResult(case.name, op, "failed", f"{name}: shape {got.shape}, expected {want.shape}")
        if t.dtype is DType.FX32:
            if not np.issubdtype(want.dtype, np.floating):
                return CaseResult(case.name, op, "failed", f"{name}: fx32 result for a {want.dtype} output")
            f = min([t.frac, *in_fracs])
            err = np.abs(dequantize(got, t.frac) - want.astype(np.float64))
            tol = tolerance(want.astype(np.float64), f)
            if want.dtype.itemsize < 4:  # a float16 expectation is itself rounded to 11 bits
                tol = tol + 8 * float(np.finfo(want.dtype).eps) * (1 + np.abs(want.astype(np.float64)))
            if np.any(err > tol):
                return CaseResult(case.name, op, "failed", f"{name}: max error {err.max():.3g} (f = {f})")
        elif not np.array_equal(got.astype(np.int64) if want.dtype != bool else got, want):
            return CaseResult(case.name, op, "failed", f"{name}: integer/bool result differs")
    return CaseResult(case.name, op, "passed")


def run(ops: Iterable[str] | None = None, native: bool = False,
        progress: Callable[[int, int], None] | None = None) -> Report:
    cases = collect(ops)
    report = Report()
    for k, case in enumerate(cases):
        report.results.append(run_case(case, native))
        if progress:
            progress(k + 1, len(cases))
    return report
