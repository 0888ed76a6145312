"""Rules for ONNX-ML SVMClassifier and SVMRegressor (scikit-learn's SVC/SVR under skl2onnx),
lowered onto existing IR ops: matmul, binary, unary, reduce, reshape, cast, concat.

The meaning followed where the ONNX-ML spec is open is onnxruntime's (1.32, svmclassifier.cc):
- kernel K[n, s] between row n and support vector s: LINEAR x·sv; POLY (γ x·sv + c0)^degree
  (a positive integer degree); SIGMOID tanh(γ x·sv + c0); RBF exp(−γ‖x − sv‖²).
  RBF is computed as exp(−‖√γ x − √γ sv‖²): the exponent itself is what is rounded, so its
  error does not grow with 1/γ, and a distance that saturates still gives exp(−big) = 0.
- classifier, one-vs-one: for each class pair (i, j), i < j, in that order, the decision
  d = Σ_{s ∈ i} coef[j−1][s]·K[s] + Σ_{s ∈ j} coef[i][s]·K[s] + rho[p]: one matmul of K with a
  [pairs, vectors] matrix. d > 0 votes for i, else j; the label is the first class with the
  most votes (votes are exact small integers: a 0/1 matrix product at 0 fractional bits).
  The score output is the pairs' decisions for three classes or more (post_transform NONE,
  LOGISTIC or SOFTMAX over them), [−d, d] for two (NONE only: onnxruntime then writes [1 − d, d]
  of the raw decision for any other transform, which opmlc does not mimic).
- regressor: K·coef + rho[0] (x·coef + rho[0] without support vectors); one_class gives ±1.
Refused by name: other post_transforms (PROBIT, SOFTMAX_ZERO; any but NONE for SVMRegressor),
string labels, the liblinear layout of SVMClassifier (no vectors_per_class), non-integer POLY
degrees, and prob_a/prob_b (SVC's
probability=True: libsvm's pairwise coupling is an iterative solve with a data-dependent stop,
which opmlc does not reproduce — export the SVC without probability=True).

Error bound: each kernel value is within a few units of 2^−f of the float kernel (f the
activations' bits), each decision within Σ|coef|·that; a label differs from onnxruntime's only
when a decision is that close to 0 (tests/frontend/test_sklearn_svm_knn.py reports the margin).
"""

from __future__ import annotations

import math

import numpy as np
import onnx

from opmlc.errors import ModelError
from opmlc.frontend.context import LoweringContext
from opmlc.frontend.rules.ml import (
    _str,
    argmax_labels,
    attributes,
    features,
    fine_const,
    ml_rule,
    post_transform,
)
from opmlc.ir.types import DType, TensorType

KERNELS = ("LINEAR", "POLY", "RBF", "SIGMOID")
MAX_DEGREE = 8  # POLY by repeated multiplication


def kernel_params(ctx: LoweringContext, a: dict) -> tuple[str, float, float, int]:
    kernel = _str(a.get("kernel_type", "LINEAR"))
    if kernel not in KERNELS:
        raise ctx.unsupported(f"kernel_type {kernel} (supported: {', '.join(KERNELS)})")
    params = [float(v) for v in a.get("kernel_params", [])] + [0.0, 0.0, 0.0]
    gamma, coef0, degree = params[:3]
    if kernel == "POLY" and (degree != int(degree) or not 1 <= degree <= MAX_DEGREE):
        raise ctx.unsupported(f"POLY kernel of degree {degree} (only integers 1..{MAX_DEGREE})")
    if kernel == "RBF" and gamma < 0:
        raise ctx.unsupported(f"RBF kernel with gamma {gamma} < 0")
    return kernel, gamma, coef0, int(degree)


def no_transform(ctx: LoweringContext, a: dict) -> None:
    transform = _str(a.get("post_transform", "NONE"))
    if transform != "NONE":
        raise ctx.unsupported(f"post_transform {transform} of {ctx.node.op_type} (only NONE)")


