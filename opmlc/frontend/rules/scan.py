"""Rule for ONNX Scan (opset ≥ 9): the body is unrolled over the static sequence length.

skl2onnx's k-nearest-neighbours compute pairwise distances with a Scan over the training set
(state: the queries, scan input: one training row per iteration, scan output: the distances to
it). Shapes are static, so the loop has a known trip count T and unrolls into T copies of the
body, each lowered by the ordinary rules: a body node whose inputs are all constants (a training
row sliced from an initializer) is folded, the rest become IR nodes. No IR op is added, and the
unrolled graph means exactly what the loop means.

Per iteration t (t counts backwards for a reverse scan input): the body's state inputs are bound
to the previous iteration's state outputs (the Scan's initial states at t = 0), its scan inputs
to slice t of each scan input along its axis (a Gather of one index), and every name the body
defines is renamed `<Scan output>/t<t>/<name>`; names the body does not define are the outer
graph's. The final states are the last iteration's; each scan output stacks the iterations
along its axis (in reverse order for a reverse direction).

Bounded by MAX_UNROLLED (body nodes × T), with a clear refusal beyond: every unrolled node is an
IR node with its own kernel call.
"""

from __future__ import annotations

import numpy as np
import onnx

from opmlc.errors import ModelError
from opmlc.frontend import fold
from opmlc.frontend.context import Const, LoweringContext
from opmlc.frontend.rules import RULES, rule
from opmlc.frontend.rules.shape import reshape_to
from opmlc.ir.types import DType

MAX_UNROLLED = 20000  # body nodes × sequence length
ML = "ai.onnx.ml"


def _subgraph(node: onnx.NodeProto) -> bool:
    return any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute)


@rule("Scan")
def scan(ctx: LoweringContext, node: onnx.NodeProto) -> None:
    if ctx.opset < 9:
        raise ctx.unsupported("Scan of opset 8 (batched, with sequence_lens); re-export at opset ≥ 9")
    a = ctx.attrs()
    for name in a:
        if name not in ("body", "num_scan_inputs", "scan_input_axes", "scan_input_directions",
                        "scan_output_axes", "scan_output_directions"):
            raise ctx.unsupported(f"attribute {name!r} of Scan is not supported")
    body: onnx.GraphProto = a["body"]
    m = int(a["num_scan_inputs"])
    n_state = len(node.input) - m
    k_out = len(body.output) - n_state
    if m < 1 or n_state < 0 or k_out < 0 or len(body.input) != n_state + m \
            or len(node.output) > n_state + k_out:
        raise ModelError(f"{ctx.where()}: Scan's body has {len(body.input)} inputs and {len(body.output)} "
                         f"outputs for {n_state} states and {m} scan inputs")
    in_axes = list(a.get("scan_input_axes", [0] * m))
    in_dirs = list(a.get("scan_input_directions", [0] * m))
    out_axes = list(a.get("scan_output_axes", [0] * k_out))
    out_dirs = list(a.get("scan_output_directions", [0] * k_out))
    if len(in_axes) != m or len(in_dirs) != m or len(out_axes) != k_out or len(out_dirs) != k_out:
        raise ModelError(f"{ctx.where()}: Scan's axes/directions attributes have the wrong lengths")
    for inner in body.node:
        if _subgraph(inner):
            raise ctx.unsupported(f"a {inner.op_type} with a subgraph inside a Scan body")

    scan_names = list(node.input[n_state:])
    lengths, axes = set(), []
    for name, ax in zip(scan_names, in_axes, strict=True):
        shape = ctx.shape_of(name)
        ax = ax + len(shape) if ax < 0 else ax
        if not 0 <= ax < len(shape):
            raise ModelError(f"{ctx.where()}: scan input axis {ax} for a rank-{len(shape)} input")
        axes.append(ax)
        lengths.add(shape[ax])
    if len(lengths) != 1:
        raise ModelError(f"{ctx.where()}: Scan's inputs have different sequence lengths {sorted(lengths)}")
    steps = lengths.pop()
    if steps < 1:
        raise ctx.unsupported("Scan over an empty sequence")
    if steps * max(1, len(body.node)) > MAX_UNROLLED:
        raise ctx.unsupported(f"Scan of {steps} steps × {len(body.node)} body nodes (opmlc unrolls a Scan; "
                              f"at most {MAX_UNROLLED} unrolled nodes)")

    scan_node = node
    prefix = node.output[0] if node.output and node.output[0] else (node.name or "scan")
    local = {i.name for i in body.input} | {t.name for t in body.initializer} \
        | {o for b in body.node for o in b.output if o}
    opsets = [onnx.helper.make_opsetid("", ctx.opset), onnx.helper.make_opsetid(ML, 3)]
    states = [ctx.sym(name) for name in node.input[:n_state]]
    collected: list[list] = [[] for _ in range(k_out)]
    for t in range(steps):
        scope = f"{prefix}/t{t}"

        def local_name(name: str, scope: str = scope) -> str:
            return f"{scope}/{name}" if name in local else name

        for inp, s in zip(body.input[:n_state], states, strict=True):
            ctx.bind(local_name(inp.name), s)
        for j, (src, ax, rev) in enumerate(zip(scan_names, axes, in_dirs, strict=True)):
            _slice(ctx, src, ax, steps - 1 - t if rev else t, local_name(body.input[n_state + j].name))
        for init in body.initializer:
            ctx.bind(local_name(init.name), Const(onnx.numpy_helper.to_array(init)))
        for inner in body.node:
            copy = onnx.NodeProto()
            copy.CopyFrom(inner)
            copy.name = f"{scope}/{inner.name or inner.op_type}"
            del copy.input[:]
            copy.input.extend(local_name(x) if x else "" for x in inner.input)
            del copy.output[:]
            copy.output.extend(local_name(x) if x else "" for x in inner.output)
            _lower_one(ctx, copy, opsets)
        ctx.node = scan_node
        outs = [ctx.sym(local_name(o.name)) for o in body.output]
        states = outs[:n_state]
        for j in range(k_out):
            collected[j].append(local_name(body.output[n_state + j].name))

    for name, s in zip(node.output[:n_state], states, strict=False):
        if name:
            ctx.bind(name, s)
    for j, name in enumerate(node.output[n_state:]):
        if name:
            parts = collected[j][::-1] if out_dirs[j] else collected[j]
            _stack(ctx, parts, out_axes[j], name)


