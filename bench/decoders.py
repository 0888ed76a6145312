"""The tiny decoders' figures: native time per token against onnxruntime, VM steps (whole graph,
largest node), and optionally `opmlc demo`'s wall time, rounds and gas.

Run: `python bench/decoders.py [--demo]`. For models/tiny_llama.onnx and models/tiny_gpt2.onnx
(context 32, no KV cache: one next token costs one forward pass over the 32-byte window) it
prints the minimum time (of 30) of one forward pass through `opmlc.run(build, [x],
backend="native", threads=1)` and of onnxruntime's session.run (float32, CPUExecutionProvider,
one thread; bench/native_vs_ort.py has both thread counts), their ratio, then the
MIPS steps of the whole-graph task and of the node with the most steps (each node run as its own
task in the VM on the interpreter's operands) and the VM's wall time. With --demo, it also runs
`opmlc demo` with the server lying about the first attention softmax.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.native_vs_ort import min_median, ort_session  # noqa: E402
from models.tiny_decoders import CONTEXT, held_out_windows  # noqa: E402
from opmlc.artifact import compile_model  # noqa: E402
from opmlc.backend.program import build_program  # noqa: E402
from opmlc.ir.interpreter import run_graph  # noqa: E402
from tests.kernels.harness import run_vm  # noqa: E402

MODELS = ("tiny_llama", "tiny_gpt2")


def native_vs_ort(path: Path, build, x: np.ndarray, threads: int = 1) -> tuple[float, float]:
    """Minimum times of one `opmlc.run(build, [x], backend="native", threads=...)` and of one
    onnxruntime session.run at the same number of threads (bench/native_vs_ort.py's method)."""
    import opmlc

    sess = ort_session(path, threads)
    nat = min_median(lambda: opmlc.run(build, [x], backend="native", threads=threads), 30)[0]
    return nat, min_median(lambda: sess.run(None, {"tokens": x}), 30)[0]


def vm_steps(build, x: np.ndarray) -> tuple[int, float, int, int, str]:
    g = build.graph
    program = build_program(g)
    values = run_graph(g, [x])
    t0 = time.perf_counter()
    state, _ = run_vm(g, program, values, max_steps=1 << 34)
    whole_s = time.perf_counter() - t0
    per_node = [run_vm(g, program, values, node=k, max_steps=1 << 34)[0].step for k in range(len(g.nodes))]
    k = int(np.argmax(per_node))
    return state.step, whole_s, per_node[k], k, f"{g.nodes[k].op} {g.values[g.nodes[k].output].name}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--demo", action="store_true", help="also run `opmlc demo` on tiny_llama (lie at the attention softmax)")
    args = ap.parse_args()
    x = held_out_windows(1, seed=7)[:, :CONTEXT]
    print("reference: onnxruntime float32, CPUExecutionProvider, 1 thread (opmlc.run threads=1), min of 30; "
          "one token = one forward pass over 32 bytes")
    with tempfile.TemporaryDirectory() as tmp:
        for name in MODELS:
            path = ROOT / "models" / f"{name}.onnx"
            build = compile_model(path, Path(tmp) / name)
            nat, ref = native_vs_ort(path, build, x)
            print(f"{name}: native {nat * 1e3:.3f} ms/token, onnxruntime {ref * 1e3:.3f} ms/token, ratio {nat / ref:.2f}x")
            steps, secs, node_steps, k, what = vm_steps(build, x)
            print(f"{name}: VM whole graph {steps:,} steps in {secs:.1f} s ({steps / secs / 1e6:.1f} M steps/s); "
                  f"{len(build.graph.nodes)} nodes, largest node {k} ({what}) {node_steps:,} steps")
    if args.demo:
        from opmlc.dispute.demo import run_demo

        doc = run_demo(ROOT / "models" / "tiny_llama.onnx", "server", None, 29)
        print(f"demo tiny_llama, lie at node 29 (attention softmax): winner {doc['winner']}, rounds "
              f"{doc['rounds_phase1']} + {doc['rounds_phase2']}, gas {doc['gas_total']:,}, "
              f"VM steps {doc['vm_steps']:,}, wall {doc['seconds']} s")


if __name__ == "__main__":
    main()
