"""Checkpointed traces: the state (hash) after any k steps, without re-running from step 0.

Pipeline: phase 2 of a dispute bisects over the VM states of one task. The party runs the task
once with `Trace.run`, which keeps a copy of the state every `interval` steps; each bisection
query `state_at(k)` then re-executes at most `interval` steps from the nearest checkpoint at or
before k, and keeps its answer as a further checkpoint (a bisection's queries close in on one
step, so each new one starts from the last). vm/witness.py then proves the disputed step from
`state_at(k)`.

A party's memory is bounded by `max_checkpoints`: when a run has kept that many, every other
one is dropped and the interval doubles, so a task of any length keeps at most that many run
checkpoints (a query then re-executes at most steps / (max_checkpoints / 2) steps).

Past the exit, the trace repeats the exited state (DESIGN: "exited states repeat"), so
`hash_at(k)` is defined for every k ≥ 0, as the padded 2^n trace of the game needs.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable

from vm.run import run
from vm.state import State

DEFAULT_INTERVAL = 1 << 20  # about a second of `run`: the cost of one query at most


class Trace:
    """A task's execution, recorded as checkpoints; the initial state is not modified."""

    def __init__(
        self, initial: State, interval: int = DEFAULT_INTERVAL, max_queries_kept: int = 64,
        max_checkpoints: int | None = None,
    ) -> None:
        if interval <= 0:
            raise ValueError("the checkpoint interval must be positive")
        if max_checkpoints is not None and max_checkpoints < 2:
            raise ValueError("max_checkpoints must be at least 2")
        self.interval = interval
        self.max_checkpoints = max_checkpoints
        self.max_queries_kept = max_queries_kept
        initial.memory.root()  # copies start with clean hashes, so later hashing is incremental
        self._steps: list[int] = [initial.step]  # sorted checkpoint steps
        self._states: dict[int, State] = {initial.step: initial.copy()}
        self._queries: list[int] = []  # checkpoints added by state_at, oldest first
        self.final: State | None = None  # the state where the run stopped (exited or limit)

    @property
    def exited(self) -> bool:
        """Whether the recorded run reached the program's exit."""
        return self.final is not None and self.final.exited

    @property
    def steps(self) -> int:
        """Steps in the recorded run (the exit step included); run() first."""
        if self.final is None:
            raise RuntimeError("Trace.run() has not been called")
        return self.final.step

    def run(self, max_steps: int, progress: Callable[[int], None] | None = None) -> State:
        """Run from the start until exit or `max_steps` total steps, keeping checkpoints.

        `progress(steps)` is called at every checkpoint (a display's hook)."""
        state = self._states[self._steps[0]].copy()
        while not state.exited and state.step < max_steps:
            n = min(self.interval - state.step % self.interval, max_steps - state.step)
            run(state, n)
            if not state.exited and state.step % self.interval == 0:
                self._keep(state)
            if progress is not None:
                progress(state.step)
        state.memory.root()
        self.final = state
        return state.copy()

    def _keep(self, state: State, query: bool = False) -> None:
        if state.step in self._states:
            return
        state.memory.root()
        bisect.insort(self._steps, state.step)
        self._states[state.step] = state.copy()
        if query:
            self._queries.append(state.step)
            if len(self._queries) > self.max_queries_kept:
                old = self._queries.pop(0)
                self._steps.remove(old)
                del self._states[old]
        elif self.max_checkpoints is not None and len(self._steps) - len(self._queries) - 1 > self.max_checkpoints:
            self._thin()

    def _thin(self) -> None:
        """Double the interval and drop the run checkpoints off the new grid (the first state
        and the queries' checkpoints stay)."""
        self.interval *= 2
        first, queries = self._steps[0], set(self._queries)
        drop = [k for k in self._steps if k != first and k not in queries and k % self.interval]
        for k in drop:
            del self._states[k]
        self._steps = [k for k in self._steps if k in self._states]

    def state_at(self, k: int) -> State:
        """A fresh copy of the state after k steps (the exited state for any k past the exit)."""
        if k < self._steps[0]:
            raise ValueError(f"step {k} is before the trace's first state ({self._steps[0]})")
        if self.final is not None and k >= self.final.step:
            if self.final.exited or k == self.final.step:
                return self.final.copy()
        i = bisect.bisect_right(self._steps, k) - 1
        state = self._states[self._steps[i]].copy()
        if state.step < k:
            run(state, k - state.step)
            self._keep(state, query=True)
        return state

    def hash_at(self, k: int) -> bytes:
        """The state hash after k steps."""
        return self.state_at(k).hash()
