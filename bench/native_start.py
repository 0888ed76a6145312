"""The native build ahead of time: how fast `opmlc run --backend native` starts after `opmlc
compile`, and what one `opmlc.run` call costs against onnxruntime.

Run: `python bench/native_start.py [--skip-jit]`. It makes the 27.5M-parameter LLaMA shape of
issue 12 (models/tiny_decoders.build_llama with d 512, 8 heads, 8 layers, MLP 1536, vocab 256,
context 32; random weights, torch seed 0; torch's CPU build), compiles it with `opmlc compile`,
then prints

- the wall and CPU time of `opmlc run BUILD --input TOKENS --backend native` in fresh processes
  right after compile (the build's object and mapped weights; target < 1 s), with the process's
  peak RSS, against the same run of the same build without its native/ directory and with an
  empty JIT cache: what every first run cost before (a full hash of the weights, then the
  optimizer and code generation);
- the median time of one `opmlc.run(build, [x], backend="native")` call on a loaded build (the
  session kept by the build: input copy, kernels, output copy) against one call of the earlier
  API path (fresh buffers, every weight copied in: backend.native.run_native), and against
  onnxruntime float32 (CPUExecutionProvider), each at 1 and at 2 threads (`threads=`).

Python writes bytecode in the child processes (PYTHONDONTWRITEBYTECODE is dropped), as in an
ordinary install: the first process of a session compiles opmlc's sources, the timed ones do not.
On a shared machine the CPU time (user + sys) is the steadier figure.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.native_vs_ort import median_time  # noqa: E402

SHAPE = {"d": 512, "heads": 8, "layers": 8, "hidden": 1536}


def make_model(path: Path) -> int:
    import torch

    from models.tiny_decoders import build_llama, export

    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = build_llama(**SHAPE)
    export(model, path)
    return sum(p.numel() for p in model.parameters())


# Runs a module as `python -m` would, then prints the process's peak RSS (VmHWM: its own, which
# ru_maxrss is not: that is inherited across fork and exec from this large parent process).
WRAP = ("import atexit, runpy, sys\n"
        "atexit.register(lambda: print(next(l for l in open('/proc/self/status') if l.startswith('VmHWM')),"
        " file=sys.stderr))\n"
        "sys.argv = sys.argv[1:]\n"
        "if sys.argv[0] != '-': runpy.run_module(sys.argv[0], run_name='__main__', alter_sys=True)\n")


def timed(module: str, args: list[str], env: dict) -> tuple[float, float, float]:
    """Wall seconds, CPU seconds (user + sys) and peak RSS (MiB) of `python -m module args`
    (module "-": the wrapper alone, i.e. `import opmlc.cli`)."""
    cmd = [sys.executable, "-c", WRAP if module != "-" else "import opmlc.cli\n" + WRAP, module, *args]
    with tempfile.TemporaryFile() as out:
        t0 = time.perf_counter()
        p = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        _, status, ru = os.wait4(p.pid, 0)
        wall = time.perf_counter() - t0
        out.seek(0)
        text = out.read().decode(errors="replace")
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit(f"{module} {' '.join(args)} failed:\n{text[-2000:]}")
    hwm = [line for line in text.splitlines() if line.startswith("VmHWM")]
    return wall, ru.ru_utime + ru.ru_stime, int(hwm[-1].split()[1]) / 1024 if hwm else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--skip-jit", action="store_true", help="skip the run without native/ (a minute or more)")
    ap.add_argument("--runs", type=int, default=3, help="fresh `opmlc run` processes to time (default 3)")
    args = ap.parse_args()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        env["OPMLC_CACHE_DIR"] = str(tmp / "jit-cache")  # empty: compile cannot reuse an earlier object
        model = tmp / "llama27.onnx"
        n = make_model(model)
        print(f"model: LLaMA shape d {SHAPE['d']}, {SHAPE['layers']} layers, MLP {SHAPE['hidden']}: {n / 1e6:.1f}M "
              f"parameters, {model.stat().st_size / 2**20:.0f} MiB of ONNX")
        build = tmp / "build"
        wall, cpu, rss = timed("opmlc.cli", ["compile", str(model), "-o", str(build)], env)
        print(f"opmlc compile: {wall:.1f} s wall, {cpu:.1f} s CPU, peak RSS {rss:.0f} MiB (includes the native object)")
        tokens = tmp / "tokens.npy"
        np.save(tokens, (np.arange(32) * 7 % 256).reshape(1, 32))
        run = ["run", str(build), "--input", str(tokens), "--backend", "native", "--json"]
        figures = [timed("opmlc.cli", run, env) for _ in range(args.runs)]
        walls, cpus = sorted(f[0] for f in figures), sorted(f[1] for f in figures)
        print(f"opmlc run --backend native, fresh process, ahead of time: wall min {walls[0]:.2f} s median "
              f"{walls[len(walls) // 2]:.2f} s, CPU min {cpus[0]:.2f} s, peak RSS {max(f[2] for f in figures):.0f} MiB "
              f"(target < 1 s)")
        wall, cpu, rss = timed("-", [], env)
        print(f"  of which `import opmlc.cli` alone: wall {wall:.2f} s, CPU {cpu:.2f} s, peak RSS {rss:.0f} MiB")
        if not args.skip_jit:
            bare = tmp / "bare"
            shutil.copytree(build, bare, ignore=shutil.ignore_patterns("native"))
            # a cache of its own: compile left its object in env's (the JIT would find it there)
            cold = {**env, "OPMLC_CACHE_DIR": str(tmp / "empty-cache")}
            wall, cpu, rss = timed("opmlc.cli", [run[0], str(bare), *run[2:]], cold)
            print(f"the same without native/ (full check, JIT code generation): wall {wall:.1f} s, CPU {cpu:.1f} s, "
                  f"peak RSS {rss:.0f} MiB; ratio {wall / walls[len(walls) // 2]:.0f}x")
        api_figures(build, np.load(tokens), model)


def api_figures(directory: Path, x: np.ndarray, model: Path) -> None:
    import onnxruntime as ort

    import opmlc
    from opmlc.api import quantize_inputs
    from opmlc.backend.native import native_program, run_native

    build = opmlc.Build.load(directory)
    ours = {t: median_time(lambda t=t: opmlc.run(build, [x], backend="native", threads=t)) for t in (1, 2)}
    per_call = ours[1]
    g = build.graph
    program = native_program(g)
    q = quantize_inputs(build, [x])
    before = median_time(lambda: run_native(program, g, q))
    ref = {}
    for threads in (1, 2):
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        sess = ort.InferenceSession(str(model), opts, providers=["CPUExecutionProvider"])
        ref[threads] = median_time(lambda s=sess: s.run(None, {"tokens": x}))
    print(f"opmlc.run(build, [x], backend='native'): {per_call * 1e3:.1f} ms per call (the earlier path, every "
          f"weight copied per call: {before * 1e3:.1f} ms)")
    print(f"onnxruntime float32: {ref[1] * 1e3:.1f} ms at 1 thread, {ref[2] * 1e3:.1f} ms at 2 threads; "
          f"ratio opmlc / onnxruntime at 1 thread {ours[1] / ref[1]:.2f}x, at 2 threads (opmlc "
          f"{ours[2] * 1e3:.1f} ms) {ours[2] / ref[2]:.2f}x")


if __name__ == "__main__":
    main()
