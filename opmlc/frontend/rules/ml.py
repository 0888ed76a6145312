"""Rules for the ONNX-ML domain (`ai.onnx.ml`), what scikit-learn models become under skl2onnx:
TreeEnsembleClassifier, TreeEnsembleRegressor, LinearClassifier, LinearRegressor, Scaler,
Normalizer and ZipMap (ArgMax and Cast are default-domain ops, lowered in reduce.py/arith.py).

Trees lower onto the IR's `tree_ensemble` (the forest as initializer tables). A float32 graph
input that only tree ensembles read reaches them as float32 bits (`f32`) and the thresholds are
float32 bits too, so every split is decided exactly as onnxruntime decides it; a tree behind
another op (a Scaler) reads fixed point, its thresholds quantized with the features' bits.
Everything else lowers onto existing ops (matmul, binary, unary, softmax, reduce, where,
concat). Labels are int64 tensors: the first maximal score wins, as in onnxruntime. The label and post-transform rules follow onnxruntime (1.32) where the ONNX-ML
spec leaves them open; every case opmlc does not reproduce exactly is refused by name.

ZipMap (a sequence of maps) is dropped: its output is the probability tensor itself.
Rules are registered as "ai.onnx.ml:<OpType>" (frontend/lower.py looks ML nodes up so).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import onnx

from opmlc.errors import ModelError
from opmlc.frontend.context import LoweringContext
from opmlc.frontend.rules import rule
from opmlc.frontend.rules.arith import binary, const, unary
from opmlc.frontend.rules.shape import reshape_to
from opmlc.ir import fixedpoint as fp
from opmlc.ir.ops.tree_ensemble import MODES
from opmlc.ir.types import MAX_FRAC, DType, TensorType

ML = "ai.onnx.ml"
NODE_ATTRS = {"nodes_falsenodeids", "nodes_featureids", "nodes_hitrates", "nodes_hitrates_as_tensor",
              "nodes_missing_value_tracks_true", "nodes_modes", "nodes_nodeids", "nodes_treeids",
              "nodes_truenodeids", "nodes_values", "nodes_values_as_tensor", "post_transform",
              "base_values", "base_values_as_tensor"}
TRANSFORMS = ("NONE", "LOGISTIC", "SOFTMAX")
NORMALIZED_FRAC = 24  # bits of an L1/L2-normalized row (|v| ≤ 1), as calibration would give it


def ml_rule(*op_types: str) -> Callable:
    return rule(*(f"{ML}:{op}" for op in op_types))


def _str(v) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def attributes(ctx: LoweringContext, known: set[str]) -> dict:
    """The node's attributes, refusing any this rule does not know by name."""
    a = ctx.attrs()
    for name in a:
        if name not in known:
            raise ctx.unsupported(f"attribute {name!r} of {ctx.node.op_type} is not supported")
    for name in [n for n in a if n.endswith("_as_tensor")]:
        plain = name[: -len("_as_tensor")]
        if plain in a:
            raise ModelError(f"{ctx.where()}: both {plain} and {name} are given")
        a[plain] = [float(v) for v in onnx.numpy_helper.to_array(a.pop(name)).ravel()]
    return a


def features(ctx: LoweringContext, name: str) -> tuple[int, int]:
    """The feature matrix as fx32 [N, F]; returns (its IR value, F)."""
    shape = ctx.shape_of(name)
    if len(shape) != 2:
        raise ctx.unsupported(f"{ctx.node.op_type} on a rank-{len(shape)} input (only [N, F])")
    return ctx.fx(name), shape[1]


TREE_OPS = ("TreeEnsembleClassifier", "TreeEnsembleRegressor", "TreeEnsemble")


