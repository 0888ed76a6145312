"""tree_ensemble: the raw scores of an ensemble of decision trees (ONNX-ML TreeEnsemble*).

The trees are data, not attributes: they travel as initializer tensors (values with roots, as
every weight does), and the kernel walks them with a loop, so the program is the same for any
forest of the same sizes.

Inputs:
- x: fx32 [N, F] (frac f), or f32 [N, F] (float32 bit patterns), the features.
- nodes: i32 [M, 5], one row per tree node, rows 0..n_trees-1 being the roots of trees
  0..n_trees-1. A split row is (mode, feature, threshold, true_row, false_row) with mode
  1 LEQ (x ≤ t), 2 LT, 3 GTE, 4 GT, 5 EQ, 6 NEQ and the threshold in x's encoding: fixed point
  with x's fractional bits f, or float32 bits.
  A leaf row is (0, first, end, 0, 0): its weights are entries first..end-1 of the next two.
- targets: i32 [W], the target (class) of each leaf weight.
- weights: fx32 [W] (frac fw), the leaf weights.
- base (optional): fx32 [T] with fw bits, added to every row's scores.

Attributes: `n_trees` ≥ 1, `depth` (the most splits a walk takes), `aggregate` (sum, average,
min, max), `n_targets` T ≥ 1, `frac` (the output's bits fo).

Semantics, per row and tree t: start at row t and, at most `depth` times, stop at a leaf or
move to true_row if the comparison holds, else to false_row. Comparisons are exact on int32:
x_q OP t_q for fx32, key(x) OP key(t) for f32, where key (fixedpoint.f32_key) is the bits for a
positive sign and minus the magnitude bits for a negative one, so that it compares exactly as
float32 does (−0 = +0; a NaN's bits, which the input edge refuses, order beyond ±inf). If the
walk ends on a leaf, each of its weight entries k (clipped to 0..W-1) with 0 ≤ targets[k] < T
goes to its target: summed in wrap-around int64 (sum, average), or its
minimum/maximum taken (min, max). A walk that leaves the table (a row outside 0..M-1), or
stops at a split after `depth` steps, contributes nothing; a feature index outside 0..F-1 reads
0; an unknown mode compares false. (The frontend builds well-formed tables; these rules only
make every table, however malformed, mean exactly one thing on every backend.)
Per target: sum → acc + base; average → round_div(acc, n_trees) + base; min/max → (the extreme
weight, or 0 if no reached leaf scored the target) + base; then `to_fx(·, fw, fo)`.

Quantization: with f32 features nothing is quantized before the comparison, and every split
goes as onnxruntime's float32 comparison goes. With fx32 features (a tree behind another op,
a Scaler say), x and the thresholds are both round(v · 2^f) with the same f, a monotone map, so
the fixed-point comparison equals the float one except when x and t fall into one quantization
step (|x − t| < 2^-f): then LEQ/GTE/EQ may hold, and LT/GT/NEQ fail, where float says otherwise.
Leaf weights are rounded to fw bits: a score is within n_trees · 2^-(fw+1) (+ the final
rounding 2^-(fo+1)) of the float sum, which can flip a label only at a near-tie of scores.
"""

from __future__ import annotations

import numpy as np

from opmlc.ir import fixedpoint as fp
from opmlc.ir.ops import IRTypeError, Op, register
from opmlc.ir.types import DType, TensorType

MODES = {"LEAF": 0, "BRANCH_LEQ": 1, "BRANCH_LT": 2, "BRANCH_GTE": 3, "BRANCH_GT": 4, "BRANCH_EQ": 5,
         "BRANCH_NEQ": 6}
AGGREGATES = ("sum", "average", "min", "max")
ROW = 5  # columns of the nodes table


def compare(mode: np.ndarray, x: np.ndarray, t: np.ndarray) -> np.ndarray:
    """The split predicate of each mode (false for unknown modes)."""
    return np.select(
        [mode == 1, mode == 2, mode == 3, mode == 4, mode == 5, mode == 6],
        [x <= t, x < t, x >= t, x > t, x == t, x != t],
        False,
    )


