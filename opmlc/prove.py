"""Witnesses of single VM steps, from a build: what `opmlc prove --step` writes and
`opmlc verify-step` (or the dispute game's last phase) checks on chain."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from opmlc.api import quantize_inputs
from opmlc.artifact import Build
from opmlc.errors import OpmlcError
from opmlc.tasks import check_node, honest_values, initial_state
from vm.run import run as vm_run
from vm.state import State
from vm.witness import StepWitness, step_with_proof

CHUNK = 1 << 20  # steps between progress reports


def run_to(state: State, steps: int, progress: Callable[[int], None] | None = None) -> State:
    """Advance `state` to step `steps` (or its exit, whichever comes first), in place."""
    while not state.exited and state.step < steps:
        vm_run(state, min(CHUNK, steps - state.step))
        if progress:
            progress(state.step)
    return state


def task_state(build: Build, inputs: list[np.ndarray], node: int | None) -> State:
    """The initial state of a task on float inputs, with honest operands for a single node."""
    check_node(build, node)
    q = quantize_inputs(build, inputs)
    values = honest_values(build, q, upto=0 if node is None else node)
    return initial_state(build, values, node)


def prove_step(build: Build, inputs: list[np.ndarray], step: int, node: int | None = None,
               progress: Callable[[int], None] | None = None, past_exit: bool = False) -> StepWitness:
    """The witness of step `step` (0-based: the instruction executed after `step` steps).

    A step at or past the program's exit is an OpmlcError naming the program's step count,
    unless `past_exit`: then the witness shows the exited state stepping to itself (as the
    dispute game's padded trace has it).
    """
    state = run_to(task_state(build, inputs, node), step, progress)
    if state.exited and state.step <= step and not past_exit:
        task = "the whole graph" if node is None else f"node {node}'s task"
        raise OpmlcError(f"--step {step}: the program ({task}) exits after {state.step} steps, so its steps are "
                         f"0..{state.step - 1}; pass one of those")
    return step_with_proof(state)