def exact_tree_inputs(graph: onnx.GraphProto) -> set[str]:
    """Names of the float32 graph inputs that only tree ensembles read, as their features (and
    that are not graph outputs): the frontend gives them the IR type f32 (float32 bits, no
    quantization), so that their splits compare exactly as float32 does."""
    uses: dict[str, list[tuple[onnx.NodeProto, int]]] = {}
    for node in graph.node:
        for k, name in enumerate(node.input):
            uses.setdefault(name, []).append((node, k))
    inits = {t.name for t in graph.initializer}
    outs = {o.name for o in graph.output}
    exact = set()
    for inp in graph.input:
        if inp.name in inits or inp.name in outs or inp.type.tensor_type.elem_type != onnx.TensorProto.FLOAT:
            continue
        readers = uses.get(inp.name, [])
        if readers and all(n.domain == ML and n.op_type in TREE_OPS and k == 0 for n, k in readers):
            exact.add(inp.name)
    return exact


def tree_features(ctx: LoweringContext, name: str) -> tuple[int, int]:
    """A tree ensemble's features: f32 [N, F] as they are, anything else as fx32 [N, F]."""
    shape = ctx.shape_of(name)
    if len(shape) != 2:
        raise ctx.unsupported(f"{ctx.node.op_type} on a rank-{len(shape)} input (only [N, F])")
    if ctx.dtype(name) is DType.F32:
        return ctx.value(name), shape[1]
    return features(ctx, name)


def threshold(ctx: LoweringContext, value: float, x_type: TensorType) -> int:
    """A split's threshold in the features' encoding: the float32 bits for f32 features (as
    onnxruntime compares, in float32), else fixed point with the features' bits."""
    t = np.float32(value)
    if np.isnan(t):
        raise ModelError(f"{ctx.where()}: a split threshold is NaN")
    if x_type.dtype is DType.F32:
        return int(fp.f32_bits(t))
    return int(fp.quantize(t, x_type.frac))


def fine_const(ctx: LoweringContext, name: str, arr: np.ndarray) -> int:
    """A float constant with as many fractional bits as its largest magnitude allows (≤ 30):
    scales such as 1/std are small, and the policy's default bits would round them coarsely."""
    arr = np.asarray(arr, dtype=np.float64)
    peak = float(np.max(np.abs(arr))) if arr.size else 0.0
    frac = MAX_FRAC if peak == 0.0 else max(0, min(MAX_FRAC, 30 - math.ceil(math.log2(peak + 1e-300))))
    return ctx.builder.add_initializer(name, fp.quantize(arr, frac), TensorType(DType.FX32, arr.shape, frac))


def bind_labels(ctx: LoweringContext, best: int, labels: list[int], out: str) -> None:
    """Map class indices (i64 [N, 1]) to their labels, bound to `out` as i64 [N]."""
    n = ctx.builder.type_of(best).shape[0]
    if labels == list(range(len(labels))):
        ctx.bind(f"{out}/index", best)
        reshape_to(ctx, f"{out}/index", (n,), out)
        return
    hit = ctx.emit("binary", [best, ctx.const_ref(f"{out}/classes", np.arange(len(labels)), DType.I64)],
                   {"kind": "eq"}, f"{out}/onehot")
    hit = ctx.emit("cast", [hit], {"to": "i64"}, f"{out}/onehot64")
    picked = ctx.emit("binary", [hit, ctx.const_ref(f"{out}/labels", np.asarray(labels), DType.I64)],
                      {"kind": "mul"}, f"{out}/picked")
    ctx.bind(out, ctx.emit("reduce", [picked], {"kind": "sum", "axes": [1], "keepdims": 0}, out))


def argmax_labels(ctx: LoweringContext, scores: int, labels: list[int], out: str) -> None:
    best = ctx.emit("reduce", [scores], {"kind": "argmax", "axes": [1], "keepdims": 1, "select_last": 0},
                    f"{out}/argmax")
    bind_labels(ctx, best, labels, out)


def post_transform(ctx: LoweringContext, scores_name: str, transform: str, out: str) -> None:
    """NONE, LOGISTIC (elementwise sigmoid) or SOFTMAX (over the classes) of [N, C] scores."""
    if transform == "NONE":
        ctx.bind(out, ctx.sym(scores_name))
    elif transform == "LOGISTIC":
        unary(ctx, "sigmoid", scores_name, out)
    elif transform == "SOFTMAX":
        ctx.bind(out, ctx.emit("softmax", [ctx.value(scores_name)], {"frac": ctx.policy.activation(out)}, out))
    else:
        raise ctx.unsupported(f"post_transform {transform} (supported: {', '.join(TRANSFORMS)})")


