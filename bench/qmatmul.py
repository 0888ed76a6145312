"""Quantized-weight products against onnxruntime's MatMulNBits, measured side by side.

Run: `python bench/qmatmul.py [--threads 1 2] [--runs 30] [--rows 1,32] [--shapes 2048x5632,...]
[--clock wall|cpu] [--vm]`.

For x [M, K] @ W [K, N] (a float MatMul with random weights, made here), at M = 1 (a token
decoding: the matrix-vector product, bound by reading the weights) and M = 32 (a prompt: bound
by arithmetic), it times

- opmlc: the model compiled with `weights="int8"` (per output channel, opmlc's default) and
  `weights="int4"` (blocks of 32), one `opmlc.run(build, [x], backend="native", threads=T)` call;
  on a host with AVX-512 VNNI once with the byte-plane kernel (kernels/native/qmatmul_vnni.py)
  and once with the double / i64 lane kernel it replaced (kernels/native/qmatmul.py, `lanes`),
  so the before/after pair is measured in one process;
- onnxruntime (CPUExecutionProvider, intra_op_num_threads = T): MatMulNBits with 8- and 4-bit
  weights (its MatMulNBitsQuantizer, blocks of 32, symmetric), and the float32 MatMul.

Each figure is the minimum over --runs calls, the contenders' calls interleaved (the machine is
shared: interleaving exposes all of them to the same load, and the minimum is the least
disturbed); ratios are opmlc / MatMulNBits of the same bit width. With all four shapes measured it
adds up one TinyLlama-1.1B decoding step's projections (22 layers × q, k, v, o, gate, up, down at
M = 1; new4/ort4 = opmlc int4 / MatMulNBits 4-bit; the lm_head, attention and norms are left out). With --vm it also prints MIPS
steps per multiply-add in the VM (K = 256, N = 32) for the fx32 matmul and the q-kernels.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import opmlc  # noqa: E402
from opmlc.backend.kernels.native import qmatmul_vnni  # noqa: E402

SHAPES = [(2048, 2048), (2048, 256), (2048, 5632), (5632, 2048)]  # (K, N): LLaMA-1.1B's projections
# one TinyLlama-1.1B decoder layer: q, o (2048 × 2048), k, v (2048 → 256), gate, up, down
LAYER = {(2048, 2048): 2, (2048, 256): 2, (2048, 5632): 2, (5632, 2048): 1}
LAYERS = 22

def float_model(path: Path, k: int, n: int, m: int) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = (np.random.default_rng(0).normal(0, 1, (k, n)) / np.sqrt(k)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], "mm",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [m, k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [m, n])], [numpy_helper.from_array(w, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def nbits_model(src: Path, bits: int) -> Path:
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    logging.getLogger("onnxruntime.quantization").setLevel(logging.WARNING)
    q = MatMulNBitsQuantizer(onnx.load(str(src)), bits=bits, block_size=32, is_symmetric=True)
    q.process()
    out = src.with_name(f"{src.stem}-nbits{bits}.onnx")
    q.model.save_model_to_file(str(out), use_external_data_format=False)
    return out


def ort_call(path: Path, threads: int, x: np.ndarray):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return lambda: sess.run(None, {"x": x})


def compile_with(src: Path, out: Path, kind: str, vnni: bool | None) -> Path:
    """A build whose native object was generated with (None: if the host has it) or without the
    VNNI kernel (the object is made at compile time and loaded as it is)."""
    qmatmul_vnni.ENABLED = vnni
    try:
        opmlc.compile_model(src, out, weights=kind)
    finally:
        qmatmul_vnni.ENABLED = None
    return out


def opmlc_call(build_dir: Path, threads: int, x: np.ndarray):
    build = opmlc.Build.load(build_dir)
    return lambda: opmlc.run(build, [x], backend="native", threads=threads)


def interleaved_min(calls: dict[str, object], runs: int, clock=time.perf_counter) -> dict[str, float]:
    best = dict.fromkeys(calls, float("inf"))
    for fn in calls.values():
        fn()  # warm-up
    for _ in range(runs):
        for name, fn in calls.items():
            t0 = clock()
            fn()
            best[name] = min(best[name], clock() - t0)
    return best


def vm_steps() -> None:
    """MIPS steps per multiply-add in the VM (K = 256, N = 32): fx32 matmul, i8 and i4 qmatmul."""
    from opmlc.backend.program import build_program
    from opmlc.ir.graph import GraphBuilder
    from opmlc.ir.interpreter import run_graph
    from opmlc.ir.types import DType, TensorType
    from tests.kernels.harness import run_vm

    print("VM steps per multiply-add (K = 256, N = 32, blocks of 32); ratio to fx32 matmul")
    k, n = 256, 32
    for m in (1, 4):
        ref = None
        for kind in ("fx32", "i8", "i4"):
            rng = np.random.default_rng(0)
            g = GraphBuilder(f"bench_{kind}")
            x = g.add_input("x", TensorType(DType.FX32, (m, k), 16))
            if kind == "fx32":
                w = g.add_initializer("w", rng.integers(-1000, 1000, (n, k)).astype(np.int32),
                                      TensorType(DType.FX32, (n, k), 16))
                g.mark_output(g.add_node("matmul", [x, w], {"frac": 16, "transpose_b": True}, "y"))
            else:
                dt = DType(kind)
                lo, hi = dt.int_range
                q = g.add_initializer("w", rng.integers(lo, hi, (n, k), endpoint=True).astype(np.int8),
                                      TensorType(dt, (n, k)))
                s = g.add_initializer("w/scale", rng.integers(1, 1000, (n, k // 32)).astype(np.int32),
                                      TensorType(DType.FX32, (n, k // 32), 16))
                g.mark_output(g.add_node("qmatmul", [x, q, s], {"frac": 16, "block_size": 32}, "y"))
            graph = g.build()
            xs = rng.integers(-(1 << 16), 1 << 16, (m, k)).astype(np.int32)
            state, _ = run_vm(graph, build_program(graph), run_graph(graph, [xs]))
            per_mac = state.step / (m * k * n)
            ref = ref or per_mac
            print(f"  M={m} {kind:5} {per_mac:6.2f} steps/MAC  ×{per_mac / ref:.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--shapes", default=",".join(f"{k}x{n}" for k, n in SHAPES), help="KxN,KxN,...")
    ap.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                    help="cpu: the calling thread's CPU time (time.thread_time; one thread only), which a loaded "
                         "machine's preemptions do not inflate")
    ap.add_argument("--rows", default="1,32", help="M values, comma-separated")
    ap.add_argument("--vm", action="store_true", help="also MIPS steps per multiply-add in the VM")
    args = ap.parse_args()
    if args.vm:
        vm_steps()
    shapes = [tuple(int(v) for v in s.split("x")) for s in args.shapes.split(",")]
    rows = [int(v) for v in args.rows.split(",")]
    clock = time.thread_time if args.clock == "cpu" else time.perf_counter
    if args.clock == "cpu":
        args.threads = [1]
    vnni = qmatmul_vnni.has_vnni()
    print(f"min of {args.runs} interleaved calls, ms ({args.clock} clock); opmlc.run(..., backend='native', threads=T) vs onnxruntime "
          f"intra_op_num_threads=T; VNNI {'on this host' if vnni else 'absent: lane kernel only'}")
    print(f"{'K x N':>11} {'M':>3} {'T':>2} | {'bits':>4} {'opmlc':>8} {'lanes':>8} {'MatMulNBits':>11} "
          f"{'ratio':>6} {'lanes/ort':>9} | {'ort f32':>8}")
    per_layer: dict[tuple[int, str], dict[tuple[int, int], float]] = {}
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        for k, n in shapes:
            for m in rows:
                src = float_model(tmp / f"mm{k}x{n}m{m}.onnx", k, n, m)
                nbits = {bits: nbits_model(src, bits) for bits in (8, 4)}
                builds = {}
                for bits, kind in ((8, "int8"), (4, "int4")):
                    builds[bits] = compile_with(src, tmp / f"b{k}x{n}m{m}{kind}", kind, None)
                    if vnni:
                        builds[-bits] = compile_with(src, tmp / f"b{k}x{n}m{m}{kind}-lanes", kind, False)
                x = np.random.default_rng(1).normal(size=(m, k)).astype(np.float32)
                for t in args.threads:
                    calls = {"f32": ort_call(src, t, x)}
                    for bits in (8, 4):
                        calls[f"ort{bits}"] = ort_call(nbits[bits], t, x)
                        calls[f"new{bits}"] = opmlc_call(builds[bits], t, x)
                        if vnni:
                            calls[f"old{bits}"] = opmlc_call(builds[-bits], t, x)
                    best = interleaved_min(calls, args.runs, clock)
                    if m == 1:
                        for name, v in best.items():
                            per_layer.setdefault((t, name), {})[(k, n)] = v
                    for bits in (8, 4):
                        new, ref = best[f"new{bits}"], best[f"ort{bits}"]
                        old = best.get(f"old{bits}", float("nan"))
                        print(f"{k:>5}x{n:<5} {m:>3} {t:>2} | {bits:>4} {new * 1e3:8.3f} {old * 1e3:8.3f} "
                              f"{ref * 1e3:11.3f} {new / ref:6.2f} {old / ref:9.2f} | {best['f32'] * 1e3:8.3f}",
                              flush=True)

    for t in args.threads:  # a decoding step's projections (no lm_head, no attention or norms)
        got = {name: times for (tt, name), times in per_layer.items() if tt == t and set(LAYER) <= set(times)}
        if got:
            est = {name: LAYERS * sum(c * times[s] for s, c in LAYER.items()) for name, times in got.items()}
            line = ", ".join(f"{name} {v * 1e3:.1f} ms" for name, v in est.items())
            print(f"TinyLlama-1.1B decode step, the {LAYERS} layers' 7 projections at M = 1, T = {t}: {line}; "
                  f"opmlc int4 / MatMulNBits 4-bit = {est['new4'] / est['ort4']:.2f}")


if __name__ == "__main__":
    main()
