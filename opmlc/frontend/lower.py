"""The frontend driver: an ONNX model in, a verified fixed-point IR graph out.

read → check → static shapes → for each node in order: fold it if all its inputs are
constants, else apply its op's lowering rule → mark outputs → build (canonical numbering)
and verify. Float inputs are quantized at the edge with the policy's bits, recorded in the
graph's input types.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from opmlc import progress
from opmlc.errors import ModelError, UnsupportedError
from opmlc.frontend import fold
from opmlc.frontend.context import Const, LoweringContext, QuantPolicy, Ref
from opmlc.frontend.fuse import fuse_batchnorm
from opmlc.frontend.fuse_norm import fuse_rmsnorm
from opmlc.frontend.load import default_opset, fix_input_shapes, read_model, real_inputs
from opmlc.frontend.rules import RULES
from opmlc.ir.graph import Graph, GraphBuilder
from opmlc.ir.ops import IRTypeError
from opmlc.ir.types import DType, TensorType

ML_DOMAIN = "ai.onnx.ml"  # scikit-learn models (skl2onnx): rules/ml.py, registered as "ai.onnx.ml:Op"
FLOAT_TYPES = {onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16}
_T = onnx.TensorProto
INPUT_TYPES = {
    **{t: DType.FX32 for t in (*FLOAT_TYPES, _T.BFLOAT16)},
    **{t: DType.I32 for t in (_T.INT8, _T.INT16, _T.INT32, _T.UINT8, _T.UINT16)},
    _T.INT64: DType.I64, _T.UINT32: DType.I64, _T.BOOL: DType.BOOL,
}


@dataclass
class Frontend:
    """The lowered graph plus what the build records about its source."""

    graph: Graph
    model_sha256: str
    opset: int
    input_names: list[str]
    output_names: list[str]


def lower_model(
    path: str | Path,
    policy: QuantPolicy | None = None,
    input_shapes: dict[str, tuple[int, ...]] | None = None,
    constant_inputs: dict[str, np.ndarray] | None = None,
) -> Frontend:
    """Lower the model at `path`. `constant_inputs` binds graph inputs to compile-time constants
    (a static compiler's specialisation: shape, axes or pads given as inputs must be known)."""
    path = Path(path)
    constant_inputs = dict(constant_inputs or {})
    policy = policy or QuantPolicy()
    model = read_model(path)
    model = fix_input_shapes(model, path, input_shapes)
    model = fuse_rmsnorm(fuse_batchnorm(model))
    opset = default_opset(model)
    g = model.graph
    unknown_domains = {imp.domain for imp in model.opset_import} - {"", "ai.onnx", ML_DOMAIN}
    builder = GraphBuilder(g.name or path.stem)
    ctx = LoweringContext(builder, policy, opset, str(path))

    for init in g.initializer:
        ctx.bind(init.name, Const(numpy_helper.to_array(init)))
    runtime_inputs = []
    for inp in real_inputs(g):
        if inp.name in constant_inputs:
            ctx.bind(inp.name, Const(np.asarray(constant_inputs[inp.name])))
            continue
        tt = inp.type.tensor_type
        dtype = INPUT_TYPES.get(tt.elem_type)
        if dtype is None:
            raise UnsupportedError(
                f"{path}: input {inp.name!r} has element type "
                f"{onnx.TensorProto.DataType.Name(tt.elem_type)}, which has no IR type "
                "(supported: float, double, float16, bfloat16, int8..int64, uint8..uint32, bool)"
            )
        shape = tuple(d.dim_value for d in tt.shape.dim)
        t = TensorType(dtype, shape, policy.activation(inp.name) if dtype is DType.FX32 else 0)
        ctx.bind(inp.name, Ref(builder.add_input(inp.name, t)))
        runtime_inputs.append(inp.name)

    for node in progress.track(g.node, f"lowering {len(g.node)} ONNX nodes"):
        ctx.node = node
        if node.domain not in ("", "ai.onnx", ML_DOMAIN):
            raise UnsupportedError(f"{ctx.where()}: domain {node.domain!r} is not supported"
                                   + (f" (model imports {sorted(unknown_domains)})" if unknown_domains else ""))
        ins = [ctx.sym(name) if name else None for name in node.input]
        if fold.can_fold(node, [s is None or isinstance(s, Const) for s in ins]):
            try:
                results = fold.evaluate(node, [s.array if s else None for s in ins], list(model.opset_import))
            except Exception as exc:  # the reference evaluator raises anything; the model is at fault
                raise ModelError(f"{ctx.where()}: constant folding failed: {str(exc).splitlines()[0][:200]}") from None
            for name, arr in zip(node.output, results, strict=False):
                if name:
                    ctx.bind(name, Const(arr))
            continue
        key = f"{ML_DOMAIN}:{node.op_type}" if node.domain == ML_DOMAIN else node.op_type
        lower = RULES.get(key)
        if lower is None:
            raise UnsupportedError(
                f"{ctx.where()}: op {key} is not supported by opmlc "
                f"(supported: {', '.join(sorted(RULES))})"
            )
        try:
            lower(ctx, node)
        except IRTypeError as exc:
            raise UnsupportedError(f"{ctx.where()}: {exc}") from None
    ctx.node = None

    outputs = []
    for out in g.output:
        s = ctx.sym(out.name)
        if isinstance(s, Const):
            ref = ctx.value(out.name)
        else:
            ref = s.id
        if ref in outputs or not builder.is_node_output(ref):
            # every output gets a value of its own, computed by a node (a copy if need be)
            ref = builder.add_node("reshape", [ref], {"shape": list(builder.type_of(ref).shape)}, out.name)
        outputs.append(ref)
        builder.mark_output(ref)
    try:
        graph = builder.build()
    except IRTypeError as exc:
        raise ModelError(f"{path}: lowering produced an invalid graph: {exc}") from None
    return Frontend(
        graph=graph,
        model_sha256=hashlib.sha256(path.read_bytes()).hexdigest(),
        opset=opset,
        input_names=runtime_inputs,
        output_names=[o.name for o in g.output],
    )

