"""The host module's team entry point: a span of nodes run by several threads at once, which meet
at a spinning barrier around each node that is split into parts, instead of one hand-over
through Python's thread pool per split node.

Place in the pipeline: codegen.py's host module (`host_kernels`, never the MIPS module) exports

    void task_team(ptr regions, i32 first, i32 end, i32 member, i32 members, ptr barrier)

and the native session (backend/native.py) calls it on `members` threads at once, member 0 on
the calling thread, for the whole graph. Every member walks nodes first..end-1 in order: a node
that `split_worth` splits runs its part `member` of `members` (task_part's body), after a
barrier when the node before it was not split and before another barrier; any other node runs
whole on member 0 while the others go on to the next barrier. So each split node starts after
everything before it is written, and nothing after it starts before all its parts are: the bits
of one thread (the parts partition the output, kernels/native/__init__.py).

Why: on this 2-core VM a hand-over through `ThreadPoolExecutor` (a futex wake, the GIL, a ctypes
call) costs 50–100 µs, and a TinyLlama-1.1B decoding step splits 111 nodes: two threads were
slower than one for each cache-hot projection. With the team the step on two threads went from
44–48 ms to 33–37 ms (one thread: 54–64 ms; docs/DESIGN.md, "Threads as a team").

The barrier (`barrier` points at 128 zero bytes the caller keeps: an i32 arrival count in the
first cache line, an i32 generation and an i32 count of sleepers in the second) counts
generations: each member reads the generation and adds itself to the count, and the last one
resets the count, advances the generation and, if anyone sleeps, wakes them (a futex wake on
the generation). The others spin on the generation for SPIN turns (x86 `pause`, ~0.6 ms: the
small nodes member 0 runs between two split ones take less, and a member that falls asleep
inside a step costs a wake-up of 50–100 µs each time), then count themselves as sleepers and
sleep on it (futex wait), so a waiting thread never burns a core for longer. The atomics
that decide a sleep are seq_cst: the last arrival advances the generation before it reads the
sleepers, and a sleeper counts itself before it checks the generation, so one of them sees
the other (and a futex wait returns at once if the generation moved before it).
The system calls are inline `syscall`s: only on x86-64 Linux hosts (`available`); the session
keeps the thread pool elsewhere.
"""

from __future__ import annotations

from functools import cache

import llvmlite.binding as llvm
from llvmlite import ir

from opmlc.backend.kernels._ir import I32, I64, PTR, VOID, c32, loop

TASK_TEAM = "task_team"
BARRIER_BYTES = 128  # the count's cache line, and the generation's and sleepers'
SPIN = 1 << 15  # pauses (~20 ns each here: ~0.6 ms) before a waiting member sleeps on the generation
SYS_FUTEX = 202  # the x86-64 Linux system call number
FUTEX_WAIT, FUTEX_WAKE = 128, 129  # FUTEX_PRIVATE_FLAG | FUTEX_WAIT, | FUTEX_WAKE


@cache
def available() -> bool:
    """Whether this host gets the team entry point (the barrier's `pause` and system call)."""
    llvm.initialize_native_target()
    triple = llvm.get_process_triple()
    return triple.startswith("x86_64") and "linux" in triple


def _futex(b: ir.IRBuilder, word: ir.Value, op: int, value: ir.Value) -> None:
    """futex(word, op, value, NULL) by the x86-64 Linux system call (a wait returns at once when
    *word ≠ value, and may return early: the caller checks again)."""
    ty = ir.FunctionType(I64, [I64, PTR, I64, I64, I64])
    call = ir.InlineAsm(ty, "syscall", "={rax},{rax},{rdi},{rsi},{rdx},{r10},~{rcx},~{r11},~{memory}",
                        side_effect=True)
    b.call(call, [ir.Constant(I64, SYS_FUTEX), word, ir.Constant(I64, op), b.zext(value, I64), ir.Constant(I64, 0)])


