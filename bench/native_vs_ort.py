"""opmlc's native build against onnxruntime on the same models, at the same thread counts.

Run: `python bench/native_vs_ort.py [--threads 1 2] [--runs 30] [--only mlp,decoders,cnn,llama27]`.

Every opmlc figure is one `opmlc.run(build, [x], backend="native", threads=T)` call on a loaded
build (the public API: input quantization, the input copy, the kernels, the output copy, the
RunResult), every reference one `InferenceSession.run` of onnxruntime's CPUExecutionProvider
with `intra_op_num_threads = T` (and inter-op 1) on the float32 ONNX file the build was compiled
from. The calls are interleaved — each round calls opmlc and every reference once, in turn — and
each figure is the minimum over --runs rounds after a warm-up (the machine is shared: the
minimum is the figure least disturbed by other processes, and interleaving lets a busy moment
hit both sides alike; the median is printed beside it). At T > 1 each timed call follows 60 ms
of untimed calls of the same runtime (`SETTLE`): both runtimes' worker threads keep spinning
for a while after a call, which would take the core the other's next call needs. The ratio is
opmlc / onnxruntime of the minima. The header prints the load average. `--clock cpu` times one thread by
the calling thread's CPU time instead (both run their kernels on the calling thread at T = 1),
which a loaded machine's preemptions do not inflate.

Models (random weights, made by scripts; none is committed):
- `mlp`: the 784-512-512-10 MLP (models/make_mlp784.py) at batch 1 and 64, at batch 64 also
  compiled with `weights="int8"` (against float32 and onnxruntime's dynamic int8 quantization
  of the same model: MatMulNBits takes no Gemm), and the digits MLP;
- `decoders`: models/tiny_llama.onnx and models/tiny_gpt2.onnx, one forward pass over 32 bytes;
- `llama27`: the 27.5M-parameter LLaMA shape of bench/native_start.py (needs torch), compiled
  with `weights="int8"` (per-channel 8-bit weights), against onnxruntime float32 and against
  onnxruntime on the same model with 8-bit MatMulNBits weights (onnxruntime's
  MatMulNBitsQuantizer, block 32, symmetric).

- `cnn`: the CIFAR-shaped CNN of models/make_cnn32.py (3×3 convolutions of 32–128 channels),
  one image and a batch of 8, one image with `weights="int8"` (against float32 and onnxruntime's
  dynamic int8 quantization: ConvInteger), one depthwise and one grouped 3×3 layer of 64
  channels (`build_grouped`), and the digits CNN (one input channel: the depthwise path).
- `matvec4`: one token through a 2048 → 5632 projection (LLaMA-1.1B's MLP shape) with 4-bit
  weights in blocks of 32 (`weights="int4"`), against onnxruntime float32 and onnxruntime's
  4-bit MatMulNBits (block 32, symmetric): the memory-bound decoding path.

Targets (issue 15, ratio at the same threads): MLP ≤ 1.0 at batch 1 and ≤ 1.5 at batch 64; the
tiny decoders ≤ 1.0; the 27.5M shape with 8-bit weights ≤ 0.8 (against float32).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import opmlc  # noqa: E402


def median_time(fn, min_seconds: float = 0.5, min_reps: int = 20) -> float:
    """The median of repeated calls (kept for the other bench scripts)."""
    fn()
    times, start = [], time.perf_counter()
    while len(times) < min_reps or time.perf_counter() - start < min_seconds:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


CLOCK = time.perf_counter  # --clock cpu: time.thread_time (module docstring)


def min_median(fn, runs: int) -> tuple[float, float]:
    fn()
    times = []
    for _ in range(runs):
        t0 = CLOCK()
        fn()
        times.append(CLOCK() - t0)
    return min(times), float(np.median(times))


def ort_session(model: Path, threads: int) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(model), opts, providers=["CPUExecutionProvider"])


def fmt(t: tuple[float, float]) -> str:
    return f"{t[0] * 1e3:8.3f} ms ({t[1] * 1e3:7.3f})"


SETTLE = 0.06  # s of untimed calls before each timed one at more than one thread (`interleaved`)


def interleaved(fns: list, runs: int, settle: float = 0.0) -> list[tuple[float, float]]:
    """(min, median) of each function, timed in turn in every round (one timed call of each per
    round, after a warm-up call each), so that a busy moment of the shared machine hits all
    alike. With `settle` > 0, each timed call follows untimed calls of the same function for
    that many seconds: at more than one thread both runtimes keep their workers spinning for a
    while after a call (onnxruntime's pool, opmlc's crew: backend/team.py), which takes the core
    the other's next call needs — alternating single calls measured each side slowed by the
    other's spinning (a 0.26 ms 2-thread MLP call of opmlc took 3.3 ms at the median)."""
    for fn in fns:
        fn()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(runs):
        for fn, ts in zip(fns, times, strict=True):
            end = time.perf_counter() + settle
            while time.perf_counter() < end:
                fn()
            t0 = CLOCK()
            fn()
            ts.append(CLOCK() - t0)
    return [(min(ts), float(np.median(ts))) for ts in times]