def outputs(node: onnx.NodeProto) -> list[str]:
    return [*node.output] + [""] * (2 - len(node.output))


# -- linear models -----------------------------------------------------------------------


@ml_rule("LinearRegressor")
def linear_regressor(ctx: LoweringContext, node: onnx.NodeProto) -> None:
    a = attributes(ctx, {"coefficients", "intercepts", "targets", "post_transform"})
    transform = _str(a.get("post_transform", "NONE"))
    if transform != "NONE":
        raise ctx.unsupported(f"post_transform {transform} of LinearRegressor (only NONE)")
    x, f = features(ctx, node.input[0])
    targets = int(a.get("targets", 1))
    out = node.output[0]
    ctx.bind(out, linear_scores(ctx, x, f, targets, a, out))


def linear_scores(ctx: LoweringContext, x: int, f: int, rows: int, a: dict, out: str) -> int:
    coef = np.asarray(a.get("coefficients", []), dtype=np.float64)
    if coef.size != rows * f:
        raise ModelError(f"{ctx.where()}: {coef.size} coefficients for {rows} outputs of {f} features")
    bias = np.asarray(a.get("intercepts") or [0.0] * rows, dtype=np.float64)
    if bias.shape != (rows,):
        raise ModelError(f"{ctx.where()}: {bias.size} intercepts for {rows} outputs")
    w = ctx.const_ref(f"{out}/coefficients", coef.reshape(rows, f))
    b = ctx.const_ref(f"{out}/intercepts", bias)
    return ctx.emit("matmul", [x, w, b], {"frac": ctx.policy.activation(out), "transpose_b": True}, out)


@ml_rule("LinearClassifier")
def linear_classifier(ctx: LoweringContext, node: onnx.NodeProto) -> None:
    a = attributes(ctx, {"coefficients", "intercepts", "classlabels_ints", "classlabels_strings",
                         "multi_class", "post_transform"})
    if "classlabels_strings" in a:
        raise ctx.unsupported("string class labels (classlabels_strings); only classlabels_ints")
    labels = [int(v) for v in a.get("classlabels_ints", [])]
    x, f = features(ctx, node.input[0])
    rows = len(a.get("coefficients", [])) // f
    if rows != len(labels) or rows < 2:
        raise ctx.unsupported(f"LinearClassifier with {rows} score column(s) for {len(labels)} classes "
                              "(only one column per class, two classes or more)")
    label_out, prob_out = outputs(node)
    scores_name = f"{node.output[0]}/scores"
    ctx.bind(scores_name, linear_scores(ctx, x, f, rows, a, scores_name))
    if label_out:
        argmax_labels(ctx, ctx.value(scores_name), labels, label_out)
    if prob_out:
        post_transform(ctx, scores_name, _str(a.get("post_transform", "NONE")), prob_out)


@ml_rule("Scaler")
def scaler(ctx: LoweringContext, node: onnx.NodeProto) -> None:
    a = attributes(ctx, {"offset", "scale"})
    x, out = node.input[0], node.output[0]
    f = ctx.shape_of(x)[-1]
    offset = np.asarray(a.get("offset", [0.0]), dtype=np.float64)
    scale = np.asarray(a.get("scale", [1.0]), dtype=np.float64)
    for what, v in (("offset", offset), ("scale", scale)):
        if v.size not in (1, f):
            raise ModelError(f"{ctx.where()}: Scaler {what} has {v.size} values for {f} features")
    centred = f"{out}/centred"
    ctx.bind(f"{out}/offset", ctx.const_ref(f"{out}/offset", offset))
    binary(ctx, "sub", x, f"{out}/offset", centred)
    ctx.bind(f"{out}/scale", fine_const(ctx, f"{out}/scale", scale))
    binary(ctx, "mul", centred, f"{out}/scale", out)


