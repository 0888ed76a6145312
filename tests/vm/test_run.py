"""The fast path `run` reaches exactly the states of repeated `step` (same state hashes)."""

from __future__ import annotations

import random

import pytest

from vm import asm
from vm.loader import initial_state
from vm.memory import Memory
from vm.run import run
from vm.state import State
from vm.step import step

DATA = 0x10000000


def step_n(state: State, n: int) -> int:
    done = 0
    while done < n and not state.exited:
        step(state)
        done += 1
    return done


def test_run_equals_step_on_the_demo_program():
    elf = asm.demo_program(vectors=3, length=20, repeat=3)
    slow, fast = initial_state(elf), initial_state(elf)
    n_slow = step_n(slow, 10**6)
    n_fast = run(fast, 10**6)
    assert slow.exited and slow.exit_code == 0
    assert n_fast == n_slow == fast.step
    assert fast.encode() == slow.encode()


def test_run_in_chunks_matches_step_at_every_boundary():
    elf = asm.demo_program(vectors=2, length=8, repeat=2)
    slow, fast = initial_state(elf), initial_state(elf)
    rng = random.Random(0)
    while not slow.exited:
        n = rng.choice([1, 2, 3, 5, 7, 11, 40])
        assert run(fast, n) == step_n(slow, n)
        assert fast.encode() == slow.encode()


def test_run_stops_at_max_steps_inside_a_block():
    elf = asm.demo_program()
    state = initial_state(elf)
    assert run(state, 3) == 3 and state.step == 3


def random_program(rng: random.Random, blocks: int = 12) -> list[int]:
    """Random blocks of ALU/HI-LO/memory instructions ending in random branches.

    $s7 (23) points at a data page; memory offsets are mostly aligned, rarely not (panic).
    Branch targets are block starts, and a branch not taken falls into the next block; loops
    are cut by the step budget. `jr $ra` goes wherever $ra points, often to a panic.
    """
    alu = ["addu", "subu", "and", "or", "xor", "nor", "slt", "sltu", "movz", "movn", "sllv",
           "srlv", "srav"]  # fmt: skip
    rare = ["add", "sub", "div", "divu", "teq"]  # may panic: a few per program
    regs = list(range(1, 16))  # $ra (31) is left to jal/bltzal, so that jr $ra mostly lands
    starts = [4 * i * 11 for i in range(blocks)]
    words: list[int] = []
    for b in range(blocks):
        body: list[int] = []
        while len(body) < 9:
            kind = rng.random()
            rd, rs, rt = rng.choice(regs), rng.choice(regs + [0]), rng.choice(regs + [0])
            if kind < 0.02:
                body.append(asm.special(rng.choice(rare), rd=rd, rs=rs, rt=rt))
            elif kind < 0.35:
                body.append(asm.special(rng.choice(alu), rd=rd, rs=rs, rt=rt))
            elif kind < 0.45:
                body.append(
                    asm.special(
                        rng.choice(["sll", "srl", "sra"]), rd=rd, rt=rt, sa=rng.randrange(32)
                    )
                )
            elif kind < 0.6:
                name = rng.choice(["addiu", "slti", "sltiu", "andi", "ori", "xori", "lui", "addi"])
                body.append(asm.imm(name, rd, rs, rng.getrandbits(16)))
            elif kind < 0.7:
                name = rng.choice(["madd", "maddu", "msub", "msubu", "mul", "clz", "clo"])
                body.append(asm.special2(name, rd=rd, rs=rs, rt=rt))
            elif kind < 0.78:
                name = rng.choice(["mult", "multu", "mfhi", "mflo", "mthi", "mtlo"])
                body.append(asm.special(name, rd=rd, rs=rs, rt=rt))
            else:
                name = rng.choice(list(asm.I_OPCODE)[12:])  # loads and stores
                off = rng.randrange(0, 256) * 4 + (rng.randrange(4) if rng.random() < 0.02 else 0)
                body.append(asm.imm(name, rd, 23, off))
        pc = starts[b] + 4 * len(body)
        target = rng.choice(starts)
        off = (target - pc - 4) >> 2
        br = rng.choice(["beq", "bne", "blez", "bgtz", "bltz", "bgez", "bltzal", "jal", "jr"])
        if br in asm.REGIMM_RT:
            body.append(asm.regimm(br, rng.choice(regs), off))
        elif br == "jal":
            body.append(asm.jump("jal", 0x00400000 + target))
        elif br == "jr":
            body.append(asm.special("jr", rs=31))  # wherever $ra points: often a panic
        else:
            body.append(asm.imm(br, rng.choice(regs), rng.choice(regs), off))
        if rng.random() < 0.4:  # a delay slot that may bail (misaligned, fresh page, store)
            name = rng.choice(list(asm.I_OPCODE)[12:])
            off = rng.randrange(-64, 2048) * 4 + (rng.randrange(4) if rng.random() < 0.1 else 0)
            body.append(asm.imm(name, rng.choice(regs), 23, off))
        else:
            body.append(
                asm.special("addu", rd=rng.choice(regs), rs=rng.choice(regs), rt=rng.choice(regs))
            )
        if b == blocks - 1:
            body.append(asm.special("syscall"))  # $v0 random: a panic or an exit
        words += body  # a branch not taken falls through into the next block
    return words


