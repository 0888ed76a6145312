"""The frontend driver: an ONNX model in, a verified fixed-point IR graph out.

read → check → static shapes → for each node in order: fold it if all its inputs are
constants, else apply its op's lowering rule → mark outputs → build (canonical numbering)
and verify. Float inputs are quantized at the edge with the policy's bits, recorded in the
graph's input types, except a float32 input that only tree ensembles read: it is passed as
float32 bits (IR type f32), so that splits compare exactly (rules/ml.py exact_tree_inputs).

By default (no policy, or one with `analyse`) the bits come from the range analysis
(frontend/ranges.py): the model is lowered once with the policy's bits, every tensor's range is
bounded on that graph, and the model is lowered again with the bits those bounds allow, until
the choice settles (ranges are real values: they barely depend on the bits).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import onnx

from opmlc import progress
from opmlc.errors import ModelError, UnsupportedError
from opmlc.frontend import fold
from opmlc.frontend.context import (
    Const,
    LoweringContext,
    QuantPolicy,
    Ref,
    WeightMemo,
    WeightsReport,
)
from opmlc.frontend.fuse import fuse_batchnorm
from opmlc.frontend.fuse_norm import fuse_rmsnorm
from opmlc.frontend.initializers import WeightSource, model_sha256
from opmlc.frontend.load import default_opset, fix_input_shapes, read_model, real_inputs
from opmlc.frontend.ranges import MAX_FRAC, Analysis, analyse, bits_by_name
from opmlc.frontend.rules import RULES
from opmlc.frontend.rules.ml import exact_tree_inputs
from opmlc.frontend.rules.quantized_weights import hoist_dequantize_of_gather, record_qdq_weight
from opmlc.genai.config import add_next_token, find_config
from opmlc.ir.graph import Graph, GraphBuilder
from opmlc.ir.ops import IRTypeError
from opmlc.ir.types import DType, TensorType

ML_DOMAIN = "ai.onnx.ml"  # scikit-learn models (skl2onnx): rules/ml.py, registered as "ai.onnx.ml:Op"
# onnxruntime's contrib ops that its quantizers emit (rules/quantized.py), registered as
# "com.microsoft:Op"; any other op of the domain is refused by name
MS_DOMAIN = "com.microsoft"
FLOAT_TYPES = {onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16}
_T = onnx.TensorProto
NARROW_INT_RANGES = {_T.INT2: (-2.0, 1.0), _T.UINT2: (0.0, 3.0), _T.INT4: (-8.0, 7.0), _T.UINT4: (0.0, 15.0),
                     _T.INT8: (-128.0, 127.0), _T.UINT8: (0.0, 255.0), _T.INT16: (-32768.0, 32767.0),
                     _T.UINT16: (0.0, 65535.0)}
INPUT_TYPES = {
    **{t: DType.FX32 for t in (*FLOAT_TYPES, _T.BFLOAT16)},
    **{t: DType.I32 for t in (_T.INT2, _T.UINT2, _T.INT4, _T.UINT4, _T.INT8, _T.INT16, _T.INT32, _T.UINT8,
                              _T.UINT16)},
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
    policy: QuantPolicy = field(default_factory=QuantPolicy)  # the bits actually used
    analysis: Analysis | None = None  # every fx32 tensor's analysed range (ranges.py)
    clipped_constants: int = 0  # finite constant elements that fell outside their bits' range
    # inputs whose open batch dimension became DEFAULT_BATCH (load.fix_input_shapes), to announce
    batch_defaulted: list[str] = field(default_factory=list)
    # what --weights quantized (policy.weights set), with the error it introduced
    weights: WeightsReport | None = None
    # integer inputs narrower than their IR type (uint8, int4…): their type's range, the
    # analysis's default for them (declared ranges take precedence)
    type_ranges: dict[str, tuple[float, float]] = field(default_factory=dict)

ANALYSIS_ROUNDS = 4  # lowerings at most; the second almost always settles the choice


def lower_model(
    path: str | Path,
    policy: QuantPolicy | None = None,
    input_shapes: dict[str, tuple[int, ...]] | None = None,
    constant_inputs: dict[str, np.ndarray] | None = None,
) -> Frontend:
    """Lower the model at `path`. `constant_inputs` binds graph inputs to compile-time constants
    (a static compiler's specialisation: shape, axes or pads given as inputs must be known).
    Without a policy the bits come from the range analysis (`QuantPolicy(analyse=True)`)."""
    policy = policy or QuantPolicy(analyse=True)
    # analysed builds give weights as many bits as fit (the accumulator check below bounds them)
    wf = policy.weight_frac if policy.weight_frac is not None or not policy.analyse else MAX_FRAC
    qw = {"weights": policy.weights, "block_size": policy.block_size}
    fixed = QuantPolicy(default=policy.default, overrides=dict(policy.overrides), weight_frac=wf, **qw)
    memo = WeightMemo()  # quantized weights shared by the rounds (context.py)
    fe = _lower(path, fixed, input_shapes, constant_inputs, memo)
    fe.model_sha256 = model_sha256(read_model(path), Path(path))
    unknown = set(policy.input_ranges) - set(fe.input_names)
    if unknown:
        raise ModelError(f"{path}: --input-range names {sorted(unknown)}, but the inputs are {fe.input_names}")
    fe.analysis = analyse(fe.graph, {**fe.type_ranges, **policy.input_ranges})
    if not policy.analyse:
        return fe
    for _ in range(ANALYSIS_ROUNDS - 1):
        chosen = {**bits_by_name(fe.analysis), **policy.overrides}  # calibrated bits take precedence
        if chosen == fixed.overrides:
            break
        fixed = QuantPolicy(default=policy.default, overrides=dict(sorted(chosen.items())), weight_frac=wf, **qw)
        sha = fe.model_sha256
        fe = None  # the previous round's graph (its quantized weights) goes before the next is built
        fe = _lower(path, fixed, input_shapes, constant_inputs, memo)
        fe.model_sha256 = sha
        fe.analysis = analyse(fe.graph, {**fe.type_ranges, **policy.input_ranges})
    return fe


def _lower(
    path: str | Path,
    policy: QuantPolicy,
    input_shapes: dict[str, tuple[int, ...]] | None,
    constant_inputs: dict[str, np.ndarray] | None,
    memo: WeightMemo | None = None,
) -> Frontend:
    """One lowering, counting the constants it clips (only the final lowering's count is kept)."""
    from opmlc.ir.fixedpoint import count_saturation

    memo = memo if memo is not None else WeightMemo()
    with count_saturation() as clipped:
        fe = _lower_once(path, policy, input_shapes, constant_inputs, memo)
    memo.end_round()
    fe.clipped_constants = clipped.n
    return fe


def _reads(node: onnx.NodeProto) -> set[str]:
    """The names a node reads: its inputs and, over-approximated, any name its subgraphs read."""
    names = {i for i in node.input if i}
    for a in node.attribute:
        for sub in ([a.g] if a.type == onnx.AttributeProto.GRAPH else
                    list(a.graphs) if a.type == onnx.AttributeProto.GRAPHS else []):
            for n in sub.node:
                names |= _reads(n)
    return names


def _last_uses(g: onnx.GraphProto) -> dict[str, int]:
    """For every name a node reads, the index of the last node that reads it."""
    last: dict[str, int] = {}
    for i, node in enumerate(g.node):
        for name in _reads(node):
            last[name] = i
    return last


def _lower_once(
    path: str | Path,
    policy: QuantPolicy,
    input_shapes: dict[str, tuple[int, ...]] | None,
    constant_inputs: dict[str, np.ndarray] | None,
    memo: WeightMemo,
) -> Frontend:
    path = Path(path)
    constant_inputs = dict(constant_inputs or {})
    model = read_model(path)
    batch_defaulted: list[str] = []
    model = fix_input_shapes(model, path, input_shapes, batch_defaulted)
    genai = find_config(path)
    if genai is not None:  # an onnxruntime-genai decoder: the step also outputs its greedy token
        add_next_token(model, genai)
    source = WeightSource(model, path)
    model = hoist_dequantize_of_gather(fuse_rmsnorm(fuse_batchnorm(model, source), source))
    source = WeightSource(model, path)  # with the fused initializers
    opset = default_opset(model)
    g = model.graph
    unknown_domains = {imp.domain for imp in model.opset_import} - {"", "ai.onnx", ML_DOMAIN, MS_DOMAIN}
    builder = GraphBuilder(g.name or path.stem)
    ctx = LoweringContext(builder, policy, opset, str(path), memo)
    for vi in (*g.input, *g.value_info, *g.output):
        ctx.elem_types[vi.name] = vi.type.tensor_type.elem_type

    for init in g.initializer:  # read when a rule asks (weights.py), never all at once
        ctx.bind(init.name, Const.lazy(partial(source.array, init.name)))
        ctx.elem_types.setdefault(init.name, init.data_type)
    runtime_inputs = []
    type_ranges: dict[str, tuple[float, float]] = {}
    exact = exact_tree_inputs(g)
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
                "(supported: float, double, float16, bfloat16, int2..int64, uint2..uint32, bool)"
            )
        shape = tuple(d.dim_value for d in tt.shape.dim)
        if inp.name in exact:
            dtype = DType.F32
        if tt.elem_type in NARROW_INT_RANGES:
            type_ranges[inp.name] = NARROW_INT_RANGES[tt.elem_type]
        t = TensorType(dtype, shape, policy.activation(inp.name) if dtype is DType.FX32 else 0)
        ctx.bind(inp.name, Ref(builder.add_input(inp.name, t)))
        runtime_inputs.append(inp.name)

    last_use = _last_uses(g)
    live = set(last_use) | {o.name for o in g.output}
    for i, node in enumerate(progress.track(g.node, f"lowering {len(g.node)} ONNX nodes")):
        if i:
            live.difference_update(n for n in _reads(g.node[i - 1]) if last_use[n] == i - 1)
            live.update(o.name for o in g.output)
            ctx.release(live)
        ctx.node = node
        if node.domain not in ("", "ai.onnx", ML_DOMAIN, MS_DOMAIN):
            raise UnsupportedError(f"{ctx.where()}: domain {node.domain!r} is not supported"
                                   + (f" (model imports {sorted(unknown_domains)})" if unknown_domains else ""))
        ins = [ctx.sym(name) if name else None for name in node.input]
        if node.op_type == "DequantizeLinear" and node.domain in ("", "ai.onnx") and all(
                s is None or isinstance(s, Const) for s in ins):  # QDQ's weight side: keep its integers
            record_qdq_weight(ctx, node, [s.array if s else None for s in ins])
        if fold.can_fold(node, [s is None or isinstance(s, Const) for s in ins]):
            try:
                results = fold.evaluate(node, [s.array if s else None for s in ins], list(model.opset_import))
            except Exception as exc:  # the reference evaluator raises anything; the model is at fault
                raise ModelError(f"{ctx.where()}: constant folding failed: {str(exc).splitlines()[0][:200]}") from None
            for name, arr in zip(node.output, results, strict=False):
                if name:
                    ctx.bind(name, Const(arr))
            continue
        key = f"{node.domain}:{node.op_type}" if node.domain in (ML_DOMAIN, MS_DOMAIN) else node.op_type
        lower = RULES.get(key)
        if lower is None and node.domain == MS_DOMAIN:
            ms_ops = sorted(k.partition(":")[2] for k in RULES if k.startswith(MS_DOMAIN + ":"))
            raise UnsupportedError(f"{ctx.where()}: onnxruntime contrib op {key} is not supported by opmlc "
                                   f"(supported {MS_DOMAIN} ops: {', '.join(ms_ops)})")
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
        model_sha256="",  # lower_model hashes the model's files once
        opset=opset,
        input_names=runtime_inputs,
        output_names=[o.name for o in g.output],
        policy=policy,
        batch_defaulted=batch_defaulted,
        weights=ctx.weights_report if policy.weights else None,
        type_ranges=type_ranges,
    )