@ml_rule("Normalizer")
def normalizer(ctx: LoweringContext, node: onnx.NodeProto) -> None:
    """Each row divided by its MAX (the signed maximum), L1 or L2 norm; a row whose norm is 0
    is left as it is (onnxruntime's rule)."""
    a = attributes(ctx, {"norm"})
    norm = _str(a.get("norm", "MAX"))
    x, out = node.input[0], node.output[0]
    rank = len(ctx.shape_of(x))
    if rank not in (1, 2):
        raise ctx.unsupported(f"Normalizer on a rank-{rank} input (only [C] or [N, C])")
    src = x
    if norm == "L1":
        src = f"{out}/abs"
        unary(ctx, "abs", x, src)
    elif norm == "L2":
        src = f"{out}/square"
        binary(ctx, "mul", x, x, src)
    elif norm != "MAX":
        raise ctx.unsupported(f"Normalizer norm {norm!r} (supported: MAX, L1, L2)")
    kind = "max" if norm == "MAX" else "sum"
    den = f"{out}/{kind}"
    ref = ctx.fx(src)
    ctx.bind(den, ctx.emit("reduce", [ref], {"kind": kind, "axes": [rank - 1], "keepdims": 1,
                                             "frac": ctx.policy.activation(den)}, den))
    if norm == "L2":
        unary(ctx, "sqrt", den, f"{out}/norm")
        den = f"{out}/norm"
    # an L1 or L2 normalized row lies in [-1, 1]: it keeps more bits than the default
    fo = ctx.policy.overrides.get(out, NORMALIZED_FRAC if norm != "MAX" else ctx.policy.activation(out))
    num, div = ctx.fx(x), ctx.fx(den)
    quotient = ctx.emit("binary", [num, div], {"kind": "div", "frac": min(fo, ctx.frac_of(num) - ctx.frac_of(div) + 31)},
                        f"{out}/quotient")
    binary(ctx, "eq", den, const(ctx, f"{out}/zero", 0.0), f"{out}/iszero")
    ctx.bind(out, ctx.emit("where", [ctx.value(f"{out}/iszero"), num, quotient], {"frac": fo}, out))


@ml_rule("ZipMap")
def zipmap(ctx: LoweringContext, node: onnx.NodeProto) -> None:
    """Dropped: the classifier's probability tensor stands for the sequence of maps."""
    attributes(ctx, {"classlabels_int64s", "classlabels_strings"})
    ctx.bind(node.output[0], ctx.sym(node.input[0]))


# -- tree ensembles ----------------------------------------------------------------------