def _barrier(module: ir.Module) -> ir.Function:
    """`void team.barrier(ptr barrier, i32 members)` (module docstring)."""
    fn = ir.Function(module, ir.FunctionType(VOID, [PTR, I32]), "team.barrier")
    fn.linkage = "internal"
    fn.attributes.add("nounwind")
    bar, members = fn.args
    blocks = {name: fn.append_basic_block(name) for name in ("entry", "last", "wake", "spin", "pause", "sleep",
                                                             "doze", "wait", "awake", "done")}
    b = ir.IRBuilder(blocks["entry"])
    count = bar
    gen = b.gep(bar, [c32(64)], source_etype=ir.IntType(8))
    sleepers = b.gep(bar, [c32(68)], source_etype=ir.IntType(8))
    seen = b.load_atomic(gen, "seq_cst", 4, typ=I32)
    arrived = b.add(b.atomic_rmw("add", count, c32(1), "seq_cst"), c32(1))
    b.cbranch(b.icmp_unsigned("==", arrived, members), blocks["last"], blocks["spin"])

    b.position_at_end(blocks["last"])  # reset the count, then let the others go
    b.atomic_rmw("xchg", count, c32(0), "seq_cst")
    b.atomic_rmw("add", gen, c32(1), "seq_cst")
    asleep = b.load_atomic(sleepers, "seq_cst", 4, typ=I32)
    b.cbranch(b.icmp_unsigned("!=", asleep, c32(0)), blocks["wake"], blocks["done"])
    b.position_at_end(blocks["wake"])
    _futex(b, gen, FUTEX_WAKE, c32(0x7FFFFFFF))
    b.branch(blocks["done"])

    b.position_at_end(blocks["spin"])  # spin SPIN turns on the generation
    turn = b.phi(I32)
    turn.add_incoming(c32(0), blocks["entry"])
    moved = b.icmp_unsigned("!=", b.load_atomic(gen, "acquire", 4, typ=I32), seen)
    b.cbranch(moved, blocks["done"], blocks["pause"])
    b.position_at_end(blocks["pause"])
    b.call(ir.InlineAsm(ir.FunctionType(VOID, []), "pause", "~{memory}", side_effect=True), [])
    nxt = b.add(turn, c32(1))
    turn.add_incoming(nxt, blocks["pause"])
    b.cbranch(b.icmp_unsigned("<", nxt, c32(SPIN)), blocks["spin"], blocks["sleep"])

    # then sleep on it: counted as a sleeper before the last check, so that the last arrival,
    # which advances the generation before it reads the sleepers (all seq_cst), either is seen
    # here or sees us and wakes us
    b.position_at_end(blocks["sleep"])
    b.atomic_rmw("add", sleepers, c32(1), "seq_cst")
    b.branch(blocks["doze"])
    b.position_at_end(blocks["doze"])
    still = b.icmp_unsigned("==", b.load_atomic(gen, "seq_cst", 4, typ=I32), seen)
    b.cbranch(still, blocks["wait"], blocks["awake"])
    b.position_at_end(blocks["wait"])
    _futex(b, gen, FUTEX_WAIT, seen)
    b.branch(blocks["doze"])
    b.position_at_end(blocks["awake"])
    b.atomic_rmw("sub", sleepers, c32(1), "seq_cst")
    b.branch(blocks["done"])

    b.position_at_end(blocks["done"])
    b.ret_void()
    return fn


def emit_team(module: ir.Module, task: ir.Function, part_fns: dict[int, ir.Function]) -> None:
    """task_team (module docstring): `task` runs a node whole, part_fns[k] node k's part."""
    barrier = _barrier(module)
    fn = ir.Function(module, ir.FunctionType(VOID, [PTR, I32, I32, I32, I32, PTR]), TASK_TEAM)
    fn.attributes.add("nounwind")
    regions, first, end, member, members, bar = fn.args
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    after_split = b.alloca(ir.IntType(1), name="after_split")
    b.store(ir.Constant(ir.IntType(1), 1), after_split)  # no barrier before a first split node
    with loop(b, b.sub(end, first), "team") as i:
        node = b.add(first, i)
        whole = fn.append_basic_block("whole")
        nxt = fn.append_basic_block("next")
        switch = b.switch(node, whole)
        for index, pf in part_fns.items():
            blk = fn.append_basic_block(f"split{index}")
            switch.add_case(c32(index), blk)
            b.position_at_end(blk)
            with b.if_then(b.not_(b.load(after_split, typ=ir.IntType(1)))):
                b.call(barrier, [bar, members])
            b.call(pf, [regions, member, members])
            b.call(barrier, [bar, members])
            b.store(ir.Constant(ir.IntType(1), 1), after_split)
            b.branch(nxt)
        b.position_at_end(whole)
        with b.if_then(b.icmp_unsigned("==", member, c32(0))):
            b.call(task, [regions, node])
        b.store(ir.Constant(ir.IntType(1), 0), after_split)
        b.branch(nxt)
        b.position_at_end(nxt)
    b.ret_void()
