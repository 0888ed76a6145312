"""MIPS cost of one node in VM steps, for bench/mips_cost.py and the step-budget tests
(tests/kernels/test_mips_cost.py): a one-node graph built for MIPS, its node task run in
the VM on random inputs of a given magnitude. VM steps are a count, not a timing: the same
program and inputs always take the same number.

Figures are differences of two sizes (steps over 2n elements minus steps over n, over n), so
the per-node overhead cancels and what remains is the cost per element (per multiply-add for
matmul and conv: the reduction grows, the outputs stay).
"""

from __future__ import annotations

import numpy as np

from opmlc.ir.graph import GraphBuilder
from opmlc.ir.ops.norm import eps_units
from opmlc.ir.types import DType, TensorType
from tests.kernels.harness import build_program, run_vm


def fx(shape, frac=16):
    return TensorType(DType.FX32, tuple(shape), frac)


def node_steps(op: str, in_types: list[TensorType], attrs: dict, scales: list[int], seed: int = 0) -> int:
    """VM steps of a one-node graph's node task, on random inputs of the given magnitudes."""
    rng = np.random.default_rng(seed)
    b = GraphBuilder(f"cost_{op}")
    refs = [b.add_input(f"x{i}", t) for i, t in enumerate(in_types)]
    b.mark_output(b.add_node(op, refs, attrs, "y"))
    g = b.build()
    data = [rng.integers(-s, s, size=t.shape, endpoint=True).astype(np.int32) for t, s in zip(in_types, scales, strict=True)]
    values = [*data, None]  # run_vm reads the inputs' values only
    program = build_program(g)
    state, _ = run_vm(g, program, values, node=0, max_steps=200_000_000)
    assert state.exited and state.exit_code == 0, "the task did not finish"
    return state.step


def per_element(make, n: int) -> float:
    """(steps(2n) − steps(n)) / n for make(n) → (op, types, attrs, scales)."""
    return (node_steps(*make(2 * n)) - node_steps(*make(n))) / n


UNARY = ("sigmoid", "tanh", "exp", "erf", "log")


def unary(kind):
    return lambda n: ("unary", [fx((n,))], {"kind": kind, "frac": 16}, [8 << 16])


def softmax(row):
    return lambda n: ("softmax", [fx((n // row, row))], {"frac": 16}, [8 << 16])


def norm(kind, row):
    attrs = {"kind": kind, "eps": eps_units(1e-5, 16, row), "frac": 16}
    return lambda n: ("norm", [fx((n // row, row)), fx((row,), 14)], attrs, [8 << 16, 1 << 14])


def matmul(m: int, n: int, trans: bool):
    """[m, K] @ [K, n] for a given K: per multiply-add = per_element(·, K) / (m·n)."""
    return lambda k: ("matmul", [fx((m, k)), fx((n, k) if trans else (k, n))],
                      {"frac": 16, "transpose_b": trans}, [1 << 16, 1 << 16])


def conv(hw: int, pad: int, m: int = 8):
    """A 3×3 convolution of an hw×hw image with C input channels for a given C, m outputs:
    per multiply-add = per_element(·, C) / (m·9·outputs), counting the taps in the padding
    (ONNX's multiply-adds), which the kernel skips."""
    return lambda c: ("conv", [fx((1, c, hw, hw)), fx((m, c, 3, 3))],
                      {"group": 1, "strides": [1, 1], "dilations": [1, 1], "pads": [pad] * 4, "frac": 16},
                      [1 << 16, 1 << 16])


def conv_madds(hw: int, pad: int, m: int = 8) -> int:
    o = hw + 2 * pad - 2
    return o * o * m * 9


def binary(kind):
    return lambda n: ("binary", [fx((n,)), fx((n,))], {"kind": kind, "frac": 16}, [8 << 16, 8 << 16])


def graph_steps(graph, inputs: list[np.ndarray]) -> int:
    """VM steps of node 0 of `graph` (one with initializers) on `inputs`."""
    from opmlc.ir.interpreter import run_graph

    state, _ = run_vm(graph, build_program(graph), run_graph(graph, inputs), node=0, max_steps=200_000_000)
    assert state.exited and state.exit_code == 0, "the task did not finish"
    return state.step


def qmatmul_per_madd(dtype: str, m: int, n: int, block: int, zp: bool) -> float:
    """Steps per multiply-add of an [m, K] × q[n, K] qmatmul: K = 2·block against K = block."""
    from opmlc.ir.types import DType
    from tests.kernels.test_kernels import rand_fx
    from tests.kernels.test_qweight_kernels import qmatmul_graph

    steps = []
    for k in (block, 2 * block):
        rng = np.random.default_rng(0)
        g = qmatmul_graph(rng, DType[dtype], (m, k), n, block, zp, True)
        steps.append(graph_steps(g, [rand_fx(rng, (m, k), 1 << 16)]))
    return (steps[1] - steps[0]) / (block * m * n)


def qconv_per_madd(hw: int, pad: int, m: int = 8) -> float:
    """Steps per multiply-add (padding taps counted) of an i8 3×3 qconv: 8 against 4 channels."""
    from tests.kernels.test_mips_cost import qconv_graph

    attrs = {"strides": [1, 1], "pads": [pad] * 4, "dilations": [1, 1], "group": 1}
    steps = [graph_steps(*qconv_graph(np.random.default_rng(0), "I8", (1, c, hw, hw), (m, c, 3, 3), False, attrs))
             for c in (4, 8)]
    return (steps[1] - steps[0]) / (4 * conv_madds(hw, pad, m))
