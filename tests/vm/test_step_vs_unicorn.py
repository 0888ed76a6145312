"""vm.step agrees with unicorn on every supported instruction, operands random and extreme.

Registers, HI/LO, pc and the data page are compared after each instruction (after the branch
and its delay slot for branches). Cases where the VM panics (div by zero, overflow of
add/addi/sub, an equal teq) must be ones where unicorn traps, except division by zero, which
MIPS leaves unpredictable and unicorn does not trap.
"""

from __future__ import annotations

import random

import pytest
from vm_harness import AT, DATA, PAGE, UnicornRef, vm_run

from vm import asm

EDGE = [0, 1, 2, 31, 32, 0x7FFFFFFF, 0x80000000, 0x80000001, 0xFFFFFFFF, 0xFFFFFFFE, 0x12345678]
CASES = 40


@pytest.fixture(scope="module")
def uc() -> UnicornRef:
    return UnicornRef()


def value(rng: random.Random) -> int:
    return rng.choice(EDGE) if rng.random() < 0.5 else rng.getrandbits(32)


def random_machine(rng: random.Random) -> tuple[list[int], int, int, bytes]:
    regs = [0] + [value(rng) for _ in range(31)]
    return regs, value(rng), value(rng), rng.randbytes(PAGE)


def check(uc: UnicornRef, words: list[int], regs, hi, lo, data, count: int, may_panic=False):
    ours = vm_run(words, regs, hi, lo, data, count)
    ref = uc.run(words, regs, hi, lo, data, count)
    if ours.trapped:
        assert may_panic, f"VM panicked on {[hex(w) for w in words]}"
        assert ref.trapped or may_panic == "unpredictable"
        return
    assert not ref.trapped, f"unicorn trapped on {[hex(w) for w in words]}, VM did not"
    for i in range(32):
        assert ours.regs[i] == ref.regs[i], f"${i}: {ours.regs[i]:#x} != {ref.regs[i]:#x}"
    assert (ours.hi, ours.lo) == (ref.hi, ref.lo), "HI/LO"
    assert ours.pc == ref.pc, f"pc {ours.pc:#x} != {ref.pc:#x}"
    assert ours.data == ref.data, "data page"


SPECIAL_ALU = ["sll", "srl", "sra", "sllv", "srlv", "srav", "movz", "movn", "addu", "subu",
               "and", "or", "xor", "nor", "slt", "sltu"]  # fmt: skip


@pytest.mark.parametrize("name", SPECIAL_ALU + ["mfhi", "mflo", "mthi", "mtlo"])
def test_special_alu_matches_unicorn(uc, name):
    rng = random.Random(name)
    for _ in range(CASES):
        regs, hi, lo, data = random_machine(rng)
        rd, rs, rt = rng.randrange(32), rng.randrange(32), rng.randrange(32)
        # Canonical encodings only: MIPS reserves the unused fields as zero (and r2 gives
        # srl/srlv with rs/sa = 1 the meaning rotr/rotrv); unicorn rejects the others.
        sa = rng.choice([0, 1, 31, rng.randrange(32)]) if name in ("sll", "srl", "sra") else 0
        if name in ("sll", "srl", "sra"):
            rs = 0
        elif name in ("mfhi", "mflo"):
            rs = rt = 0
        elif name in ("mthi", "mtlo"):
            rt = rd = 0
        check(uc, [asm.special(name, rd=rd, rs=rs, rt=rt, sa=sa)], regs, hi, lo, data, 1)


@pytest.mark.parametrize("name", ["add", "sub", "mult", "multu", "div", "divu", "teq"])
def test_special_trapping_or_hilo_matches_unicorn(uc, name):
    rng = random.Random(name)
    pairs = [(0x80000000, 0xFFFFFFFF), (0x7FFFFFFF, 1), (0x80000000, 1), (5, 0), (7, 7)]
    for i in range(CASES + len(pairs)):
        regs, hi, lo, data = random_machine(rng)
        rd, rs, rt = rng.randrange(32), rng.randrange(1, 32), rng.randrange(1, 32)
        if i < len(pairs) and rs != rt:
            regs[rs], regs[rt] = pairs[i]
        word = asm.special(
            name, rd=0 if name in ("mult", "multu", "div", "divu", "teq") else rd, rs=rs, rt=rt
        )
        may = "unpredictable" if name in ("div", "divu") else True
        check(uc, [word], regs, hi, lo, data, 1, may_panic=may)