def _lower_one(ctx: LoweringContext, node: onnx.NodeProto, opsets: list) -> None:
    """Fold the node if its inputs are constants, else apply its rule (frontend/lower.py's loop)."""
    ctx.node = node
    ins = [ctx.sym(name) if name else None for name in node.input]
    if fold.can_fold(node, [s is None or isinstance(s, Const) for s in ins]):
        try:
            results = fold.evaluate(node, [s.array if s else None for s in ins], opsets)
        except Exception as exc:  # the reference evaluator raises anything; the model is at fault
            raise ModelError(f"{ctx.where()}: constant folding failed: {str(exc).splitlines()[0][:200]}") from None
        for name, arr in zip(node.output, results, strict=False):
            if name:
                ctx.bind(name, Const(arr))
        return
    key = f"{ML}:{node.op_type}" if node.domain == ML else node.op_type
    if node.domain not in ("", "ai.onnx", ML) or key not in RULES:
        raise ctx.unsupported(f"op {key} in a Scan body is not supported by opmlc")
    RULES[key](ctx, node)


def _slice(ctx: LoweringContext, src: str, axis: int, index: int, out: str) -> None:
    """Slice `index` of `src` along `axis`, the axis dropped."""
    arr = ctx.const(src)
    if arr is not None:
        ctx.bind(out, Const(np.take(arr, index, axis=axis)))
        return
    idx = f"{out}/index"
    ctx.bind(idx, Const(np.asarray(index, dtype=np.int64)))
    saved = ctx.node
    ctx.node = onnx.helper.make_node("Gather", [src, idx], [out], name=saved.name, axis=axis)
    RULES["Gather"](ctx, ctx.node)  # rules read their attributes from ctx.node
    ctx.node = saved


def _joined(ctx: LoweringContext, parts: list[str], axis: int, out: str) -> None:
    """Concatenate `parts` (one dtype, or fx32 when any is) along `axis` as `out`."""
    dts = {ctx.dtype(p) for p in parts}
    refs = [ctx.fx(p) if DType.FX32 in dts else ctx.value(p) for p in parts]
    attrs = {"axis": axis}
    if DType.FX32 in dts:
        fracs = {ctx.frac_of(r) for r in refs}
        attrs["frac"] = fracs.pop() if len(fracs) == 1 else ctx.policy.activation(out)
    ctx.bind(out, refs[0] if len(refs) == 1 else ctx.emit("concat", refs, attrs, out))


def _stack(ctx: LoweringContext, parts: list[str], axis: int, out: str) -> None:
    """Stack the iterations' values along a new `axis`."""
    arrays = [ctx.const(p) for p in parts]
    if all(arr is not None for arr in arrays):
        ctx.bind(out, Const(np.stack(arrays, axis=axis)))
        return
    shape = list(ctx.shape_of(parts[0]))
    axis = axis + len(shape) + 1 if axis < 0 else axis
    if axis == 0 and shape and all(arr is None for arr in arrays):
        # along axis 0, stacking is concatenation then one reshape: no reshape node per step
        _joined(ctx, parts, 0, f"{out}/joined")
        reshape_to(ctx, f"{out}/joined", (len(parts), *shape), out)
        return
    one = tuple(shape[:axis] + [1] + shape[axis:])
    for k, (p, arr) in enumerate(zip(parts, arrays, strict=True)):
        if arr is not None:
            ctx.bind(f"{out}/part{k}", Const(arr.reshape(one)))
        else:
            reshape_to(ctx, p, one, f"{out}/part{k}")
    _joined(ctx, [f"{out}/part{k}" for k in range(len(parts))], axis, out)
