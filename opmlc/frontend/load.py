"""Step one of the frontend: read an ONNX file, validate it, and fix every shape statically.

Errors here are the user's: an unreadable file, a model the ONNX checker rejects, an opset or
domain opmlc does not handle, an input whose shape is left open. Each becomes a one-line
`ModelError` naming the file and what to do.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from google.protobuf.message import DecodeError
from onnx import numpy_helper, shape_inference

from opmlc.errors import ModelError, UnsupportedError
from opmlc.frontend import initializers
from opmlc.frontend.contrib import infer_contrib_shapes

MIN_OPSET = 7
MAX_OPSET = onnx.defs.onnx_opset_version()
DEFAULT_BATCH = 1  # what an open leading (batch) input dimension becomes, announced, unless the user says otherwise


def read_model(path: str | Path) -> onnx.ModelProto:
    """Parse and check an ONNX file; raise ModelError for anything that is not a valid model.

    External data (frontend/initializers.py) is not read: its references are checked (a file inside
    the model's folder that holds every tensor's bytes) and the weights stay on disk until the
    lowering asks for them one at a time."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: no such file; pass the path of an .onnx model")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except (DecodeError, ValueError, RuntimeError, OSError) as exc:
        raise ModelError(f"{path}: not an ONNX model (protobuf parse failed: {_first_line(exc)})") from None
    if model.ir_version == 0 or not model.HasField("graph") or not model.opset_import:
        raise ModelError(f"{path}: not an ONNX model (no IR version, graph or opset); check the file")
    initializers.check_external(model, path)
    contrib_names = _contrib_in_default_domain(model)
    try:
        # by path: the checker resolves external data against the model's folder and never
        # serialises a > 2 GB proto
        if not contrib_names:
            onnx.checker.check_model(str(path))
        else:  # the graph without weights, with those nodes in their contrib domain
            onnx.checker.check_model(_weightless(model))
    except onnx.checker.ValidationError as exc:
        raise ModelError(f"{path}: invalid ONNX model: {_first_line(exc)}") from None
    opset = default_opset(model)
    # opset 0: no default-domain import (onnxmltools' XGBoost models); the checker has made sure
    # that no node then uses a default-domain op
    if opset != 0 and not MIN_OPSET <= opset <= MAX_OPSET:
        raise UnsupportedError(
            f"{path}: opset {opset} of the default domain is not supported "
            f"(supported: {MIN_OPSET}..{MAX_OPSET}); convert the model with onnx.version_converter"
        )
    return model


# onnxruntime ops that onnxruntime-genai's model builder writes in the default domain, where
# onnxruntime accepts them and onnx's checker does not ("No Op registered for ..."): they are
# read as their com.microsoft namesakes (rules/genai.py), the rest of the model checked as usual
CONTRIB_IN_DEFAULT_DOMAIN = ("SimplifiedLayerNormalization",)
MS_DOMAIN = "com.microsoft"


def _contrib_in_default_domain(model: onnx.ModelProto) -> set[str]:
    """Move the default-domain nodes named in CONTRIB_IN_DEFAULT_DOMAIN (when onnx has no schema
    for them) to com.microsoft, importing it; the names moved."""
    moved = set()
    for node in model.graph.node:
        if (node.domain in ("", "ai.onnx") and node.op_type in CONTRIB_IN_DEFAULT_DOMAIN
                and not onnx.defs.has(node.op_type)):
            node.domain = MS_DOMAIN
            moved.add(node.op_type)
    if moved and not any(imp.domain == MS_DOMAIN for imp in model.opset_import):
        model.opset_import.add(domain=MS_DOMAIN, version=1)
    return moved