def kernel_matrix(ctx: LoweringContext, x: int, n_features: int, sv: np.ndarray, params, out: str) -> int:
    """K [N, S] between the rows of x [N, F] and the support vectors sv [S, F]."""
    kernel, gamma, coef0, degree = params
    n = ctx.builder.type_of(x).shape[0]
    s = sv.shape[0]
    act = ctx.policy.activation
    if kernel == "RBF":
        root = math.sqrt(gamma)
        scaled = ctx.emit("binary", [x, ctx.const_ref(f"{out}/sqrt_gamma", np.asarray([root]))],
                          {"kind": "mul", "frac": act(f"{out}/x")}, f"{out}/x")
        rows = ctx.emit("reshape", [scaled], {"shape": [n, 1, n_features]}, f"{out}/rows")
        vecs = ctx.const_ref(f"{out}/vectors", sv * root)
        diff = ctx.emit("binary", [rows, vecs], {"kind": "sub", "frac": act(f"{out}/diff")}, f"{out}/diff")
        sq = ctx.emit("binary", [diff, diff], {"kind": "mul", "frac": act(f"{out}/square")}, f"{out}/square")
        dist = ctx.emit("reduce", [sq], {"kind": "sum", "axes": [2], "keepdims": 0, "frac": act(f"{out}/dist")},
                        f"{out}/dist")
        neg = ctx.emit("unary", [dist], {"kind": "neg", "frac": ctx.frac_of(dist)}, f"{out}/exponent")
        return ctx.emit("unary", [neg], {"kind": "exp", "frac": act(out)}, out)
    if kernel == "LINEAR":
        return ctx.emit("matmul", [x, ctx.const_ref(f"{out}/vectors", sv)],
                        {"frac": act(out), "transpose_b": True}, out)
    dot = f"{out}/dot"
    ref = ctx.emit("matmul", [x, ctx.const_ref(f"{dot}/vectors", sv * gamma),
                              ctx.const_ref(f"{dot}/coef0", np.full(s, coef0))],
                   {"frac": act(dot), "transpose_b": True}, dot)
    if kernel == "SIGMOID":
        return ctx.emit("unary", [ref], {"kind": "tanh", "frac": act(out)}, out)
    power = ref
    for k in range(1, degree):
        power = ctx.emit("binary", [power, ref], {"kind": "mul", "frac": act(out)},
                         out if k == degree - 1 else f"{out}/pow{k + 1}")
    return power


def support_vectors(ctx: LoweringContext, a: dict, count: int, n_features: int) -> np.ndarray:
    sv = np.asarray(a.get("support_vectors", []), dtype=np.float64)
    if sv.size != count * n_features:
        raise ModelError(f"{ctx.where()}: {sv.size} support vector values for {count} vectors of {n_features} features")
    return sv.reshape(count, n_features)