def compare_on_random_program(seed: int) -> int:
    """Run a random program both ways; return the steps taken (most seeds run the budget)."""
    rng = random.Random(seed)
    words = random_program(rng)
    mem = Memory()
    for i, w in enumerate(words):
        mem.write_u32(0x00400000 + 4 * i, w)
    mem.write_bytes(DATA, rng.randbytes(0x1400))
    slow = State(mem, pc=0x00400000, next_pc=0x00400004)
    for r in range(1, 32):
        slow.regs[r] = rng.choice([0, 1, 0x80000000, 0xFFFFFFFF, rng.getrandbits(32)])
    slow.regs[23] = DATA
    slow.regs[31] = 0x00400000 + 44 * rng.randrange(12)
    slow.regs[2] = rng.choice([4001, 7])
    fast = slow.copy()
    budget = 3000
    n = step_n(slow, budget)
    assert run(fast, budget) == n
    assert fast.encode() == slow.encode()
    return n


@pytest.mark.parametrize("seed", range(40))
def test_run_equals_step_on_random_programs(seed):
    compare_on_random_program(seed)


def test_self_modifying_code_is_retranslated():
    """A loop rewrites an instruction of its own body: the fast path must see the new one."""
    a = asm.Asm(0x00400000)
    a("addiu", 8, 0, 3)  # iterations
    a.li(9, 0x00400000)
    a.li(10, asm.imm("addiu", 2, 2, 100))  # the replacement for `patched`
    a.label("loop")
    a.label("patched")
    a("addiu", 2, 2, 1)
    a("sw", 10, 4 * 5, 9)  # overwrite word 5 (= `patched`, after li's 2+2 words and addiu)
    a("addiu", 8, 8, -1)
    a.branch("bne", "loop", rs=8, rt=0)
    a.word(asm.NOP)
    a("addu", 4, 2, 0)
    a("addiu", 2, 0, 4001)
    a("syscall")
    assert a.labels["patched"] == 0x00400000 + 4 * 5
    elf = asm.elf32_mips([(0x00400000, a.assemble(), 0)], 0x00400000)
    slow, fast = initial_state(elf), initial_state(elf)
    step_n(slow, 1000)
    run(fast, 1000)
    assert slow.exit_code == (1 + 100 + 100) & 0xFF
    assert fast.encode() == slow.encode()


def test_run_after_a_manual_write_into_code_uses_the_new_code():
    loop = [asm.imm("addiu", 4, 4, 1), asm.imm("beq", 0, 0, 0xFFFE), asm.NOP]  # 3-step loop
    elf = asm.elf32_mips(
        [(0x00400000, b"".join(w.to_bytes(4, "big") for w in loop), 0)], 0x00400000
    )
    state = initial_state(elf)
    run(state, 30)
    state.memory.write_u32(0x00400000, asm.imm("addiu", 4, 4, 2))
    before = state.regs[4]
    run(state, 30)
    assert state.regs[4] == before + 2 * 10
