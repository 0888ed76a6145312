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
slower than one for each cache-hot projection. A barrier here is a few hundred nanoseconds.

The barrier (`barrier` points at 128 zero bytes the caller keeps: an i32 arrival count in the
first cache line, an i32 generation in the second) is the sense-counting kind: each member reads
the generation, adds itself to the count (acq_rel), and the last one resets the count and then
advances the generation (release), for which the others spin (acquire loads, x86 `pause`),
yielding the core after SPIN turns (Linux's sched_yield by `syscall`) so that a machine with
more runnable threads than cores still moves on. Only on x86-64 Linux hosts (`available`); the
session keeps the thread pool elsewhere.
"""

from __future__ import annotations

from functools import cache

import llvmlite.binding as llvm
from llvmlite import ir

from opmlc.backend.kernels._ir import I32, I64, PTR, VOID, c32, loop

TASK_TEAM = "task_team"
BARRIER_BYTES = 128  # the count's and the generation's cache lines
SPIN = 1 << 12  # pauses before each wait turn yields the core
SCHED_YIELD = 24  # the x86-64 Linux system call number


@cache
def available() -> bool:
    """Whether this host gets the team entry point (the barrier's `pause` and system call)."""
    llvm.initialize_native_target()
    triple = llvm.get_process_triple()
    return triple.startswith("x86_64") and "linux" in triple


def _barrier(module: ir.Module) -> ir.Function:
    fn = ir.Function(module, ir.FunctionType(VOID, [PTR, I32]), "team.barrier")
    fn.linkage = "internal"
    fn.attributes.add("nounwind")
    bar, members = fn.args
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    count = bar
    gen = b.gep(bar, [c32(64)], source_etype=ir.IntType(8))
    seen = b.load_atomic(gen, "acquire", 4, typ=I32)
    arrived = b.add(b.atomic_rmw("add", count, c32(1), "acq_rel"), c32(1))
    last = fn.append_basic_block("last")
    wait = fn.append_basic_block("wait")
    done = fn.append_basic_block("done")
    b.cbranch(b.icmp_unsigned("==", arrived, members), last, wait)
    b.position_at_end(last)
    b.atomic_rmw("xchg", count, c32(0), "monotonic")
    b.atomic_rmw("add", gen, c32(1), "release")
    b.branch(done)
    b.position_at_end(wait)
    turn = b.phi(I32)
    turn.add_incoming(c32(0), b.block.function.entry_basic_block)
    moved = b.icmp_unsigned("!=", b.load_atomic(gen, "acquire", 4, typ=I32), seen)
    spin = fn.append_basic_block("spin")
    b.cbranch(moved, done, spin)
    b.position_at_end(spin)
    pause = ir.FunctionType(VOID, [])
    b.call(ir.InlineAsm(pause, "pause", "~{memory}", side_effect=True), [])
    counted = b.add(turn, c32(1))
    tired = fn.append_basic_block("yield")
    again = fn.append_basic_block("again")
    b.cbranch(b.icmp_unsigned(">=", turn, c32(SPIN)), tired, again)
    b.position_at_end(tired)
    syscall = ir.InlineAsm(ir.FunctionType(I64, [I64]), "syscall", "={rax},{rax},~{rcx},~{r11},~{memory}",
                           side_effect=True)
    b.call(syscall, [ir.Constant(I64, SCHED_YIELD)])
    b.branch(again)
    b.position_at_end(again)
    nxt = b.phi(I32)
    nxt.add_incoming(counted, spin)
    nxt.add_incoming(turn, tired)
    turn.add_incoming(nxt, again)
    b.branch(wait)
    b.position_at_end(done)
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
