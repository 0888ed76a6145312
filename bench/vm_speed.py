"""VM speed in instructions per second: the fast `run`, the reference `step`, `step_with_proof`.

    python bench/vm_speed.py [ELF] [--node K] [--max-steps N]

Without an ELF it runs a built-in hand-assembled program shaped like compiled model code
(fixed-point dot products with madd, loads, stores, a call per row: vm.asm.demo_program).
With one (e.g. build/digits/model.elf) it runs that task with empty input regions, which costs
the same instructions as real inputs for a fixed-point model. The reference is the issue's
target of 1M instructions/s for `run`; `step` and `step_with_proof` are shown for scale
(a dispute proves one step, so their speed matters only for tests and checkpoints).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from vm import asm  # noqa: E402
from vm.loader import WHOLE_GRAPH, initial_state  # noqa: E402
from vm.run import run  # noqa: E402
from vm.step import step  # noqa: E402
from vm.witness import step_with_proof  # noqa: E402

TARGET = 1_000_000  # instructions/s for `run` (issue 4)


def timed(fn) -> tuple[int, float]:
    t0 = time.perf_counter()
    n = fn()
    return n, time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("elf", nargs="?", help="a model.elf (default: the built-in loop program)")
    parser.add_argument("--node", type=int, default=WHOLE_GRAPH, help="task node (default: all)")
    parser.add_argument("--max-steps", type=int, default=20_000_000)
    args = parser.parse_args()

    if args.elf:
        elf: bytes | str = args.elf
        name = args.elf
    else:
        elf = asm.demo_program(vectors=16, length=256, repeat=100)
        name = "built-in dot-product loop (16 x 256, 100 times)"

    state = initial_state(elf, args.node)
    n_run, t_run = timed(lambda: run(state, args.max_steps))
    outcome = f"exit code {state.exit_code}" if state.exited else "step limit"
    state = initial_state(elf, args.node)  # blocks already compiled: a bisection's re-runs
    n_warm, t_warm = timed(lambda: run(state, args.max_steps))

    sample = min(n_run, 200_000)
    state = initial_state(elf, args.node)

    def stepping() -> int:
        for _ in range(sample):
            step(state)
        return sample

    n_step, t_step = timed(stepping)

    proofs = min(n_run, 3_000)
    state = initial_state(elf, args.node)
    run(state, max(0, n_run // 2 - proofs // 2))  # prove steps from the middle of the run

    def proving() -> int:
        for _ in range(proofs):
            step_with_proof(state)
        return proofs

    n_proof, t_proof = timed(proving)

    print(f"program: {name}; {n_run} instructions ({outcome})")
    print(f"{'mode':<24}{'instructions':>14}{'seconds':>10}{'instr/s':>14}{'vs 1M/s':>10}")
    for mode, n, t in [
        ("run (fast, no proofs)", n_run, t_run),
        ("run again (compiled)", n_warm, t_warm),
        ("step (reference)", n_step, t_step),
        ("step_with_proof", n_proof, t_proof),
    ]:
        rate = n / t if t > 0 else float("inf")
        print(f"{mode:<24}{n:>14,}{t:>10.3f}{rate:>14,.0f}{rate / TARGET:>9.2f}x")


if __name__ == "__main__":
    main()