def compare(name: str, build: opmlc.Build, x: np.ndarray, refs: dict[str, Path], input_name: str,
            threads: list[int], runs: int) -> None:
    feed = {input_name: x.astype(np.int64) if x.dtype.kind in "iu" else x}
    for t in threads:
        sessions = [ort_session(path, t) for path in refs.values()]
        fns = [lambda t=t: opmlc.run(build, [x], backend="native", threads=t)]
        fns += [lambda s=sess: s.run(None, feed) for sess in sessions]
        nat, *ref_times = interleaved(fns, runs, SETTLE if t > 1 else 0.0)
        line = f"{name:<34} {t:>2}  opmlc {fmt(nat)}"
        for label, ref in zip(refs, ref_times, strict=True):
            line += f"  |  ort {label} {fmt(ref)} ratio {nat[0] / ref[0]:5.2f}x"
        print(line, flush=True)


def int8_reference(model: Path, refs: dict[str, Path]) -> None:
    """Add onnxruntime's 8-bit version of `model` to `refs`: its MatMulNBits (block 32,
    symmetric) when the quantizer takes the model's nodes (MatMul), else its dynamic int8
    quantization (per-channel weights, activations quantized at run time: MatMulInteger), which
    also takes Gemm; nothing when this onnxruntime makes neither."""
    import logging

    import onnx

    logging.getLogger("onnxruntime.quantization").setLevel(logging.WARNING)  # a line per node otherwise
    try:
        from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

        q = MatMulNBitsQuantizer(onnx.load(str(model)), bits=8, block_size=32, is_symmetric=True)
        q.process()
        if any(n.op_type == "MatMulNBits" for n in q.model.model.graph.node):
            qpath = model.with_name(f"{model.stem}-nbits8.onnx")
            q.model.save_model_to_file(str(qpath), use_external_data_format=False)
            refs["MatMulNBits 8-bit"] = qpath
            return
        from onnxruntime.quantization import (  # e.g. Gemm: not a MatMulNBits
            QuantType,
            quantize_dynamic,
        )

        qpath = model.with_name(f"{model.stem}-dynamic-int8.onnx")
        logging.disable(logging.WARNING)  # its advice to pre-process, a line per tensor
        try:
            quantize_dynamic(str(model), str(qpath), weight_type=QuantType.QInt8, per_channel=True)
        finally:
            logging.disable(logging.NOTSET)
        refs["dynamic int8"] = qpath
    except Exception as e:  # an onnxruntime without these quantizers: the float figure alone
        print(f"(no 8-bit onnxruntime reference: {type(e).__name__}: {e})")


def mlp(tmp: Path, threads: list[int], runs: int) -> None:
    from models.make_mlp784 import build as build_mlp784

    model = build_mlp784(tmp / "mlp784.onnx")
    for batch in (1, 64):
        out = tmp / f"mlp784-{batch}"
        opmlc.compile_model(model, out, input_shapes={"input": (batch, 784)})
        x = np.random.default_rng(0).random((batch, 784), dtype=np.float32)
        compare(f"MLP 784-512-512-10, batch {batch}", opmlc.Build.load(out), x, {"float32": model}, "input",
                threads, runs)
    # the same at batch 64 with 8-bit weights: s16 planes of x against one byte of weight (two
    # vpdpwssd products where the default build's 22-bit weights need three: DESIGN "figures")
    out = tmp / "mlp784-64-int8"
    opmlc.compile_model(model, out, input_shapes={"input": (64, 784)}, weights="int8")
    refs = {"float32": model}
    int8_reference(model, refs)
    x = np.random.default_rng(0).random((64, 784), dtype=np.float32)
    compare("MLP 784-512-512-10, b64, int8", opmlc.Build.load(out), x, refs, "input", threads, runs)
    digits = ROOT / "models" / "digits_mlp.onnx"
    opmlc.compile_model(digits, tmp / "digits")
    x = np.random.default_rng(0).random((1, 64), dtype=np.float32) * 16
    compare("digits MLP 64-32-10, batch 1", opmlc.Build.load(tmp / "digits"), x, {"float32": digits}, "input",
            threads, runs)


def decoders(tmp: Path, threads: list[int], runs: int) -> None:
    from models.tiny_decoders import CONTEXT, held_out_windows

    x = held_out_windows(1, seed=7)[:, :CONTEXT]
    for name in ("tiny_llama", "tiny_gpt2"):
        model = ROOT / "models" / f"{name}.onnx"
        opmlc.compile_model(model, tmp / name)
        compare(f"{name}, 32 tokens", opmlc.Build.load(tmp / name), x, {"float32": model}, "tokens", threads, runs)


