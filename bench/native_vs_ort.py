"""Native inference time against onnxruntime (float32, CPU) on the same ONNX model.

Run: `python bench/native_vs_ort.py`. For the digits MLP (64-32-10) and a 784-512-512-10 MLP
(random weights, models/make_mlp784.py), at batch 1 and 64, it prints the median time per
inference of opmlc's native build (quantize the input, run the compiled task, read the output)
and of onnxruntime's session.run, and their ratio. Target: native within 2x of onnxruntime on
the larger MLP.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from models.make_mlp784 import build as build_mlp784  # noqa: E402
from opmlc.backend.codegen import WHOLE_GRAPH  # noqa: E402
from opmlc.backend.native import native_program, task_table, value_buffers  # noqa: E402
from opmlc.frontend import lower_model  # noqa: E402
from opmlc.ir.fixedpoint import quantize  # noqa: E402


def median_time(fn, min_seconds: float = 0.5, min_reps: int = 20) -> float:
    fn()
    times, start = [], time.perf_counter()
    while len(times) < min_reps or time.perf_counter() - start < min_seconds:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def bench(model: Path, batch: int, features: int) -> tuple[float, float]:
    x = np.random.default_rng(0).random((batch, features), dtype=np.float32)
    graph = lower_model(model, input_shapes={"input": (batch, features)}).graph
    program = native_program(graph)
    bufs = value_buffers(graph, dict(graph.initializers))
    table, _counts = task_table(graph, bufs)  # the program counts saturation into _counts
    in_buf, out_buf = bufs[graph.inputs[0]], bufs[graph.outputs[0]]
    frac = graph.values[graph.inputs[0]].type.frac

    def native():
        in_buf[...] = quantize(x, frac)
        program.task(table, WHOLE_GRAPH)
        return out_buf.copy()

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1  # one core each: opmlc's native build is single-threaded
    sess = ort.InferenceSession(str(model), opts, providers=["CPUExecutionProvider"])
    return median_time(native), median_time(lambda: sess.run(None, {"input": x}))


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        models = [("digits MLP 64-32-10", ROOT / "models" / "digits_mlp.onnx", 64),
                  ("MLP 784-512-512-10", build_mlp784(Path(tmp) / "mlp784.onnx"), 784)]
        print("reference: onnxruntime float32, CPUExecutionProvider, 1 thread")
        print(f"{'model':<22} {'batch':>5} {'opmlc native':>14} {'onnxruntime':>13} {'ratio':>7}")
        for name, path, features in models:
            for batch in (1, 64):
                nat, ref = bench(path, batch, features)
                print(f"{name:<22} {batch:>5} {nat * 1e6:>11.1f} us {ref * 1e6:>10.1f} us {nat / ref:>6.2f}x")


if __name__ == "__main__":
    main()
