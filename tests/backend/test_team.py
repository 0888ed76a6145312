"""The threads' team (backend/team.py): the calling thread walks the graph and opens each split
node to the session's standing workers, which claim parts of it. A chain that starts and ends
with split nodes, has two in a row and small nodes between, gives the interpreter's bits and
saturation counts on 1, 2 and 3 threads (more threads than this machine's cores), run after
run, with the workers' spin and with their sleep (every wait sleeps: the wake-ups), with no
worker at all (the caller runs every part), and without the entry points (the thread pool's
per-node hand-over)."""

from __future__ import annotations

import numpy as np
import pytest

from opmlc.backend import team
from opmlc.backend.kernels.native import split_worth
from opmlc.backend.native import NativeSession, native_program
from opmlc.ir.graph import GraphBuilder
from opmlc.ir.interpreter import run_graph
from tests.kernels.test_kernels import fx, rand_fx


def _chain(rng):
    """matmul (split), matmul (split), relu, matmul (split), relu, relu, matmul (split): x [8, 512]."""
    b = GraphBuilder("t_team")
    h = b.add_input("x", fx((8, 512), 16))
    for i, op in enumerate(["mm", "mm", "relu", "mm", "relu", "relu", "mm"]):
        if op == "relu":
            h = b.add_node("relu", [h])
            continue
        w = rng.integers(-(1 << 15), 1 << 15, (512, 512)).astype(np.int32)
        h = b.add_node("matmul", [h, b.add_initializer(f"w{i}", w, fx((512, 512), 12))],
                       {"frac": 16, "transpose_b": True})
        b.mark_output(h)  # every product's bits compared, the later ones' saturation counts too
    return b.build()


def _check_runs(session, g, thread_counts=(1, 2, 3, 2)):
    for seed in range(3):
        x = [rand_fx(np.random.default_rng(seed), (8, 512), 1 << 20)]
        want_sat: dict[int, int] = {}
        values = run_graph(g, x, saturated=want_sat)
        assert want_sat, "some outputs saturate: the counts are compared"
        for threads in thread_counts:
            sat: dict[int, int] = {}
            got = session.run(x, saturated=sat, threads=threads)
            assert sat == want_sat, f"threads={threads}"
            for v, out in zip(g.outputs, got, strict=True):
                assert np.array_equal(out, values[v]), f"threads={threads}, value %{v}"


@pytest.mark.parametrize("with_team,spin", [(True, team.SPIN), (True, 1), (False, team.SPIN)])
def test_team_gives_the_interpreters_bits_on_any_thread_count(with_team, spin, monkeypatch):
    """spin 1: a waiting worker sleeps on the crew's futex at once (the wake-ups tested)."""
    monkeypatch.setattr(team, "SPIN", spin)
    g = _chain(np.random.default_rng(3))
    assert [split_worth(g, i) for i in range(len(g.nodes))] == [True, True, False, True, False, False, True]
    program = native_program(g)
    assert (program.task_team_lead is not None) == team.available()
    if not with_team:
        monkeypatch.setattr(program, "task_team_lead", None)
    _check_runs(NativeSession(program, g), g)


@pytest.mark.skipif(not team.available(), reason="the team's entry points are x86-64 Linux only")
def test_the_caller_runs_every_part_when_no_worker_comes():
    """A crew whose workers have left (stopped): every opening's parts are claimed by the caller,
    which never waits for a worker, and the bits are the same."""
    g = _chain(np.random.default_rng(4))
    session = NativeSession(native_program(g), g)
    _check_runs(session, g, (2,))
    crew = session._crew_of(2)
    crew.stop()
    assert not crew.threads and session._crew_of(2) is crew
    _check_runs(session, g, (2,))


@pytest.mark.skipif(not team.available(), reason="the team's entry points are x86-64 Linux only")
def test_the_workers_leave_with_their_session():
    """The session's finalizer stops its crew: the workers' threads end (they must leave the
    program's code before its engine can be freed)."""
    import gc

    g = _chain(np.random.default_rng(5))
    session = NativeSession(native_program(g), g)
    _check_runs(session, g, (2,))
    threads = list(session._crew_of(2).threads)
    assert threads and all(t.is_alive() for t in threads)
    del session
    gc.collect()
    for t in threads:
        t.join(timeout=10)
    assert not any(t.is_alive() for t in threads)


_FORK_SCRIPT = """
import os, sys
import numpy as np
sys.path.insert(0, {root!r})
from tests.backend.test_team import _chain
from opmlc.backend.native import NativeSession, native_program
from opmlc.ir.interpreter import run_graph
g = _chain(np.random.default_rng(6))
session = NativeSession(native_program(g), g)
x = [np.random.default_rng(7).integers(-(1 << 20), 1 << 20, (8, 512)).astype(np.int32)]
want = run_graph(g, x)[g.outputs[-1]]
assert np.array_equal(session.run(x, threads=2)[-1], want)
pid = os.fork()
if pid == 0:  # the child: none of the parent's worker threads; a new crew
    ok = np.array_equal(session.run(x, threads=2)[-1], want)
    os._exit(0 if ok else 3)
_, status = os.waitpid(pid, 0)
assert os.waitstatus_to_exitcode(status) == 0, status
assert np.array_equal(session.run(x, threads=2)[-1], want)
print("done")
"""


@pytest.mark.skipif(not team.available(), reason="the team's entry points are x86-64 Linux only")
def test_a_forked_child_runs_on_its_own_crew_and_both_exit_cleanly():
    """After a fork the child has none of the parent's workers: its threaded run starts its own
    crew (a child waiting for the parent's would hang, or lose their parts). Both processes then
    exit normally: the crews are stopped at interpreter exit, before the engines are freed (a
    worker left spinning in freed code crashed the process at exit)."""
    import subprocess
    import sys
    from pathlib import Path

    root = str(Path(__file__).resolve().parents[2])
    proc = subprocess.run([sys.executable, "-c", _FORK_SCRIPT.format(root=root)], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "done"
