"""Quantized-weight products against the fx32 matmul they replace, measured side by side.

Run: `python bench/qmatmul.py`. For x [M, K] @ wᵀ with w [N, K] (random values) it prints, for
the fx32 `matmul` (the reference) and `qmatmul` with i8 and i4 weights (blocks of 32):
MIPS steps per multiply-add in the VM (K = 256, N = 32, M = 1 and 4) and the native kernel's
median time (M = 1 and 8, K = N = 2048, the compiled task run on buffers already in place),
each with its ratio to the fx32 figure. The weight bytes each needs are printed too.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.native_vs_ort import median_time  # noqa: E402
from opmlc.backend.codegen import WHOLE_GRAPH  # noqa: E402
from opmlc.backend.native import native_program, task_table, value_buffers  # noqa: E402
from opmlc.backend.program import build_program  # noqa: E402
from opmlc.ir.graph import Graph, GraphBuilder  # noqa: E402
from opmlc.ir.interpreter import run_graph  # noqa: E402
from opmlc.ir.types import DType, TensorType  # noqa: E402
from tests.kernels.harness import run_vm  # noqa: E402

KINDS = ("fx32", "i8", "i4")
BLOCK = 32


def product_graph(kind: str, m: int, k: int, n: int) -> tuple[Graph, np.ndarray]:
    rng = np.random.default_rng(0)
    g = GraphBuilder(f"bench_{kind}")
    x = g.add_input("x", TensorType(DType.FX32, (m, k), 16))
    if kind == "fx32":
        w = g.add_initializer("w", rng.integers(-1000, 1000, (n, k)).astype(np.int32), TensorType(DType.FX32, (n, k), 16))
        g.mark_output(g.add_node("matmul", [x, w], {"frac": 16, "transpose_b": True}, "y"))
    else:
        dt = DType(kind)
        lo, hi = dt.int_range
        q = g.add_initializer("w", rng.integers(lo, hi, (n, k), endpoint=True).astype(np.int8), TensorType(dt, (n, k)))
        nb = -(-k // BLOCK)
        s = g.add_initializer("w/scale", rng.integers(1, 1000, (n, nb)).astype(np.int32),
                              TensorType(DType.FX32, (n, nb), 16))
        g.mark_output(g.add_node("qmatmul", [x, q, s], {"frac": 16, "block_size": BLOCK}, "y"))
    return g.build(), rng.integers(-(1 << 16), 1 << 16, (m, k)).astype(np.int32)


def main() -> None:
    print("VM steps per multiply-add (K = 256, N = 32); ratio to fx32 matmul")
    for m in (1, 4):
        ref = None
        for kind in KINDS:
            g, x = product_graph(kind, m, 256, 32)
            state, _ = run_vm(g, build_program(g), run_graph(g, [x]))
            per_mac = state.step / (m * 256 * 32)
            ref = ref or per_mac
            print(f"  M={m} {kind:5} {per_mac:6.2f} steps/MAC  ×{per_mac / ref:.2f}")
    print("native kernel, K = N = 2048 (median of ≥ 20 runs, ≥ 0.5 s); ratio to fx32 matmul")
    for m in (1, 8):
        ref = None
        for kind in KINDS:
            g, x = product_graph(kind, m, 2048, 2048)
            prog = native_program(g)
            known = {**g.initializers, g.inputs[0]: x}
            bufs = value_buffers(g, known)
            table, _ = task_table(g, bufs)
            t = median_time(lambda prog=prog, table=table: prog.task(table, WHOLE_GRAPH), 0.5, 20)
            ref = ref or t
            wbytes = sum(g.values[v].type.nbytes for v in g.initializers)
            print(f"  M={m} {kind:5} {t * 1e3:7.2f} ms  ×{t / ref:.2f}  ({m * 2048 * 2048 / t / 1e9:.2f} GMAC/s, "
                  f"weights {wbytes / 2**20:.2f} MiB)")


if __name__ == "__main__":
    main()
