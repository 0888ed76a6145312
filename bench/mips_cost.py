"""MIPS cost of the kernels in VM steps: per element of the nonlinear ops, per multiply-add of
matmul and conv, and the digits-MLP demo's wall time.

    python bench/mips_cost.py [--no-demo]

Each figure is a difference of two one-node tasks run in the VM (MIPS steps are
deterministic: a count, not a timing): the steps of a node over 2n elements minus those over
n, divided by n, so the per-node overhead (prologue, a softmax's or norm's per-row work on
fixed rows) cancels. Inputs are random in a typical activation range (|x| < 8 in Q16).

The reference column is what today's main measured before the division-free kernels
(issue 13; the same script at commit 9e0d4d9): the nonlinear ops called the i64 software
division `__divdi3` per element and kept Q30 polynomials in 64-bit arithmetic.
Targets (issue 13): ≤ 300 steps per element, ≤ 7 instructions per multiply-add.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from opmlc.ir.graph import GraphBuilder  # noqa: E402
from opmlc.ir.ops.norm import eps_units  # noqa: E402
from opmlc.ir.types import DType, TensorType  # noqa: E402
from tests.kernels.harness import build_program, run_vm  # noqa: E402

# Steps per element (per multiply-add for matmul/conv) measured at 9e0d4d9, before issue 13.
REFERENCE = {
    "sigmoid": None, "tanh": None, "exp": None, "erf": None, "log": None,
    "softmax (row 32)": None, "softmax (row 128)": None, "layer norm (row 64)": None,
    "rms norm (row 64)": None, "matmul": None, "matmul transpose_b": None, "conv 3x3": None,
}
TARGET_ELEMENT = 300
TARGET_MADD = 7


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


def matmul(trans, k):
    # 4 rows (one row tile) × 8 columns; K varies: per multiply-add = Δsteps / (32·ΔK)
    return lambda kk: ("matmul", [fx((4, kk)), fx((8, kk) if trans else (kk, 8))],
                       {"frac": 16, "transpose_b": trans}, [1 << 16, 1 << 16])


def conv(cin):
    return lambda c: ("conv", [fx((1, c, 6, 6)), fx((4, c, 3, 3))],
                      {"group": 1, "strides": [1, 1], "dilations": [1, 1], "pads": [1, 1, 1, 1], "frac": 16},
                      [1 << 16, 1 << 16])


def measurements() -> dict[str, float]:
    out = {}
    for kind in UNARY:
        out[kind] = per_element(unary(kind), 64)
    for row in (32, 128):
        out[f"softmax (row {row})"] = per_element(softmax(row), 2 * row)
    out["layer norm (row 64)"] = per_element(norm("layer", 64), 128)
    out["rms norm (row 64)"] = per_element(norm("rms", 64), 128)
    out["matmul"] = per_element(matmul(False, 0), 64) / 32
    out["matmul transpose_b"] = per_element(matmul(True, 0), 64) / 32
    out["conv 3x3"] = per_element(conv(0), 8) / (4 * 36 * 9)
    return out


def demo_wall_time() -> float:
    """`opmlc demo` (the digits MLP, a lying server, the whole dispute on the embedded chain)."""
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "opmlc.cli", "demo", "--json"], check=True,
                   cwd=Path(__file__).resolve().parent.parent, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-demo", action="store_true", help="skip the digits-MLP demo timing")
    args = parser.parse_args()
    print(f"{'kernel':24} {'before':>10} {'now':>10}  target")
    for name, v in measurements().items():
        ref = REFERENCE.get(name)
        madd = name.startswith(("matmul", "conv"))
        target = f"≤ {TARGET_MADD}/madd" if madd else f"≤ {TARGET_ELEMENT}/elem"
        ok = v <= (TARGET_MADD if madd else TARGET_ELEMENT)
        print(f"{name:24} {'' if ref is None else f'{ref:10.1f}':>10} {v:10.1f}  {target} {'ok' if ok else 'MISSED'}")
    if not args.no_demo:
        print(f"digits-MLP demo wall time: {demo_wall_time():.2f} s")


if __name__ == "__main__":
    main()