def forest_tables(ctx: LoweringContext, a: dict, prefix: str, n_features: int, x_type: TensorType):
    """The nodes table (roots first), leaf targets and float leaf weights, and the tree count and
    depth, from the ONNX-ML node and `prefix`_* (class or target) weight attributes."""
    where = ctx.where()
    cols = ["nodes_treeids", "nodes_nodeids", "nodes_modes", "nodes_featureids", "nodes_values",
            "nodes_truenodeids", "nodes_falsenodeids"]
    tree_ids, node_ids, modes, feats, values, trues, falses = (list(a.get(c, [])) for c in cols)
    n = len(node_ids)
    if n == 0 or any(len(v) != n for v in (tree_ids, modes, feats, trues, falses)) \
            or len(values) not in (0, n):
        raise ModelError(f"{where}: the nodes_* attributes have different lengths")
    values = values or [0.0] * n
    at: dict[tuple[int, int], int] = {}
    for i, key in enumerate(zip(tree_ids, node_ids, strict=True)):
        if key in at:
            raise ModelError(f"{where}: node {key[1]} of tree {key[0]} is defined twice")
        at[key] = i
    mode_codes = []
    for m in modes:
        m = _str(m)
        if m not in MODES:
            raise ctx.unsupported(f"node mode {m} (supported: {', '.join(MODES)})")
        mode_codes.append(MODES[m])

    def kids(i: int) -> list[int]:
        if mode_codes[i] == 0:
            return []
        out = []
        for child in (trues[i], falses[i]):
            if (tree_ids[i], child) not in at:
                raise ModelError(f"{where}: tree {tree_ids[i]} has no node {child}")
            out.append(at[(tree_ids[i], child)])
        return out

    trees = sorted(set(tree_ids))
    children = {c for i in range(n) for c in kids(i)}
    roots = []
    for t in trees:
        r = [i for i in range(n) if tree_ids[i] == t and i not in children]
        if len(r) != 1:
            raise ModelError(f"{where}: tree {t} has {len(r)} roots")
        roots.append(r[0])
    order = list(roots)  # rows: roots first, then every reachable node once
    depth = 0
    row_of = {i: k for k, i in enumerate(order)}
    for root in roots:
        stack = [(root, 0)]
        while stack:
            i, level = stack.pop()
            depth = max(depth, level)
            if level > n:
                raise ModelError(f"{where}: tree {tree_ids[root]} has a cycle")
            for c in kids(i):
                if c not in row_of:
                    row_of[c] = len(order)
                    order.append(c)
                stack.append((c, level + 1))

    w_tree, w_node, w_id, w_val = (list(a.get(f"{prefix}_{c}", [])) for c in ("treeids", "nodeids", "ids", "weights"))
    if not len(w_tree) == len(w_node) == len(w_id) == len(w_val):
        raise ModelError(f"{where}: the {prefix}_* attributes have different lengths")
    by_leaf: dict[int, list[int]] = {}
    for k, key in enumerate(zip(w_tree, w_node, strict=True)):
        i = at.get(key)
        if i is None or mode_codes[i] != 0 or i not in row_of:
            raise ctx.unsupported(f"a {prefix} weight on node {key[1]} of tree {key[0]}, which is not a reachable leaf")
        by_leaf.setdefault(i, []).append(k)
    table, targets, weights = [], [], []
    for i in order:
        if mode_codes[i] == 0:
            first = len(targets)
            for k in by_leaf.get(i, []):
                targets.append(int(w_id[k]))
                weights.append(float(w_val[k]))
            table.append([0, first, len(targets), 0, 0])
        else:
            if not 0 <= feats[i] < n_features:
                raise ModelError(f"{where}: a node tests feature {feats[i]} of {n_features}")
            t, f = kids(i)
            table.append([mode_codes[i], int(feats[i]), threshold(ctx, values[i], x_type), row_of[t], row_of[f]])
    return (np.asarray(table, np.int32).reshape(-1, 5), np.asarray(targets, np.int32),
            np.asarray(weights, np.float64), len(trees), depth)


def emit_forest(ctx: LoweringContext, node: onnx.NodeProto, a: dict, prefix: str, n_targets: int,
                aggregate: str, base: list[float], out: str) -> int:
    """A tree_ensemble node; `prefix` names the weight attributes (class_*, target_*), or is
    None for the opset-5 TreeEnsemble's layout (tree_roots, leaf_*)."""
    x, f = tree_features(ctx, node.input[0])
    tables = forest_tables if prefix is not None else forest_tables_v5
    table, targets, weights, n_trees, depth = tables(ctx, a, prefix, f, ctx.builder.type_of(x))
    if len(targets) and not (0 <= targets.min() and targets.max() < n_targets):
        raise ModelError(f"{ctx.where()}: a leaf weight's {prefix} id is outside 0..{n_targets - 1}")
    both = np.concatenate([weights, np.asarray(base, np.float64)])
    fw = ctx.policy.constant(f"{out}/weights", both)
    ins = [x,
           ctx.builder.add_initializer(f"{out}/nodes", table, TensorType(DType.I32, table.shape)),
           ctx.builder.add_initializer(f"{out}/targets", targets, TensorType(DType.I32, targets.shape)),
           ctx.builder.add_initializer(f"{out}/weights", fp.quantize(weights, fw),
                                       TensorType(DType.FX32, weights.shape, fw))]
    if base:
        ins.append(ctx.builder.add_initializer(f"{out}/base", fp.quantize(np.asarray(base), fw),
                                               TensorType(DType.FX32, (n_targets,), fw)))
    attrs = {"n_trees": n_trees, "depth": depth, "aggregate": aggregate, "n_targets": n_targets,
             "frac": ctx.policy.activation(out)}
    ref = ctx.emit("tree_ensemble", ins, attrs, out)
    ctx.bind(out, ref)
    return ref


