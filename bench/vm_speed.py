"""VM speed in instructions per second: the fast `run`, the reference `step`, `step_with_proof`.

    python bench/vm_speed.py [BUILD | BUILD/model.elf] [--node K [--part J]] [--max-steps N]

Without a build it runs a built-in hand-assembled program shaped like compiled model code
(fixed-point dot products with madd, loads, stores, a call per row: vm.asm.demo_program).
With one (`opmlc compile MODEL -o BUILD`; the ELF must sit in its build directory, whose
manifest holds the task maps) it runs that build's whole-graph task, or node K's (part J's), as
`opmlc run --backend vm` / `opmlc prove` would: the task descriptor carries the node index and
the task's region table (docs/DESIGN.md "Per-task memory maps"), and the task's operands (the
weights, and an all-zero input or the interpreter's values before node K) are spliced into
their regions. The reference is the issue's target of 1M instructions/s for `run`; `step` and
`step_with_proof` are shown for scale (a dispute proves one step, so their speed matters only
for tests and checkpoints).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from vm import asm  # noqa: E402
from vm.loader import initial_state  # noqa: E402
from vm.run import run  # noqa: E402
from vm.state import State  # noqa: E402
from vm.step import step  # noqa: E402
from vm.witness import step_with_proof  # noqa: E402

TARGET = 1_000_000  # instructions/s for `run` (issue 4)


def timed(fn) -> tuple[int, float]:
    t0 = time.perf_counter()
    n = fn()
    return n, time.perf_counter() - t0


def build_task(path: str, node: int | None, part: int | None) -> tuple[Callable[[], State], str]:
    """A fresh initial state of the build's task (its map in the descriptor, its operands
    spliced), as often as asked, and the task's name."""
    from opmlc import tasks
    from opmlc.artifact import Build
    from opmlc.errors import OpmlcError

    directory = Path(path)
    if directory.is_file():  # a model.elf: its build is the directory it sits in
        directory = directory.parent
    try:
        build = Build.load(directory)
        graph = build.graph
        tasks.check_node(build, node)
        inputs = [np.zeros(graph.values[v].type.shape, graph.values[v].type.dtype.numpy) for v in graph.inputs]
        values = tasks.honest_values(build, inputs, 0 if node is None else node)  # the task's operands
        program = tasks.program_of(build)
        tasks.initial_state(build, values, node, program, part)  # a bad --node/--part fails here
    except OpmlcError as exc:
        print(f"vm_speed: {exc}", file=sys.stderr)
        sys.exit(2)
    task = "whole graph" if node is None else f"node {node}" + (f", part {part}" if part is not None else "")
    return (lambda: tasks.initial_state(build, values, node, program, part)), f"{directory} ({task}, zero inputs)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("build", nargs="?", help="a build directory or its model.elf (default: the built-in "
                        "loop program)")
    parser.add_argument("--node", type=int, default=None, help="run node K's task (default: the whole graph)")
    parser.add_argument("--part", type=int, default=None, help="with --node: part J of a split node")
    parser.add_argument("--max-steps", type=int, default=20_000_000)
    args = parser.parse_args()
    if args.part is not None and args.node is None:
        parser.error("--part needs --node")

    if args.build:
        fresh, name = build_task(args.build, args.node, args.part)
    else:
        if args.node is not None:
            parser.error("--node needs a build")
        elf = asm.demo_program(vectors=16, length=256, repeat=100)
        name = "built-in dot-product loop (16 x 256, 100 times)"

        def fresh() -> State:
            return initial_state(elf)

    state = fresh()
    n_run, t_run = timed(lambda: run(state, args.max_steps))
    outcome = f"exit code {state.exit_code}" if state.exited else "step limit"
    state = fresh()  # blocks already compiled: a bisection's re-runs
    n_warm, t_warm = timed(lambda: run(state, args.max_steps))

    sample = min(n_run, 200_000)
    state = fresh()

    def stepping() -> int:
        for _ in range(sample):
            step(state)
        return sample

    n_step, t_step = timed(stepping)

    proofs = min(n_run, 3_000)
    state = fresh()
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