def cnn(tmp: Path, threads: list[int], runs: int) -> None:
    from models.make_cnn32 import build as build_cnn32

    model = build_cnn32(tmp / "cnn32.onnx")
    for batch in (1, 8):
        out = tmp / f"cnn32-{batch}"
        opmlc.compile_model(model, out, input_shapes={"input": (batch, 3, 32, 32)})
        x = np.random.default_rng(0).random((batch, 3, 32, 32), dtype=np.float32)
        compare(f"CNN 32x32 3-32-64-64-128, batch {batch}", opmlc.Build.load(out), x, {"float32": model}, "input",
                threads, runs)
    out = tmp / "cnn32-1-int8"  # qconv: the same kernel over the dequantized 8-bit weights
    opmlc.compile_model(model, out, input_shapes={"input": (1, 3, 32, 32)}, weights="int8")
    refs = {"float32": model}
    int8_reference(model, refs)
    x = np.random.default_rng(0).random((1, 3, 32, 32), dtype=np.float32)
    compare("CNN 32x32, batch 1, int8", opmlc.Build.load(out), x, refs, "input", threads, runs)
    from models.make_cnn32 import build_grouped

    for groups, what in ((64, "depthwise"), (4, "4 groups")):
        model = build_grouped(tmp / f"conv-g{groups}.onnx", groups)
        opmlc.compile_model(model, tmp / f"conv-g{groups}")
        x = np.random.default_rng(0).random((1, 64, 32, 32), dtype=np.float32)
        compare(f"conv 3x3 64ch 32x32, {what}", opmlc.Build.load(tmp / f"conv-g{groups}"), x, {"float32": model},
                "input", threads, runs)
    digits = ROOT / "models" / "digits_cnn.onnx"
    opmlc.compile_model(digits, tmp / "digits-cnn")
    x = np.random.default_rng(0).random((1, 1, 8, 8), dtype=np.float32)
    compare("digits CNN 1-8, batch 1", opmlc.Build.load(tmp / "digits-cnn"), x, {"float32": digits}, "input",
            threads, runs)


def llama27(tmp: Path, threads: list[int], runs: int) -> None:
    from bench.native_start import SHAPE, make_model

    model = tmp / "llama27.onnx"
    n = make_model(model)
    refs = {"float32": model}
    int8_reference(model, refs)
    out = tmp / "llama27-int8"
    opmlc.compile_model(model, out, weights="int8")
    x = (np.arange(32) * 7 % 256).reshape(1, 32)
    compare(f"LLaMA d{SHAPE['d']} x{SHAPE['layers']} ({n / 1e6:.1f}M) int8", opmlc.Build.load(out), x, refs,
            "tokens", threads, runs)


def matvec4(tmp: Path, threads: list[int], runs: int) -> None:
    """One token through one LLaMA-1.1B-sized projection (2048 → 5632), 4-bit weights in blocks
    of 32: the matrix-vector product that bounds decoding by memory bandwidth."""
    import logging

    import onnx
    from onnx import TensorProto, helper, numpy_helper
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    logging.getLogger("onnxruntime.quantization").setLevel(logging.WARNING)
    k, n = 2048, 5632
    w = (np.random.default_rng(0).normal(0, 1, (k, n)) / np.sqrt(k)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], "matvec",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, n])], [numpy_helper.from_array(w, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp / "matvec.onnx"
    onnx.save(model, path)
    q = MatMulNBitsQuantizer(onnx.load(str(path)), bits=4, block_size=32, is_symmetric=True)
    q.process()
    qpath = tmp / "matvec-nbits4.onnx"
    q.model.save_model_to_file(str(qpath), use_external_data_format=False)
    out = tmp / "matvec-int4"
    opmlc.compile_model(path, out, weights="int4")
    x = np.random.default_rng(1).normal(size=(1, k)).astype(np.float32)
    compare(f"matvec {k}x{n} int4 (1 token)", opmlc.Build.load(out), x,
            {"float32": path, "MatMulNBits 4-bit": qpath}, "x", threads, runs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--runs", type=int, default=30, help="timed calls per figure (the minimum is reported)")
    ap.add_argument("--only", default="mlp,decoders,cnn,matvec4,llama27",
                    help="comma-separated: mlp, decoders, cnn, matvec4, llama27")
    ap.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                    help="cpu: the calling thread's CPU time (time.thread_time), for one thread on a loaded machine")
    args = ap.parse_args()
    if args.clock == "cpu":
        global CLOCK
        CLOCK = time.thread_time
        args.threads = [1]
    print("opmlc: opmlc.run(build, [x], backend='native', threads=T); reference: onnxruntime "
          f"{ort.__version__} CPUExecutionProvider, intra_op_num_threads=T; min of {args.runs} interleaved calls "
          f"(median); load average {' '.join(f'{v:.1f}' for v in os.getloadavg())} on {os.cpu_count()} CPUs")
    print(f"{'model':<34} {'T':>2}")
    with tempfile.TemporaryDirectory() as tmp:
        for part in args.only.split(","):
            {"mlp": mlp, "decoders": decoders, "cnn": cnn, "llama27": llama27, "matvec4": matvec4}[part](
                Path(tmp), args.threads, args.runs)


if __name__ == "__main__":
    main()