def tree_depth(ctx: LoweringContext, roots: list[int], kids: Callable[[int], list[int]]) -> int:
    """The most splits on a path from any root, refusing cycles."""
    depth, seen = 0, 0
    stack = [(r, 0) for r in roots]
    while stack:
        i, level = stack.pop()
        depth = max(depth, level)
        seen += 1
        if seen > 1 << 22 or level > 1 << 16:
            raise ModelError(f"{ctx.where()}: the trees have a cycle or are too large")
        stack.extend((c, level + 1) for c in kids(i))
    return depth


def forest_tables_v5(ctx: LoweringContext, a: dict, _prefix: None, n_features: int, x_type: TensorType):
    """forest_tables for the opset-5 TreeEnsemble: splits indexed by node, each child either a
    split or a leaf (one target and weight per leaf), trees given by `tree_roots`."""
    where = ctx.where()
    modes = [int(m) for m in a.get("nodes_modes", [])]
    n = len(modes)
    cols = [list(a.get(c, [])) for c in ("nodes_featureids", "nodes_splits", "nodes_truenodeids",
                                         "nodes_trueleafs", "nodes_falsenodeids", "nodes_falseleafs")]
    if any(len(c) != n for c in cols):
        raise ModelError(f"{where}: the nodes_* attributes have different lengths")
    feats, splits, trues, true_leaf, falses, false_leaf = cols
    leaf_targets, leaf_weights = list(a.get("leaf_targetids", [])), list(a.get("leaf_weights", []))
    if len(leaf_targets) != len(leaf_weights):
        raise ModelError(f"{where}: leaf_targetids and leaf_weights have different lengths")
    v5_modes = list(MODES)[1:]  # BRANCH_LEQ = 0 … BRANCH_NEQ = 5 in opset 5's numbering
    for m in modes:
        if not 0 <= m < len(v5_modes):
            raise ctx.unsupported(f"node mode {m} ({'BRANCH_MEMBER' if m == 6 else 'unknown'}) "
                                  f"(supported: {', '.join(v5_modes)})")
    roots = [int(r) for r in a.get("tree_roots", [])]
    if not roots or any(not 0 <= r < n for r in roots):
        raise ModelError(f"{where}: tree_roots must index the nodes")

    def child(i: int, side: int) -> tuple[str, int]:
        leaf, idx = (true_leaf[i], trues[i]) if side == 0 else (false_leaf[i], falses[i])
        bound = len(leaf_targets) if leaf else n
        if not 0 <= idx < bound:
            raise ModelError(f"{where}: node {i} points at a missing {'leaf' if leaf else 'node'} {idx}")
        return ("leaf" if leaf else "node", int(idx))

    order: list[tuple[str, int]] = [("node", r) for r in roots]
    row_of = {k: i for i, k in enumerate(order)}
    if len(row_of) != len(roots):
        raise ModelError(f"{where}: two trees share a root")

    def kids(i: int) -> list[int]:  # rows of a split row's children, added on first sight
        kind, idx = order[i]
        if kind == "leaf":
            return []
        out = []
        for side in (0, 1):
            k = child(idx, side)
            if k not in row_of:
                row_of[k] = len(order)
                order.append(k)
            out.append(row_of[k])
        return out

    depth = tree_depth(ctx, list(range(len(roots))), kids)
    table = []
    for kind, idx in order:
        if kind == "leaf":
            table.append([0, idx, idx + 1, 0, 0])
            continue
        if not 0 <= feats[idx] < n_features:
            raise ModelError(f"{where}: a node tests feature {feats[idx]} of {n_features}")
        table.append([modes[idx] + 1, int(feats[idx]), threshold(ctx, splits[idx], x_type),
                      row_of[child(idx, 0)], row_of[child(idx, 1)]])
    return (np.asarray(table, np.int32).reshape(-1, 5), np.asarray(leaf_targets, np.int32),
            np.asarray(leaf_weights, np.float64), len(roots), depth)


