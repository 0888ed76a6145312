"""MIPS cost of the kernels in VM steps: per element of the nonlinear ops, per multiply-add of
matmul and conv, and the digits-MLP demo's wall time.

    python bench/mips_cost.py [--no-demo] [--no-models]

Each figure is a difference of two one-node tasks run in the VM (MIPS steps are
deterministic: a count, not a timing): the steps of a node over 2n elements minus those over
n, divided by n, so the per-node overhead (prologue, a softmax's or norm's per-row work on
fixed rows) cancels. Inputs are random in a typical activation range (|x| < 8 in Q16).

The reference column is what main measured before issue 13's kernels (the same script at
commit 9e0d4d9; the q-kernels at 686dfde, where they were merged; sqrt and the i4 rows with
blocks of 32 at 57020a6, before the Karatsuba isqrt64 and the hand-written q-routines): the
nonlinear ops and binary div called the i64 software division `__divdi3` per element and
kept Q30 polynomials in 64-bit arithmetic. Targets (issue 13): ≤ 300 steps per element, ≤ 7 instructions per multiply-add;
each line says ok or above, and the command exits with status 1 when any figure is above.

The demo's wall time (last line) is one run; bench/demo_time.py times it against a reference
commit side by side (alternating runs, the minimum of each).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.kernels import cost  # noqa: E402

TARGET_ELEMENT = 300
TARGET_MADD = 7

# name → (how to measure it, steps per element / per multiply-add at 9e0d4d9, before issue 13)
FIGURES = {
    "sigmoid": (lambda: cost.per_element(cost.unary("sigmoid"), 64), 3270.5),
    "tanh": (lambda: cost.per_element(cost.unary("tanh"), 64), 1797.5),
    "exp": (lambda: cost.per_element(cost.unary("exp"), 64), 166.0),
    "erf": (lambda: cost.per_element(cost.unary("erf"), 64), 2369.0),
    "log": (lambda: cost.per_element(cost.unary("log"), 64), 1283.1),
    "div (binary, fx)": (lambda: cost.per_element(cost.binary("div"), 64), 1176.6),
    "sqrt": (lambda: cost.per_element(cost.unary("sqrt"), 64), 1072.0),
    "softmax (row 32)": (lambda: cost.per_element(cost.softmax(32), 64), 276.2),
    "softmax (row 128)": (lambda: cost.per_element(cost.softmax(128), 256), 225.8),
    "layer norm (row 64)": (lambda: cost.per_element(cost.norm("layer", 64), 128), 163.4),
    "rms norm (row 64)": (lambda: cost.per_element(cost.norm("rms", 64), 128), 143.9),
    "matmul 1x8 (b^T)": (lambda: cost.per_element(cost.matmul(1, 8, True), 64) / 8, 10.0),
    "matmul 1x8": (lambda: cost.per_element(cost.matmul(1, 8, False), 64) / 8, 10.0),
    "matmul 4x8 (b^T)": (lambda: cost.per_element(cost.matmul(4, 8, True), 64) / 32, 7.0),
    "matmul 5x9": (lambda: cost.per_element(cost.matmul(5, 9, False), 64) / 45, 7.6),
    "conv 3x3, 6x6 no pad": (lambda: cost.per_element(cost.conv(6, 0), 4) / cost.conv_madds(6, 0), 7.3),
    "conv 3x3, 6x6 pad 1": (lambda: cost.per_element(cost.conv(6, 1), 4) / cost.conv_madds(6, 1), 15.0),
    "conv 3x3, 16x16 pad 1": (lambda: cost.per_element(cost.conv(16, 1), 4) / cost.conv_madds(16, 1), 12.4),
    "qmatmul i8 1x8, block 128": (lambda: cost.qmatmul_per_madd("I8", 1, 8, 128, False), 10.2),
    "qmatmul i4 1x8, block 128": (lambda: cost.qmatmul_per_madd("I4", 1, 8, 128, False), 9.7),
    "qmatmul i8 1x8, block 32, zp": (lambda: cost.qmatmul_per_madd("I8", 1, 8, 32, True), 11.9),
    "qmatmul i8 4x8, block 128": (lambda: cost.qmatmul_per_madd("I8", 4, 8, 128, False), 7.2),
    "qmatmul i4 1x8, block 32": (lambda: cost.qmatmul_per_madd("I4", 1, 8, 32, False), 9.7),
    "qmatmul i4 1x8, block 32, zp": (lambda: cost.qmatmul_per_madd("I4", 1, 8, 32, True), 11.0),
    "qmatmul i4 4x8, block 32": (lambda: cost.qmatmul_per_madd("I4", 4, 8, 32, False), 7.7),
    "qconv i8 3x3, 6x6 pad 1": (lambda: cost.qconv_per_madd(6, 1), 14.9),
    "qconv i8 3x3, 16x16 pad 1": (lambda: cost.qconv_per_madd(16, 1), 12.4),
}


# whole-graph VM steps of the example models on the demo's default input, at 9e0d4d9
MODEL_STEPS_BEFORE = {"digits_mlp": 25_431, "digits_cnn": 97_425, "tiny_llama": 75_060_889, "tiny_gpt2": 118_078_354}


def model_steps(name: str) -> int:
    """Whole-graph VM steps of models/<name>.onnx on the demo's default input."""
    import tempfile

    from opmlc.api import run
    from opmlc.artifact import compile_model
    from opmlc.dispute.demo import default_input

    with tempfile.TemporaryDirectory() as d:
        build = compile_model(ROOT / "models" / f"{name}.onnx", Path(d) / "build")
        return run(build, default_input(build), backend="vm").extra["steps"]


def demo_wall_time() -> float:
    """`opmlc demo` (the digits MLP, a lying server, the whole dispute on the embedded chain)."""
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "opmlc.cli", "demo", "--json"], check=True,
                   cwd=ROOT, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-demo", action="store_true", help="skip the digits-MLP demo timing")
    parser.add_argument("--no-models", action="store_true", help="skip the example models' whole-graph steps")
    args = parser.parse_args()
    print(f"{'MIPS steps':30} {'before':>8} {'now':>8}  target")
    above = []
    for name, (measure, before) in FIGURES.items():
        v = measure()
        madd = name.startswith(("matmul", "conv", "qmatmul", "qconv"))
        limit = TARGET_MADD if madd else TARGET_ELEMENT
        unit = "per multiply-add" if madd else "per element"
        verdict = "ok" if v <= limit else "above"
        if v > limit:
            above.append(name)
        print(f"{name:30} {before:8.1f} {v:8.1f}  ≤ {limit} {unit}: {verdict}", flush=True)
    if not args.no_models:
        print(f"{'whole-graph VM steps':30} {'before':>12} {'now':>12}")
        for name, before in MODEL_STEPS_BEFORE.items():
            print(f"{name:30} {before:12,} {model_steps(name):12,}", flush=True)
    if not args.no_demo:
        print(f"digits-MLP demo (`opmlc demo`) wall time: {demo_wall_time():.2f} s")
    if above:
        sys.exit(f"above issue 13's targets: {', '.join(above)}")


if __name__ == "__main__":
    main()
