"""The host module's team entry points: a whole-graph run on several threads, the session's
standing workers taking parts of the split nodes as the calling thread opens them, with no
Python between the threads during a run.

Place in the pipeline: codegen.py's host module (`host_kernels`, never the MIPS module) exports,
on x86-64 Linux hosts (`available`: inline `pause` and system calls),

    void task_team_worker(ptr crew, i32 members)
    void task_team_lead(ptr crew, ptr regions, i32 first, i32 end, i32 members)
    void task_team_stop(ptr crew)

and the native session (backend/native.py) drives them through `Crew`: it starts `members − 1`
Python threads once, each inside one call of task_team_worker until the session stops it
(ctypes released the GIL for the call); a run is one call of task_team_lead on the calling
thread. Elsewhere the session hands each split node's parts to a Python thread pool.

A run (task_team_lead): the caller walks nodes first..end-1 in order. A node that `split_worth`
split is *opened*: its index and a claim count of 0 are published in one 64-bit word, then the
caller claims parts itself (an atomic add on the word) and runs them (codegen's task_part), as
does any worker that sees the node open (a compare-exchange on the word it read: a stale word
fails, or belongs to the current opening when it matches). Once every part is claimed, the
caller waits until all `members` parts are done and goes on. Any other node runs whole on the
caller. So a split node starts after everything before it is written and nothing after it
starts before all its parts are: the same bits as one thread (the parts partition the output,
kernels/native/__init__.py), whichever thread runs which part. And the caller never waits for a
worker that is not there: a worker asleep or descheduled when a node opens costs nothing but
the parts it leaves to the caller (a run is never much slower than one thread's).

Why: a hand-over through Python's thread pool (the pool's wake-up, the GIL, a ctypes call) cost
40–60 µs a run on this 2-core VM — more than a whole small model (the 784-512-512-10 MLP at
batch 1 runs in ~30 µs on one thread) — and the earlier team (every member walked the graph,
meeting at a barrier around each split node) made the caller wait at every barrier for a
member that was asleep: after an idle moment, a futex wake on this VM took up to ~4 ms.

Waiting (a worker with nothing to claim): it spins on the word for SPIN turns (x86 `pause`,
~0.5 ms here: longer than the nodes a caller runs whole between two split ones, and than the
gap between back-to-back runs), then counts itself as a sleeper and sleeps on the crew's
generation (futex wait), which the caller advances at every opening, waking the sleepers if
there are any (futex wake). The atomics that decide a sleep are seq_cst: the caller publishes
the opening and advances the generation before it reads the sleepers, and a worker counts
itself before it checks the generation (read before it last looked at the word) and the word,
so one of them sees the other (and a futex wait returns at once if the generation moved).
The caller's wait for the parts' end spins and yields the core (sched_yield) after SPIN turns
(a worker preempted in the middle of its part). task_team_stop sets the stop word and wakes the
workers: each returns, and the session joins its thread.

The crew (CREW_BYTES, 64-byte aligned; `Crew` owns it): the claim word (node index << 32 |
parts claimed; 2^32 − 1 claimed at rest: nothing open), the done count, the generation and the
sleepers' count, the stop word and the regions pointer, each group in a cache line of its own.
"""

from __future__ import annotations

import os
import threading
from functools import cache

import llvmlite.binding as llvm
import numpy as np
from llvmlite import ir

from opmlc.backend.kernels._ir import I32, I64, PTR, VOID, c32, loop

TASK_TEAM_WORKER, TASK_TEAM_LEAD, TASK_TEAM_STOP = "task_team_worker", "task_team_lead", "task_team_stop"
CREW_BYTES = 256
_CLAIM, _DONE, _GEN, _SLEEPERS, _STOP, _REGIONS = 0, 64, 128, 132, 192, 200  # byte offsets in the crew
SPIN = 1 << 15  # pauses (~15 ns each here: ~0.5 ms) before a waiting worker sleeps
SYS_SCHED_YIELD, SYS_FUTEX = 24, 202  # x86-64 Linux system call numbers
FUTEX_WAIT, FUTEX_WAKE = 128, 129  # FUTEX_PRIVATE_FLAG | FUTEX_WAIT, | FUTEX_WAKE


@cache
def available() -> bool:
    """Whether this host gets the team entry points (their `pause` and system calls)."""
    llvm.initialize_native_target()
    triple = llvm.get_process_triple()
    return triple.startswith("x86_64") and "linux" in triple


def _syscall(b: ir.IRBuilder, number: int, args: list[ir.Value]) -> None:
    """An x86-64 Linux system call with up to four i64 arguments (rdi, rsi, rdx, r10)."""
    regs = ["{rdi}", "{rsi}", "{rdx}", "{r10}"][:len(args)]
    ty = ir.FunctionType(I64, [I64] + [a.type for a in args])
    call = ir.InlineAsm(ty, "syscall", ",".join(["={rax}", "{rax}", *regs, "~{rcx}", "~{r11}", "~{memory}"]),
                        side_effect=True)
    b.call(call, [ir.Constant(I64, number), *args])