@ml_rule("TreeEnsemble")
def tree_ensemble_v5(ctx: LoweringContext, node: onnx.NodeProto) -> None:
    """ai.onnx.ml opset 5's TreeEnsemble (no base values; enums as integers)."""
    a = attributes(ctx, {"aggregate_function", "leaf_targetids", "leaf_weights", "membership_values",
                         "n_targets", "nodes_falseleafs", "nodes_falsenodeids", "nodes_featureids",
                         "nodes_hitrates", "nodes_missing_value_tracks_true", "nodes_modes", "nodes_splits",
                         "nodes_trueleafs", "nodes_truenodeids", "post_transform", "tree_roots"})
    for name in ("leaf_weights", "nodes_splits", "nodes_modes", "nodes_hitrates", "membership_values"):
        if isinstance(a.get(name), onnx.TensorProto):
            a[name] = onnx.numpy_helper.to_array(a[name]).ravel().tolist()
    agg = {0: "average", 1: "sum", 2: "min", 3: "max"}.get(int(a.get("aggregate_function", 1)))
    if agg is None:
        raise ctx.unsupported(f"aggregate_function {a['aggregate_function']} (supported: 0..3)")
    n_targets = int(a.get("n_targets", 1))
    transform = {0: "NONE", 1: "SOFTMAX", 2: "LOGISTIC", 3: "SOFTMAX_ZERO", 4: "PROBIT"}.get(
        int(a.get("post_transform", 0)), str(a.get("post_transform")))
    if transform != "NONE" and n_targets < 2:
        raise ctx.unsupported(f"post_transform {transform} of a single-target TreeEnsemble")
    out = node.output[0]
    scores = f"{out}/scores" if transform != "NONE" else out
    emit_forest(ctx, node, a, None, n_targets, agg, [], scores)
    if transform != "NONE":
        post_transform(ctx, scores, transform, out)


@ml_rule("TreeEnsembleRegressor")
def tree_regressor(ctx: LoweringContext, node: onnx.NodeProto) -> None:
    a = attributes(ctx, NODE_ATTRS | {"aggregate_function", "n_targets", "target_ids", "target_nodeids",
                                      "target_treeids", "target_weights", "target_weights_as_tensor"})
    n_targets = int(a.get("n_targets", 1))
    agg = _str(a.get("aggregate_function", "SUM"))
    if agg not in ("SUM", "AVERAGE", "MIN", "MAX"):
        raise ctx.unsupported(f"aggregate_function {agg} (supported: SUM, AVERAGE, MIN, MAX)")
    base = [float(v) for v in a.get("base_values", [])]
    if base and len(base) != n_targets:
        raise ctx.unsupported(f"{len(base)} base_values for {n_targets} targets (onnxruntime ignores them)")
    transform = _str(a.get("post_transform", "NONE"))
    if transform != "NONE" and n_targets < 2:
        raise ctx.unsupported(f"post_transform {transform} of a single-target TreeEnsembleRegressor "
                              "(onnxruntime does not apply it)")
    out = node.output[0]
    scores = f"{out}/scores" if transform != "NONE" else out
    emit_forest(ctx, node, a, "target", n_targets, agg.lower(), base, scores)
    if transform != "NONE":
        post_transform(ctx, scores, transform, out)


