"""Step one of the frontend: read an ONNX file, validate it, and fix every shape statically.

Errors here are the user's: an unreadable file, a model the ONNX checker rejects, an opset or
domain opmlc does not handle, an input whose shape is left open. Each becomes a one-line
`ModelError` naming the file and what to do.
"""

from __future__ import annotations

from pathlib import Path

import onnx
from google.protobuf.message import DecodeError
from onnx import shape_inference

from opmlc.errors import ModelError, UnsupportedError

MIN_OPSET = 7
MAX_OPSET = onnx.defs.onnx_opset_version()
DEFAULT_DIM = 1  # what an open (symbolic) input dimension becomes unless the user says otherwise


def read_model(path: str | Path) -> onnx.ModelProto:
    """Parse and check an ONNX file; raise ModelError for anything that is not a valid model."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: no such file; pass the path of an .onnx model")
    data = path.read_bytes()
    try:
        model = onnx.load_model_from_string(data)
    except (DecodeError, ValueError, RuntimeError) as exc:
        raise ModelError(f"{path}: not an ONNX model (protobuf parse failed: {_first_line(exc)})") from None
    if model.ir_version == 0 or not model.HasField("graph") or not model.opset_import:
        raise ModelError(f"{path}: not an ONNX model (no IR version, graph or opset); check the file")
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        raise ModelError(f"{path}: invalid ONNX model: {_first_line(exc)}") from None
    opset = default_opset(model)
    only_ml = opset == 0 and all(imp.domain == "ai.onnx.ml" for imp in model.opset_import)
    if not only_ml and not MIN_OPSET <= opset <= MAX_OPSET:  # an ONNX-ML-only graph has no default opset
        raise UnsupportedError(
            f"{path}: opset {opset} of the default domain is not supported "
            f"(supported: {MIN_OPSET}..{MAX_OPSET}); convert the model with onnx.version_converter"
        )
    return model


def default_opset(model: onnx.ModelProto) -> int:
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return imp.version
    return 0


def real_inputs(graph: onnx.GraphProto) -> list[onnx.ValueInfoProto]:
    """Graph inputs that are not initializers (old exporters list weights as inputs too)."""
    inits = {t.name for t in graph.initializer}
    return [i for i in graph.input if i.name not in inits]


def fix_input_shapes(
    model: onnx.ModelProto, path: str | Path, overrides: dict[str, tuple[int, ...]] | None = None
) -> onnx.ModelProto:
    """Give every graph input a static shape (overrides, else open dims → 1) and re-infer shapes."""
    overrides = dict(overrides or {})
    model = onnx.ModelProto.FromString(model.SerializeToString())
    inputs = real_inputs(model.graph)
    names = {i.name for i in inputs}
    for name in overrides:
        if name not in names:
            raise ModelError(f"{path}: --input-shape names {name!r}, but the inputs are {sorted(names)}")
    for inp in inputs:
        tt = inp.type.tensor_type
        if not tt.HasField("shape"):
            if inp.name not in overrides:
                raise ModelError(f"{path}: input {inp.name!r} has no shape; pass --input-shape {inp.name}=D0,D1,…")
            tt.shape.SetInParent()
        dims = tt.shape.dim
        if inp.name in overrides:
            want = overrides[inp.name]
            if len(want) != len(dims) and len(dims) > 0:
                raise ModelError(
                    f"{path}: input {inp.name!r} has rank {len(dims)}, --input-shape gives {len(want)} dims"
                )
            del dims[:]
            for d in want:
                dims.add().dim_value = int(d)
        else:
            for d in dims:
                if not d.HasField("dim_value") or d.dim_value <= 0:
                    d.Clear()
                    d.dim_value = DEFAULT_DIM
    del model.graph.value_info[:]
    try:
        return shape_inference.infer_shapes(model, check_type=True, strict_mode=True, data_prop=True)
    except Exception as exc:  # onnx raises several classes here; all mean an inconsistent model
        raise ModelError(f"{path}: shape inference failed: {_first_line(exc)}") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]