def _futex(b: ir.IRBuilder, word: ir.Value, op: int, value: ir.Value) -> None:
    """futex(word, op, value, NULL) (a wait returns at once when *word ≠ value, and may return
    early: the caller checks again)."""
    _syscall(b, SYS_FUTEX, [b.ptrtoint(word, I64), ir.Constant(I64, op), b.zext(value, I64), ir.Constant(I64, 0)])


def _pause(b: ir.IRBuilder) -> None:
    b.call(ir.InlineAsm(ir.FunctionType(VOID, []), "pause", "~{memory}", side_effect=True), [])


def _at(b: ir.IRBuilder, crew: ir.Value, offset: int) -> ir.Value:
    return b.gep(crew, [c32(offset)], source_etype=ir.IntType(8))


def _export(module: ir.Module, name: str, args: list[ir.Type]) -> tuple[ir.Function, ir.IRBuilder]:
    fn = ir.Function(module, ir.FunctionType(VOID, args), name)
    fn.attributes.add("nounwind")
    return fn, ir.IRBuilder(fn.append_basic_block("entry"))


def _wake(b: ir.IRBuilder, crew: ir.Value) -> None:
    """Advance the generation, then wake the sleepers if there are any (module docstring)."""
    b.atomic_rmw("add", _at(b, crew, _GEN), c32(1), "seq_cst")
    asleep = b.load_atomic(_at(b, crew, _SLEEPERS), "seq_cst", 4, typ=I32)
    with b.if_then(b.icmp_unsigned("!=", asleep, c32(0))):
        _futex(b, _at(b, crew, _GEN), FUTEX_WAKE, c32(0x7FFFFFFF))


def _worker(module: ir.Module, task_part: ir.Function) -> None:
    fn, b = _export(module, TASK_TEAM_WORKER, [PTR, I32])
    crew, members = fn.args
    blocks = {name: fn.append_basic_block(name)
              for name in ("top", "look", "try", "work", "idle", "pause", "sleep", "doze", "wait", "awake", "leave")}
    claim_at, gen_at, stop_at = _at(b, crew, _CLAIM), _at(b, crew, _GEN), _at(b, crew, _STOP)
    b.branch(blocks["top"])

    b.position_at_end(blocks["top"])  # the generation, read before the word is looked at
    seen = b.load_atomic(gen_at, "seq_cst", 4, typ=I32)
    b.branch(blocks["look"])

    b.position_at_end(blocks["look"])
    turn = b.phi(I32)
    turn.add_incoming(c32(0), blocks["top"])
    word = b.load_atomic(claim_at, "acquire", 8, typ=I64)
    part = b.trunc(word, I32)
    b.cbranch(b.icmp_unsigned("<", part, members), blocks["try"], blocks["idle"])

    b.position_at_end(blocks["try"])  # claim that part, unless the word moved since it was read
    pair = b.cmpxchg(claim_at, word, b.add(word, ir.Constant(I64, 1)), "acq_rel", "acquire")
    b.cbranch(b.extract_value(pair, 1), blocks["work"], blocks["top"])

    b.position_at_end(blocks["work"])
    node = b.trunc(b.lshr(word, ir.Constant(I64, 32)), I32)
    b.call(task_part, [b.load(_at(b, crew, _REGIONS), typ=PTR), node, part, members])
    b.atomic_rmw("add", _at(b, crew, _DONE), c32(1), "seq_cst")
    b.branch(blocks["top"])

    b.position_at_end(blocks["idle"])
    stop = b.load_atomic(stop_at, "acquire", 4, typ=I32)
    b.cbranch(b.icmp_unsigned("!=", stop, c32(0)), blocks["leave"], blocks["pause"])
    b.position_at_end(blocks["pause"])
    _pause(b)
    nxt = b.add(turn, c32(1))
    turn.add_incoming(nxt, blocks["pause"])
    b.cbranch(b.icmp_unsigned("<", nxt, c32(SPIN)), blocks["look"], blocks["sleep"])

    # count itself as a sleeper, then check the generation (and the word, and stop) once more
    b.position_at_end(blocks["sleep"])
    b.atomic_rmw("add", _at(b, crew, _SLEEPERS), c32(1), "seq_cst")
    b.branch(blocks["doze"])
    b.position_at_end(blocks["doze"])
    same = b.icmp_unsigned("==", b.load_atomic(gen_at, "seq_cst", 4, typ=I32), seen)
    closed = b.icmp_unsigned(">=", b.trunc(b.load_atomic(claim_at, "seq_cst", 8, typ=I64), I32), members)
    going = b.icmp_unsigned("==", b.load_atomic(stop_at, "seq_cst", 4, typ=I32), c32(0))
    b.cbranch(b.and_(same, b.and_(closed, going)), blocks["wait"], blocks["awake"])
    b.position_at_end(blocks["wait"])
    _futex(b, gen_at, FUTEX_WAIT, seen)
    b.branch(blocks["doze"])
    b.position_at_end(blocks["awake"])
    b.atomic_rmw("sub", _at(b, crew, _SLEEPERS), c32(1), "seq_cst")
    b.branch(blocks["top"])

    b.position_at_end(blocks["leave"])
    b.ret_void()


