"""vm.checkpoint: state_at(k) equals stepping k times from the start, for any k."""

from __future__ import annotations

import random

from vm import asm
from vm.checkpoint import Trace
from vm.loader import initial_state
from vm.step import step


def test_state_at_any_step_matches_stepping_from_the_start():
    elf = asm.demo_program(vectors=2, length=10, repeat=2)
    reference = initial_state(elf)
    hashes = [reference.hash()]
    while not reference.exited:
        step(reference)
        hashes.append(reference.hash())
    n = len(hashes) - 1

    trace = Trace(initial_state(elf), interval=64)
    final = trace.run(10**6)
    assert trace.exited and trace.steps == n and final.hash() == hashes[-1]

    rng = random.Random(0)
    lo, hi = 0, 1 << (n - 1).bit_length()  # a bisection over the padded trace
    while hi - lo > 1:
        mid = (lo + hi) // 2
        assert trace.hash_at(mid) == hashes[min(mid, n)]
        lo, hi = (mid, hi) if rng.random() < 0.5 else (lo, mid)
    for k in [0, 1, 63, 64, 65, n - 1, n, n + 1, 10 * n] + rng.sample(range(n), 10):
        assert trace.hash_at(k) == hashes[min(k, n)]


def test_state_at_returns_independent_copies():
    trace = Trace(initial_state(asm.demo_program()), interval=100)
    trace.run(10**6)
    a = trace.state_at(150)
    step(a)
    assert trace.state_at(150).step == 150
    assert trace.state_at(151).hash() == a.hash()


def test_a_run_cut_short_answers_past_its_end():
    elf = asm.demo_program()
    trace = Trace(initial_state(elf), interval=50)
    trace.run(120)
    assert not trace.exited and trace.steps == 120
    full = initial_state(elf)
    for _ in range(300):
        step(full)
    assert trace.hash_at(300) == full.hash()


def test_a_long_run_keeps_at_most_max_checkpoints_and_still_answers_every_step():
    elf = asm.demo_program(vectors=2, length=10, repeat=2)
    reference = initial_state(elf)
    hashes = [reference.hash()]
    while not reference.exited:
        step(reference)
        hashes.append(reference.hash())
    n = len(hashes) - 1
    trace = Trace(initial_state(elf), interval=4, max_checkpoints=8)
    trace.run(10**6)
    kept = len(trace._steps) - 1  # the first state aside
    assert n > 4 * 8 * 4 and kept <= 8 and trace.interval > 4
    for k in [0, 1, 3, 4, 5, n // 3, n - 1, n, n + 5] + random.Random(1).sample(range(n), 20):
        assert trace.hash_at(k) == hashes[min(k, n)]