@ml_rule("SVMClassifier")
def svm_classifier(ctx: LoweringContext, node: onnx.NodeProto) -> None:
    a = attributes(ctx, {"classlabels_ints", "classlabels_strings", "coefficients", "kernel_params",
                         "kernel_type", "post_transform", "prob_a", "prob_b", "rho", "support_vectors",
                         "vectors_per_class"})
    if "classlabels_strings" in a:
        raise ctx.unsupported("string class labels (classlabels_strings); only classlabels_ints")
    transform = _str(a.get("post_transform", "NONE"))
    label_out, score_out = [*node.output, "", ""][:2]
    if (a.get("prob_a") or a.get("prob_b")) and score_out:
        raise ctx.unsupported("SVMClassifier probabilities (prob_a/prob_b, from SVC(probability=True)): "
                              "libsvm's pairwise coupling is not reproduced; export the SVC without probability=True")
    labels = [int(v) for v in a.get("classlabels_ints", [])]
    per_class = [int(v) for v in a.get("vectors_per_class", [])]
    c = len(labels)
    if not per_class:
        raise ctx.unsupported("SVMClassifier without support vectors (the liblinear layout)")
    if len(per_class) != c or c < 2 or min(per_class) < 0:
        raise ModelError(f"{ctx.where()}: vectors_per_class {per_class} for {c} class labels")
    params = kernel_params(ctx, a)
    x, f = features(ctx, node.input[0])
    s = sum(per_class)
    sv = support_vectors(ctx, a, s, f)
    coef = np.asarray(a.get("coefficients", []), dtype=np.float64)
    pairs = [(i, j) for i in range(c) for j in range(i + 1, c)]
    rho = np.asarray(a.get("rho", []), dtype=np.float64)
    if coef.size != (c - 1) * s or rho.size != len(pairs):
        raise ModelError(f"{ctx.where()}: {coef.size} coefficients and {rho.size} rho for {c} classes "
                         f"and {s} support vectors (want {(c - 1) * s} and {len(pairs)})")
    coef = coef.reshape(c - 1, s)
    start = np.concatenate([[0], np.cumsum(per_class)])
    weights = np.zeros((len(pairs), s))
    for p, (i, j) in enumerate(pairs):
        weights[p, start[i]:start[i + 1]] = coef[j - 1, start[i]:start[i + 1]]
        weights[p, start[j]:start[j + 1]] = coef[i, start[j]:start[j + 1]]

    base = node.output[0] or node.output[1]
    k = kernel_matrix(ctx, x, f, sv, params, f"{base}/kernel")
    dec_name = f"{base}/decision"
    dec = ctx.emit("matmul", [k, fine_const(ctx, f"{dec_name}/coefficients", weights),
                              ctx.const_ref(f"{dec_name}/rho", rho)],
                   {"frac": ctx.policy.activation(dec_name), "transpose_b": True}, dec_name)
    if label_out:
        # votes[c] = Σ_p [i_p = c]·pos_p + [j_p = c]·(1 − pos_p): a 0/1 matrix product, exact
        pos = ctx.emit("binary", [dec, ctx.const_ref(f"{base}/zero", np.zeros(1))], {"kind": "gt"}, f"{base}/positive")
        pos = ctx.emit("cast", [pos], {"to": "fx32", "frac": 0}, f"{base}/positive01")
        diff = np.zeros((c, len(pairs)), np.int32)
        against = np.zeros(c, np.int32)
        for p, (i, j) in enumerate(pairs):
            diff[i, p] += 1
            diff[j, p] -= 1
            against[j] += 1
        votes = ctx.emit("matmul", [pos, ctx.builder.add_initializer(f"{base}/vote_matrix", diff, TensorType(DType.FX32, diff.shape, 0)),
                                    ctx.builder.add_initializer(f"{base}/vote_base", against, TensorType(DType.FX32, against.shape, 0))],
                         {"frac": 0, "transpose_b": True}, f"{base}/votes")
        argmax_labels(ctx, votes, labels, label_out)
    if transform != "NONE" and (c == 2 or transform not in ("LOGISTIC", "SOFTMAX")):
        # two classes: onnxruntime writes [1 − d, d] of the raw decision whatever the transform
        raise ctx.unsupported(f"post_transform {transform} of SVMClassifier with {c} classes "
                              "(NONE, or LOGISTIC/SOFTMAX with three classes or more)")
    if score_out:
        if c > 2:
            ctx.bind(dec_name, dec)
            post_transform(ctx, dec_name, transform, score_out)
        else:
            neg = ctx.emit("unary", [dec], {"kind": "neg", "frac": ctx.frac_of(dec)}, f"{score_out}/negative")
            ctx.bind(score_out, ctx.emit("concat", [neg, dec], {"axis": 1, "frac": ctx.frac_of(dec)}, score_out))


@ml_rule("SVMRegressor")
def svm_regressor(ctx: LoweringContext, node: onnx.NodeProto) -> None:
    a = attributes(ctx, {"coefficients", "kernel_params", "kernel_type", "n_supports", "one_class",
                         "post_transform", "rho", "support_vectors"})
    no_transform(ctx, a)
    x, f = features(ctx, node.input[0])
    count = int(a.get("n_supports", 0))
    coef = np.asarray(a.get("coefficients", []), dtype=np.float64)
    rho = np.asarray(a.get("rho", []), dtype=np.float64)
    if rho.size < 1 or coef.size != (count if count > 0 else f):
        raise ModelError(f"{ctx.where()}: {coef.size} coefficients and {rho.size} rho for {count} support "
                         f"vectors of {f} features")
    out = node.output[0]
    raw = f"{out}/raw" if int(a.get("one_class", 0)) else out
    if count > 0:
        k = kernel_matrix(ctx, x, f, support_vectors(ctx, a, count, f), kernel_params(ctx, a), f"{out}/kernel")
    else:
        k = x  # the liblinear layout: the coefficients weigh the features
    y = ctx.emit("matmul", [k, fine_const(ctx, f"{out}/coefficients", coef.reshape(1, -1)),
                            ctx.const_ref(f"{out}/rho", rho[:1])],
                 {"frac": ctx.policy.activation(raw), "transpose_b": True}, raw)
    if raw != out:
        pos = ctx.emit("binary", [y, ctx.const_ref(f"{out}/zero", np.zeros(1))], {"kind": "gt"}, f"{out}/positive")
        y = ctx.emit("where", [pos, ctx.const_ref(f"{out}/one", np.ones(1)), ctx.const_ref(f"{out}/minus_one", -np.ones(1))],
                     {"frac": ctx.policy.activation(out)}, out)
    ctx.bind(out, y)