def _weightless(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of `model` for the checker, its large or external initializers as empty tensors of
    the same type and rank (the checker validates the graph, not the weights' bytes; external
    data is checked by initializers.check_external)."""
    skel = onnx.ModelProto()
    _copy_fields(model, skel, skip="graph")
    _copy_fields(model.graph, skel.graph, skip="initializer")
    for t in model.graph.initializer:
        if initializers.is_external(t) or (initializers.nbytes(t) or 0) > SKELETON_LIMIT:
            skel.graph.initializer.add(name=t.name, data_type=t.data_type, dims=[0] * len(t.dims), raw_data=b"")
        else:
            skel.graph.initializer.append(t)
    return skel


def default_opset(model: onnx.ModelProto) -> int:
    """The default domain's opset version, 0 when the model imports none."""
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return imp.version
    return 0


def real_inputs(graph: onnx.GraphProto) -> list[onnx.ValueInfoProto]:
    """Graph inputs that are not initializers (old exporters list weights as inputs too)."""
    inits = {t.name for t in graph.initializer}
    return [i for i in graph.input if i.name not in inits]


def fix_input_shapes(
    model: onnx.ModelProto, path: str | Path, overrides: dict[str, tuple[int, ...]] | None = None,
    defaulted: list[str] | None = None,
) -> onnx.ModelProto:
    """Give every graph input a static shape and re-infer shapes, in place (returns `model`).

    Shape inference runs on a skeleton of the model whose large initializers carry only their
    dims and type (`_skeleton`), so that no weight is copied or read for it.

    An input's shape is its --input-shape override, else its own static dims. An open leading
    (batch) dim becomes DEFAULT_BATCH and the input's name is appended to `defaulted`, for the
    caller to announce; any other open dim is a ModelError saying which --input-shape to pass."""
    overrides = dict(overrides or {})
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
            open_dims = [k for k, d in enumerate(dims) if not d.HasField("dim_value") or d.dim_value <= 0]
            if any(k > 0 for k in open_dims):
                k = next(k for k in open_dims if k > 0)
                example = ",".join(str(d.dim_value) if j not in open_dims else "1" if j == 0
                                   else f"<{d.dim_param or f'dim{j}'}>" for j, d in enumerate(dims))
                raise ModelError(f"{path}: input {inp.name!r} has a dynamic dimension {k} "
                                 f"({dims[k].dim_param or 'unnamed'}); pass --input-shape {inp.name}={example}")
            if open_dims:
                dims[0].Clear()
                dims[0].dim_value = DEFAULT_BATCH
                if defaulted is not None:
                    defaulted.append(inp.name)
    del model.graph.value_info[:]
    try:
        inferred = infer_contrib_shapes(
            _skeleton(model, Path(path)),
            lambda m: shape_inference.infer_shapes(m, check_type=True, strict_mode=True, data_prop=True))
    except Exception as exc:  # onnx raises several classes here; all mean an inconsistent model
        raise ModelError(f"{path}: shape inference failed: {_first_line(exc)}") from None
    g, ig = model.graph, inferred.graph
    for field in ("node", "input", "output", "value_info"):  # nodes too: subgraphs get value_info
        del getattr(g, field)[:]
        getattr(g, field).extend(getattr(ig, field))
    return model


SKELETON_LIMIT = initializers.INLINE_LIMIT  # initializers above this many bytes go to shape inference as dims only


def _skeleton(model: onnx.ModelProto, path: Path) -> onnx.ModelProto:
    """A copy of `model` for shape inference: small initializers with their values (shape
    tensors; external ones read in), large ones as external stubs that carry dims and type only."""
    skel = onnx.ModelProto()
    _copy_fields(model, skel, skip="graph")
    _copy_fields(model.graph, skel.graph, skip="initializer")
    for t in model.graph.initializer:
        size = initializers.nbytes(t)
        if size is None and not initializers.is_external(t):
            skel.graph.initializer.append(t)  # strings and such: never weights
        elif size is not None and size <= SKELETON_LIMIT:
            if initializers.is_external(t):
                skel.graph.initializer.append(numpy_helper.from_array(np.array(initializers.read_tensor(t, path.parent)),
                                                                      t.name))
            else:
                skel.graph.initializer.append(t)
        else:
            stub = skel.graph.initializer.add(name=t.name, data_type=t.data_type, dims=t.dims)
            stub.data_location = onnx.TensorProto.EXTERNAL
            stub.external_data.add(key="location", value="(not read for shape inference)")
    return skel


def _copy_fields(src, dst, skip: str) -> None:
    """Copy every set field of protobuf message `src` into `dst` except the one named `skip`."""
    for fd, value in src.ListFields():
        if fd.name == skip:
            continue
        if fd.is_repeated:
            getattr(dst, fd.name).extend(value)
        elif fd.message_type is not None:
            getattr(dst, fd.name).CopyFrom(value)
        else:
            setattr(dst, fd.name, value)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]