def _lead(module: ir.Module, task: ir.Function, task_part: ir.Function, split: list[int]) -> None:
    fn, b = _export(module, TASK_TEAM_LEAD, [PTR, PTR, I32, I32, I32])
    crew, regions, first, end, members = fn.args
    b.store(regions, _at(b, crew, _REGIONS))  # read by a worker after its claim (acquire)
    with loop(b, b.sub(end, first), "team") as i:
        node = b.add(first, i)
        whole, opened, nxt = (fn.append_basic_block(n) for n in ("whole", "open", "next"))
        switch = b.switch(node, whole)
        for index in split:
            switch.add_case(c32(index), opened)
        b.position_at_end(whole)
        b.call(task, [regions, node])
        b.branch(nxt)

        b.position_at_end(opened)
        b.atomic_rmw("xchg", _at(b, crew, _DONE), c32(0), "seq_cst")
        b.atomic_rmw("xchg", _at(b, crew, _CLAIM), b.shl(b.zext(node, I64), ir.Constant(I64, 32)), "seq_cst")
        _wake(b, crew)
        claim, run, wait = (fn.append_basic_block(n) for n in ("claim", "run", "wait"))
        b.branch(claim)
        b.position_at_end(claim)
        part = b.trunc(b.atomic_rmw("add", _at(b, crew, _CLAIM), ir.Constant(I64, 1), "seq_cst"), I32)
        b.cbranch(b.icmp_unsigned("<", part, members), run, wait)
        b.position_at_end(run)
        b.call(task_part, [regions, node, part, members])
        b.atomic_rmw("add", _at(b, crew, _DONE), c32(1), "seq_cst")
        b.branch(claim)

        # every part claimed: wait for those a worker runs
        b.position_at_end(wait)
        spin, pause = fn.append_basic_block("spin"), fn.append_basic_block("pause")
        b.branch(spin)
        b.position_at_end(spin)
        turn = b.phi(I32)
        turn.add_incoming(c32(0), wait)
        finished = b.load_atomic(_at(b, crew, _DONE), "acquire", 4, typ=I32)
        b.cbranch(b.icmp_unsigned("==", finished, members), nxt, pause)
        b.position_at_end(pause)
        _pause(b)
        with b.if_then(b.icmp_unsigned(">=", turn, c32(SPIN))):
            _syscall(b, SYS_SCHED_YIELD, [])
        turn.add_incoming(b.add(turn, c32(1)), b.block)
        b.branch(spin)
        b.position_at_end(nxt)
    b.ret_void()


def _stop(module: ir.Module) -> None:
    fn, b = _export(module, TASK_TEAM_STOP, [PTR])
    (crew,) = fn.args
    b.atomic_rmw("xchg", _at(b, crew, _STOP), c32(1), "seq_cst")
    _wake(b, crew)
    b.ret_void()


def emit_team(module: ir.Module, task: ir.Function, task_part: ir.Function, split: list[int]) -> None:
    """The three entry points (module docstring): `task` runs a node whole, `task_part` a part of
    a node, `split` lists the nodes split into parts."""
    _worker(module, task_part)
    _lead(module, task, task_part, split)
    _stop(module)


class Crew:
    """A session's standing workers (module docstring): `members − 1` Python threads, each inside
    one call of task_team_worker from start to stop, and the crew memory they share with the
    caller. `run` is one whole-graph run, the caller taking part.

    `stop` (the session's finalizer, also at interpreter exit) returns the threads from the
    program's code before its engine can be freed. A crew belongs to the process that started
    it: after a fork the child has none of its threads (`alive` is then false and the session
    starts another)."""

    def __init__(self, program, members: int) -> None:
        self.program, self.members, self.pid = program, members, os.getpid()
        raw = np.zeros(CREW_BYTES + 64, dtype=np.uint8)
        at = -raw.ctypes.data % 64
        self._raw, self.memory = raw, raw[at:at + CREW_BYTES]
        self.memory[_CLAIM:_CLAIM + 4] = 0xFF  # no node open: every part of "node 0" claimed
        self.address = self.memory.ctypes.data
        self.threads = [threading.Thread(target=program.task_team_worker, args=(self.address, members),
                                         name=f"opmlc-team-{m}", daemon=True) for m in range(1, members)]
        for t in self.threads:
            t.start()

    @property
    def alive(self) -> bool:
        return self.pid == os.getpid()

    def run(self, regions: int, first: int, end: int) -> None:
        self.program.task_team_lead(self.address, regions, first, end, self.members)

    def stop(self) -> None:
        if self.threads and self.alive:
            self.program.task_team_stop(self.address)
            for t in self.threads:
                t.join()
        self.threads = []
