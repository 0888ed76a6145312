"""Every bad case is a panic state (exited, code 0xFF, step + 1, nothing else), never a raise.

The fast path must reach the same states, so each case also runs through vm.run.
"""

from __future__ import annotations

import pytest

from vm import asm
from vm.memory import Memory
from vm.run import run
from vm.state import STATUS_EXITED_OK, STATUS_PANICKED, State, status
from vm.step import step

AT = 0x00400100


def make(words: list[int], regs: dict[int, int] | None = None, next_pc: int | None = None) -> State:
    mem = Memory()
    for i, w in enumerate(words):
        mem.write_u32(AT + 4 * i, w)
    state = State(mem, pc=AT, next_pc=AT + 4 if next_pc is None else next_pc)
    for r, v in (regs or {}).items():
        state.regs[r] = v
    return state


PANICS = {
    "unknown opcode": ([0xFC000000], {}),
    "unknown special function": ([asm.r_type(0x3F)], {}),
    "unknown special2 function": ([asm.r_type(0x3F, op=0x1C)], {}),
    "unknown regimm rt": ([asm.i_type(0x01, 0x02, 1, 4)], {}),  # bltzl: not ours
    "branch likely": ([asm.i_type(0x14, 0, 0, 4)], {}),  # beql
    "break": ([asm.special("break")], {}),
    "teq equal": ([asm.special("teq", rs=4, rt=5)], {4: 7, 5: 7}),
    "div by zero": ([asm.special("div", rs=4, rt=5)], {4: 7}),
    "divu by zero": ([asm.special("divu", rs=4, rt=5)], {4: 7}),
    "add overflow": ([asm.special("add", rd=2, rs=4, rt=5)], {4: 0x7FFFFFFF, 5: 1}),
    "sub overflow": ([asm.special("sub", rd=2, rs=4, rt=5)], {4: 0x80000000, 5: 1}),
    "addi overflow": ([asm.imm("addi", 2, 4, 0xFFFF)], {4: 0x80000000}),
    "misaligned lw": ([asm.imm("lw", 2, 4, 2)], {4: 0x10000000}),
    "misaligned sw": ([asm.imm("sw", 2, 4, 1)], {4: 0x10000000}),
    "odd lh": ([asm.imm("lh", 2, 4, 1)], {4: 0x10000000}),
    "odd lhu": ([asm.imm("lhu", 2, 4, 3)], {4: 0x10000000}),
    "odd sh": ([asm.imm("sh", 2, 4, 1)], {4: 0x10000000}),
    "other syscall": ([asm.special("syscall")], {2: 4004, 4: 1}),
}


def assert_panicked(before: State, after: State) -> None:
    assert after.exited and after.exit_code == 0xFF
    assert after.step == before.step + 1
    assert (after.pc, after.next_pc, after.hi, after.lo) == (
        before.pc,
        before.next_pc,
        before.hi,
        before.lo,
    )
    assert after.regs == before.regs
    assert after.memory.root() == before.memory.root()
    assert status(after.encode()) == STATUS_PANICKED


@pytest.mark.parametrize("case", list(PANICS))
@pytest.mark.parametrize("path", ["step", "run"])
def test_bad_instruction_is_a_panic_state(case, path):
    words, regs = PANICS[case]
    before = make(words, regs)
    after = before.copy()
    step(after) if path == "step" else run(after, 5)
    assert_panicked(before, after)


@pytest.mark.parametrize(
    "branch",
    [asm.imm("beq", 0, 0, 4), asm.imm("bne", 0, 0, 4), asm.jump("j", AT), asm.special("jr", rs=31)],
)
@pytest.mark.parametrize("path", ["step", "run"])
def test_branch_in_a_delay_slot_panics_taken_or_not(branch, path):
    before = make([asm.imm("beq", 0, 0, 0x10), branch])
    state = before.copy()
    step(state)  # the first branch: pc now in its delay slot
    mid = state.copy()
    step(mid) if path == "step" else run(mid, 1)
    assert_panicked(state, mid)


def test_misaligned_fetch_panics():
    before = make([0])
    before.pc, before.next_pc = AT + 2, AT + 6
    after = before.copy()
    step(after)
    assert_panicked(before, after)


@pytest.mark.parametrize("v0", [4001, 4246])
@pytest.mark.parametrize("path", ["step", "run"])
def test_exit_syscall_sets_the_code_and_keeps_pc(v0, path):
    before = make([asm.special("syscall")], {2: v0, 4: 0x1234500})
    after = before.copy()
    step(after) if path == "step" else run(after, 10)
    assert after.exited and after.exit_code == 0x00
    assert (after.pc, after.next_pc, after.step) == (before.pc, before.next_pc, 1)
    assert status(after.encode()) == STATUS_EXITED_OK


def test_a_step_of_an_exited_state_changes_nothing():
    state = make([asm.special("break")])
    step(state)
    encoded = state.encode()
    step(state)
    assert state.encode() == encoded
    assert run(state, 100) == 0
    assert state.encode() == encoded


def test_random_words_never_raise():
    import random

    rng = random.Random(9)
    for _ in range(3000):
        state = make([rng.getrandbits(32), rng.getrandbits(32)])
        for r in range(1, 32):
            state.regs[r] = rng.choice([0, 0x10000000, rng.getrandbits(32)])
        fast = state.copy()
        step(state)
        step(state)
        run(fast, 2)
        assert fast.encode() == state.encode()