@pytest.mark.parametrize("name", ["madd", "maddu", "mul", "msub", "msubu", "clz", "clo"])
def test_special2_matches_unicorn(uc, name):
    rng = random.Random(name)
    for _ in range(CASES):
        regs, hi, lo, data = random_machine(rng)
        rd = (
            0 if name.startswith(("madd", "msub")) else rng.randrange(32)
        )  # rd names an accumulator
        word = asm.special2(name, rd=rd, rs=rng.randrange(32), rt=rng.randrange(32))
        check(uc, [word], regs, hi, lo, data, 1)


@pytest.mark.parametrize("name", ["addi", "addiu", "slti", "sltiu", "andi", "ori", "xori", "lui"])
def test_immediate_matches_unicorn(uc, name):
    rng = random.Random(name)
    imms = [0, 1, 0x7FFF, 0x8000, 0xFFFF, 0x8001]
    for _ in range(CASES):
        regs, hi, lo, data = random_machine(rng)
        value16 = rng.choice(imms) if rng.random() < 0.5 else rng.getrandbits(16)
        word = asm.imm(name, rng.randrange(32), rng.randrange(32), value16)
        check(uc, [word], regs, hi, lo, data, 1, may_panic=name == "addi")


ACCESS_ALIGN = {"lb": 1, "lbu": 1, "lh": 2, "lhu": 2, "lw": 4, "lwl": 1, "lwr": 1,
                "sb": 1, "sh": 2, "sw": 4, "swl": 1, "swr": 1}  # fmt: skip


@pytest.mark.parametrize("name", list(ACCESS_ALIGN))
def test_load_store_matches_unicorn(uc, name):
    rng = random.Random(name)
    for _ in range(CASES):
        regs, hi, lo, data = random_machine(rng)
        base, rt = rng.randrange(1, 32), rng.randrange(32)
        offset = rng.randrange(-0x80, 0x80)
        addr = DATA + rng.randrange(0x100, PAGE - 0x100)
        addr -= addr % ACCESS_ALIGN[name]
        regs[base] = (addr - offset) & 0xFFFFFFFF
        check(uc, [asm.imm(name, rt, base, offset)], regs, hi, lo, data, 1)


BRANCHES = ["beq", "bne", "blez", "bgtz", "bltz", "bgez", "bltzal", "bgezal",
            "j", "jal", "jr", "jalr"]  # fmt: skip
SLOT_OPS = ["addu", "subu", "or", "xor", "slt", "sll"]


@pytest.mark.parametrize("name", BRANCHES)
def test_branch_and_delay_slot_match_unicorn(uc, name):
    """Taken and not-taken, links, and a delay slot that rewrites the branch's own operands."""
    rng = random.Random(name)
    for _ in range(CASES):
        regs, hi, lo, data = random_machine(rng)
        rs, rt = rng.randrange(1, 31), rng.randrange(32)
        regs[rs] = rng.choice([0, 1, 5, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF])
        if rng.random() < 0.3:
            regs[rt] = regs[rs]
        target = AT + 4 + 4 * rng.randrange(-60, 60)
        off = (target - AT - 4) >> 2
        if name in asm.REGIMM_RT:
            word = asm.regimm(name, rs, off)
        elif name in ("j", "jal"):
            word = asm.jump(name, target)
        elif name == "jr":
            regs[rs] = target
            word = asm.special("jr", rs=rs)
        elif name == "jalr":
            regs[rs] = target
            rd = rng.choice([31, rng.randrange(1, 32)])
            if rd == rs:
                rd = 31 if rs != 31 else 1
            word = asm.special("jalr", rd=rd, rs=rs)
        else:
            word = asm.imm(name, 0 if name in ("blez", "bgtz") else rt, rs, off)
        # The slot writes a register the branch reads (or $ra): it must see the old values.
        dst = rng.choice([rs, rt, 31, rng.randrange(32)])
        op = rng.choice(SLOT_OPS)
        slot = asm.special(
            op,
            rd=dst,
            rs=0 if op == "sll" else rng.randrange(32),
            rt=rs,
            sa=3 if op == "sll" else 0,
        )
        check(uc, [word, slot], regs, hi, lo, data, 2)