@register
class TreeEnsemble(Op):
    name = "tree_ensemble"
    arity = (4, 5)

    def infer(self, inputs: list[TensorType], attrs: dict) -> TensorType:
        self.check_arity(inputs)
        x, nodes, targets, weights = inputs[:4]
        if x.dtype not in (DType.FX32, DType.F32) or len(x.shape) != 2 or x.shape[1] < 1:
            raise IRTypeError(f"tree_ensemble features must be fx32 or f32 [N, F ≥ 1], got {x}")
        if nodes.dtype is not DType.I32 or len(nodes.shape) != 2 or nodes.shape[1] != ROW:
            raise IRTypeError(f"tree_ensemble nodes must be i32 [M, {ROW}], got {nodes}")
        if targets.dtype is not DType.I32 or weights.dtype is not DType.FX32 \
                or len(targets.shape) != 1 or targets.shape != weights.shape:
            raise IRTypeError(f"tree_ensemble leaf targets/weights must be i32 [W] and fx32 [W], got {targets}, {weights}")
        n_trees, t_count = int(attrs["n_trees"]), int(attrs["n_targets"])
        if not 1 <= n_trees <= nodes.shape[0] or t_count < 1 or int(attrs["depth"]) < 0:
            raise IRTypeError(f"tree_ensemble: bad n_trees/n_targets/depth {attrs} for {nodes}")
        if attrs["aggregate"] not in AGGREGATES:
            raise IRTypeError(f"tree_ensemble aggregate {attrs['aggregate']!r} is not one of {AGGREGATES}")
        if len(inputs) == 5:
            base = inputs[4]
            if base.dtype is not DType.FX32 or base.shape != (t_count,) or base.frac != weights.frac:
                raise IRTypeError(f"tree_ensemble base must be fx32<{weights.frac}> [{t_count}], got {base}")
        return TensorType(DType.FX32, (x.shape[0], t_count), attrs["frac"])

    def evaluate(
        self, args: list[np.ndarray], types: list[TensorType], attrs: dict, out: TensorType
    ) -> np.ndarray:
        x = fp.as_i64(args[0])
        nodes = fp.as_i64(args[1])
        if types[0].dtype is DType.F32:  # float32 bits compare as their keys
            x = fp.f32_key(x)
            nodes = nodes.copy()
            nodes[:, 2] = fp.f32_key(nodes[:, 2])
        targets, weights = fp.as_i64(args[2]), fp.as_i64(args[3])
        n, f = x.shape
        m, w = nodes.shape[0], targets.shape[0]
        t_count, n_trees, depth = int(attrs["n_targets"]), int(attrs["n_trees"]), int(attrs["depth"])
        agg = attrs["aggregate"]
        rows = np.arange(n)
        acc = np.zeros((n, t_count), dtype=np.int64)
        has = np.zeros((n, t_count), dtype=bool)
        for tree in range(n_trees):
            idx = np.full(n, tree, dtype=np.int64)
            for _ in range(depth):
                inb = (idx >= 0) & (idx < m)
                row = nodes[np.where(inb, idx, 0)]
                walking = inb & (row[:, 0] != 0)
                feat = row[:, 1]
                fok = (feat >= 0) & (feat < f)
                xv = np.where(fok, x[rows, np.where(fok, feat, 0)], 0)
                cond = compare(row[:, 0], xv, row[:, 2])
                idx = np.where(walking, np.where(cond, row[:, 3], row[:, 4]), idx)
            inb = (idx >= 0) & (idx < m)
            row = nodes[np.where(inb, idx, 0)]
            leaf = inb & (row[:, 0] == 0)
            lo, hi = np.maximum(row[:, 1], 0), np.minimum(row[:, 2], w)
            span = int(np.max(np.where(leaf, hi - lo, 0), initial=0))
            for j in range(span):  # a row's j-th weight entry: one (row, target) pair per row
                k = lo + j
                ok = leaf & (k < hi)
                k = np.where(ok, k, 0)
                tgt = targets[k]
                ok &= (tgt >= 0) & (tgt < t_count)
                r, c, v = rows[ok], tgt[ok], weights[k][ok]
                if agg in ("sum", "average"):
                    acc[r, c] = fp.add64(acc[r, c], v)
                else:
                    pick = np.minimum if agg == "min" else np.maximum
                    acc[r, c] = np.where(has[r, c], pick(acc[r, c], v), v)
                has[r, c] = True
        if agg == "average":
            acc = fp.round_div(acc, n_trees)
        elif agg in ("min", "max"):
            acc = np.where(has, acc, 0)
        if len(args) == 5:
            acc = fp.add64(acc, fp.as_i64(args[4])[None, :])
        return fp.to_fx(acc, types[3].frac, out.frac)