@ml_rule("TreeEnsembleClassifier")
def tree_classifier(ctx: LoweringContext, node: onnx.NodeProto) -> None:
    """Scores are the summed leaf weights plus base_values. Labels and probabilities, after
    onnxruntime:
    - three classes or more: label = the class with the first maximal score; probabilities =
      post_transform(scores). (onnxruntime leaves a class that no reached leaf scores and that
      has no base value out of its argmax; opmlc counts it as score 0. The two agree unless the
      best scored class is ≤ 0 and such a class precedes it; skl2onnx's classifiers score every
      class in every leaf, or add base values.)
    - two classes, every weight on class 0 (skl2onnx's binary trees): one score s; label 1 if
      s > 0.5 when all weights are ≥ 0 (s is a probability), else if s > 0; probabilities
      [1 − s, s] (all weights ≥ 0) or [−s, s] with NONE, [σ(−s), σ(s)] with LOGISTIC.
    """
    a = attributes(ctx, NODE_ATTRS | {"class_ids", "class_nodeids", "class_treeids", "class_weights",
                                      "class_weights_as_tensor", "classlabels_int64s", "classlabels_strings"})
    if "classlabels_strings" in a:
        raise ctx.unsupported("string class labels (classlabels_strings); only classlabels_int64s")
    labels = [int(v) for v in a.get("classlabels_int64s", [])]
    k = len(labels)
    classes = set(int(c) for c in a.get("class_ids", []))
    base = [float(v) for v in a.get("base_values", [])]
    transform = _str(a.get("post_transform", "NONE"))
    label_out, prob_out = outputs(node)
    scores = f"{node.output[0]}/scores"
    if k >= 3:
        if base and len(base) != k:
            raise ctx.unsupported(f"{len(base)} base_values for {k} classes")
        ref = emit_forest(ctx, node, a, "class", k, "sum", base, scores)
        if label_out:
            argmax_labels(ctx, ref, labels, label_out)
        if prob_out:
            post_transform(ctx, scores, transform, prob_out)
        return
    if k != 2 or not classes <= {0} or len(base) > 1:
        raise ctx.unsupported(
            f"TreeEnsembleClassifier with {k} classes, class_ids {sorted(classes)} and {len(base)} base_values "
            "(supported: three classes or more, or two classes with every weight on class 0 and at most one base value)")
    if transform not in ("NONE", "LOGISTIC"):
        raise ctx.unsupported(f"post_transform {transform} of a binary TreeEnsembleClassifier (only NONE, LOGISTIC)")
    positive = all(float(w) >= 0 for w in a.get("class_weights", []))
    emit_forest(ctx, node, a, "class", 1, "sum", base, scores)
    if label_out:
        cut = const(ctx, f"{scores}/cut", 0.5 if positive else 0.0)
        binary(ctx, "gt", scores, cut, f"{label_out}/positive")
        pick = ctx.emit("where", [ctx.value(f"{label_out}/positive"),
                                  ctx.const_ref(f"{label_out}/label1", np.asarray([labels[1]]), DType.I64),
                                  ctx.const_ref(f"{label_out}/label0", np.asarray([labels[0]]), DType.I64)],
                        {}, f"{label_out}/pick")
        bind_labels_direct(ctx, pick, label_out)
    if prob_out:
        neg = f"{prob_out}/class0"
        if transform == "LOGISTIC":
            unary(ctx, "neg", scores, f"{prob_out}/neg")
            unary(ctx, "sigmoid", f"{prob_out}/neg", neg)
            unary(ctx, "sigmoid", scores, f"{prob_out}/class1")
            pos = f"{prob_out}/class1"
        else:
            if positive:
                binary(ctx, "sub", const(ctx, f"{prob_out}/one", 1.0), scores, neg)
            else:
                unary(ctx, "neg", scores, neg)
            pos = scores
        parts = [ctx.fx(neg), ctx.fx(pos)]
        ctx.bind(prob_out, ctx.emit("concat", parts, {"axis": 1, "frac": ctx.policy.activation(prob_out)}, prob_out))


def bind_labels_direct(ctx: LoweringContext, pick: int, out: str) -> None:
    """An i64 [N, 1] of labels, bound to `out` as [N]."""
    ctx.bind(f"{out}/column", pick)
    reshape_to(ctx, f"{out}/column", (ctx.builder.type_of(pick).shape[0],), out)
