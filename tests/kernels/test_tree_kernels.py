"""The tree_ensemble kernel against its interpreter semantics, bit for bit, natively and as a MIPS
ELF in the VM and in unicorn: random forests of every comparison mode and aggregate, features
on and off the thresholds, float32-bit features (f32) on, next to and across signed thresholds,
and malformed tables (rows, features, weight ranges and targets out
of range, cycles cut by the depth bound)."""

from __future__ import annotations

import numpy as np

from opmlc.ir.fixedpoint import f32_bits
from opmlc.ir.graph import GraphBuilder
from opmlc.ir.ops.tree_ensemble import AGGREGATES
from opmlc.ir.types import DType, TensorType
from tests.kernels.test_kernels import check_all_backends


def random_forest(rng, n_trees: int, n_features: int, n_targets: int, depth: int):
    """A well-formed nodes table (roots first), its leaf targets and weights, thresholds in
    -8..8 steps of 2^-4 (so features drawn on that grid hit them exactly)."""
    rows: list[list[int]] = [[0] * 5 for _ in range(n_trees)]
    targets: list[int] = []
    weights: list[int] = []

    def grow(r: int, level: int) -> None:
        if level == depth or rng.random() < 0.2:
            first = len(targets)
            for t in rng.choice(n_targets, size=int(rng.integers(1, n_targets + 1)), replace=False):
                targets.append(int(t))
                weights.append(int(rng.integers(-(1 << 20), 1 << 20)))
            rows[r] = [0, first, len(targets), 0, 0]
            return
        kids = [len(rows), len(rows) + 1]
        rows.extend([[0] * 5, [0] * 5])
        rows[r] = [int(rng.integers(1, 7)), int(rng.integers(0, n_features)),
                   int(rng.integers(-128, 129)) << 12, kids[0], kids[1]]
        for k in kids:
            grow(k, level + 1)

    for t in range(n_trees):
        grow(t, 0)
    return np.array(rows, np.int32), np.array(targets, np.int32), np.array(weights, np.int32)


def forest_graph(nodes, targets, weights, n_rows, n_features, n_targets, n_trees, depth, base=None,
                 aggregates=AGGREGATES, x_type=None):
    b = GraphBuilder("forest")
    x = b.add_input("x", x_type or TensorType(DType.FX32, (n_rows, n_features), 16))
    ins = [x,
           b.add_initializer("nodes", nodes, TensorType(DType.I32, nodes.shape)),
           b.add_initializer("targets", targets, TensorType(DType.I32, targets.shape)),
           b.add_initializer("weights", weights, TensorType(DType.FX32, weights.shape, 20))]
    if base is not None:
        ins.append(b.add_initializer("base", base, TensorType(DType.FX32, base.shape, 20)))
    for agg in aggregates:
        attrs = {"n_trees": n_trees, "depth": depth, "aggregate": agg, "n_targets": n_targets, "frac": 16}
        b.mark_output(b.add_node("tree_ensemble", ins, attrs, agg))
    return b.build()


def test_tree_ensemble_every_mode_and_aggregate_on_all_backends():
    rng = np.random.default_rng(0)
    nodes, targets, weights = random_forest(rng, n_trees=5, n_features=4, n_targets=3, depth=4)
    base = rng.integers(-(1 << 22), 1 << 22, size=3).astype(np.int32)
    g = forest_graph(nodes, targets, weights, 6, 4, 3, 5, 4, base)
    x = (rng.integers(-130, 131, size=(6, 4)) << 12).astype(np.int32)  # on the threshold grid
    x[0] += 1  # just above the grid
    x[1] -= 1
    check_all_backends(g, [x])


def test_tree_ensemble_malformed_tables_mean_the_same_on_all_backends():
    rng = np.random.default_rng(1)
    nodes, targets, weights = random_forest(rng, n_trees=3, n_features=3, n_targets=2, depth=3)
    bad = nodes.copy()
    bad[0] = [1, 7, 0, 1, 0]  # feature out of range (reads 0), true branch: a cycle back to row 1
    bad[1] = [0, -3, 99, 0, 0]  # a leaf whose weight range sticks out on both sides
    bad[2] = [9, 0, 0, 1000, -5]  # unknown mode (false) to a row outside the table
    targets = targets.copy()
    targets[0] = 7  # a target out of range: ignored
    x = rng.integers(-(1 << 20), 1 << 20, size=(4, 3)).astype(np.int32)
    for table in (bad, np.array([[1, 0, 0, 0, 0]], np.int32)):  # the second: a one-row cycle
        g = forest_graph(table, targets, weights, 4, 3, 2, min(3, len(table)), 5)
        check_all_backends(g, [x])


def test_tree_ensemble_on_float32_bits_compares_as_float32_on_all_backends():
    """f32 features: thresholds are float32 bits, features the thresholds themselves, their
    float32 neighbours, ±0, ±inf and denormals, so that every mode meets equality, the nearest
    inequality both ways and the sign change; the interpreter also agrees with numpy's float32
    comparison of the same splits."""
    rng = np.random.default_rng(2)
    nodes, targets, weights = random_forest(rng, n_trees=4, n_features=3, n_targets=2, depth=4)
    splits = nodes[:, 0] != 0
    thr = np.array([0.0, -0.0, 1e-40, -1e-40, 0.3, -0.3, 1.5e30, -2.5, np.inf], np.float32)
    t_float = rng.choice(thr, size=len(nodes))
    nodes = nodes.copy()
    nodes[splits, 2] = f32_bits(t_float[splits])
    near = np.concatenate([thr, np.nextafter(thr, np.float32(np.inf)), np.nextafter(thr, np.float32(-np.inf)),
                           [-np.inf, 7.0, -7.0]]).astype(np.float32)
    x = rng.choice(near, size=(12, 3)).astype(np.float32)
    g = forest_graph(nodes, targets, weights, 12, 3, 2, 4, 4,
                     x_type=TensorType(DType.F32, (12, 3)), aggregates=("sum",))
    outs = check_all_backends(g, [f32_bits(x)])
    # the same walk in float32 by numpy
    ops = {1: np.less_equal, 2: np.less, 3: np.greater_equal, 4: np.greater, 5: np.equal, 6: np.not_equal}
    want = np.zeros((12, 2), np.int64)
    for r in range(12):
        for tree in range(4):
            i = tree
            while nodes[i, 0] != 0:
                i = nodes[i, 3] if ops[nodes[i, 0]](x[r, nodes[i, 1]], t_float[i]) else nodes[i, 4]
            for k in range(nodes[i, 1], nodes[i, 2]):
                want[r, targets[k]] += weights[k]
    got = outs.values[g.outputs[0]]
    assert np.array_equal(got.astype(np.int64), (want + 8) >> 4)  # weights have 20 bits, outputs 16
