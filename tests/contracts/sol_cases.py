"""Random pre-states, one instruction each, for checking MIPS.sol against the Python VM.

Where it sits: test input only. Each case is a `vm.state.State` whose next instruction is the
one under test, with random registers, HI/LO, step counter and memory around the accessed word;
`vm.witness.step_with_proof` turns it into (pre_state, proof, post_hash) and the contract must
return the same post_hash. Nothing here computes a post-state: the VM is the reference.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from vm import asm
from vm.state import State

MASK = 0xFFFFFFFF

# Register values that sit on the edges of the 32-bit semantics (sign, overflow, zero).
EDGE_VALUES = (0, 1, 2, 31, 32, 0x7FFF, 0x8000, 0xFFFF, 0x7FFFFFFF, 0x80000000, 0x80000001, MASK)

# Opcode classes, as bench/gas.py reports them.
CLASSES: dict[str, tuple[str, ...]] = {
    "alu": (
        "addu", "subu", "add", "sub", "and", "or", "xor", "nor", "slt", "sltu", "movz", "movn",
        "addiu", "addi", "slti", "sltiu", "andi", "ori", "xori", "lui", "clz", "clo", "teq",
        "mfhi", "mflo", "mthi", "mtlo",
    ),
    "shift": ("sll", "srl", "sra", "sllv", "srlv", "srav"),
    "branch/jump": (
        "beq", "bne", "blez", "bgtz", "bltz", "bgez", "bltzal", "bgezal", "j", "jal", "jr", "jalr",
    ),
    "load": ("lb", "lbu", "lh", "lhu", "lw", "lwl", "lwr"),
    "store": ("sb", "sh", "sw", "swl", "swr"),
    "mult/div/madd": ("mult", "multu", "div", "divu", "mul", "madd", "maddu", "msub", "msubu"),
    "syscall": ("syscall", "break"),
}  # fmt: skip
MNEMONICS: tuple[str, ...] = tuple(m for names in CLASSES.values() for m in names)
CLASS_OF: dict[str, str] = {m: c for c, names in CLASSES.items() for m in names}

LOADS = frozenset(CLASSES["load"])
STORES = frozenset(CLASSES["store"])


def reg_value(rng: random.Random) -> int:
    """A register value: an edge value, a small number, or anything."""
    roll = rng.random()
    if roll < 0.35:
        return rng.choice(EDGE_VALUES)
    if roll < 0.5:
        return rng.randrange(-64, 64) & MASK
    return rng.getrandbits(32)


def _code_address(rng: random.Random) -> int:
    """Where the instruction lives: the program image, a random word, or an edge of the space."""
    roll = rng.random()
    if roll < 0.6:
        return 0x00400000 + 4 * rng.randrange(0x4000)
    if roll < 0.8:
        return rng.getrandbits(32) & ~3
    # The top of memory (pc + 4 wraps) and the end of a 256 MiB segment (j's target region).
    return rng.choice((0xFFFFFFFC, 0xFFFFFFF8, 0x0FFFFFFC, 0x7FFFFFFC, 0x00000000))


def _fill_noise(rng: random.Random, state: State, near: int) -> None:
    """Random words in the leaf, page and neighbourhood of `near`, so proofs have real siblings."""
    mem = state.memory
    for _ in range(rng.randrange(0, 4)):
        mem.write_u32((near & ~31) | (rng.randrange(8) * 4), rng.getrandbits(32))
    for _ in range(rng.randrange(0, 3)):
        mem.write_u32((near + rng.randrange(-4096, 4096) * 4) & MASK & ~3, rng.getrandbits(32))
    for _ in range(rng.randrange(0, 3)):
        mem.write_u32(rng.getrandbits(32) & ~3, rng.getrandbits(32))


def encode(name: str, rng: random.Random, rs: int, rt: int, rd: int) -> int:
    """A random instance of mnemonic `name` with the given register fields."""
    sa = rng.randrange(32)
    imm16 = rng.choice((0, 1, 0x7FFF, 0x8000, 0xFFFF, rng.getrandbits(16)))
    if name in asm.SPECIAL_FUNCT:
        return asm.special(name, rd=rd, rs=rs, rt=rt, sa=sa)
    if name in asm.SPECIAL2_FUNCT:
        return asm.r_type(asm.SPECIAL2_FUNCT[name], rd, rs, rt, 0, op=0x1C)
    if name in asm.REGIMM_RT:
        return asm.regimm(name, rs, imm16)
    if name in asm.J_OPCODE:
        return (asm.J_OPCODE[name] << 26) | rng.getrandbits(26)
    return asm.imm(name, rt, rs, imm16)


def random_case(name: str, rng: random.Random) -> State:
    """A running state whose next instruction is a random `name`, in a random context."""
    state = State()
    state.regs = [0] + [reg_value(rng) for _ in range(31)]
    state.lo, state.hi = reg_value(rng), reg_value(rng)
    state.step = rng.choice((0, 1, rng.getrandbits(20), rng.getrandbits(63)))
    state.pc = _code_address(rng)
    # Mostly a straight-line pc; sometimes in a delay slot (nextPC elsewhere), where a branch or
    # jump must panic and anything else must run normally.
    state.next_pc = (state.pc + 4) & MASK if rng.random() < 0.8 else rng.getrandbits(32) & ~3

    rs, rt, rd = rng.randrange(32), rng.randrange(32), rng.randrange(32)
    if name in ("syscall", "break"):
        # The exit syscalls, each with a random code, and some other number that must panic.
        state.regs[2] = rng.choice((4001, 4246, 4001, 4246, reg_value(rng)))
        state.regs[4] = rng.choice((0, 1, 0xFF, reg_value(rng)))
    if name in ("beq", "bne", "teq", "movz", "movn") and rng.random() < 0.4:
        state.regs[rt] = state.regs[rs]  # equal operands: the other outcome
    if name in ("movz", "movn") and rng.random() < 0.3:
        state.regs[rt] = 0
    if name in ("add", "sub", "addi") and rng.random() < 0.4:
        state.regs[rs] = rng.choice((0x7FFFFFFF, 0x80000000, 0x7FFFFFFE, 0x80000001))  # overflow
    if name in ("div", "divu") and rng.random() < 0.2:
        state.regs[rt] = 0  # division by zero panics
    if name in ("div",) and rng.random() < 0.2:
        state.regs[rs], state.regs[rt] = 0x80000000, MASK  # INT_MIN / -1
    state.regs[0] = 0
    insn = encode(name, rng, rs, rt, rd)

    # The instruction word goes in after the data, so that a store aimed at it cannot clobber it
    # before the step (the step itself may overwrite it: that is fine).
    if name in LOADS or name in STORES:
        simm = insn & 0xFFFF
        simm = simm - 0x10000 if simm & 0x8000 else simm
        # Aim the access at a chosen address and alignment: aligned most of the time, every
        # byte offset (misaligned lw/sw/lh/sh panic) the rest.
        base = rng.choice((0x10000000, 0x80000000, 0x7FFFEF00, 0xFFFFFF00, rng.getrandbits(32)))
        addr = (base & ~3) | (rng.randrange(4) if rng.random() < 0.5 else 0)
        if rs != 0:
            state.regs[rs] = (addr - simm) & MASK
        else:
            addr = simm & MASK  # $zero as base: the immediate is the address
        word_addr = addr & ~3
        state.memory.write_u32(word_addr, rng.getrandbits(32))
        _fill_noise(rng, state, word_addr)
    _fill_noise(rng, state, state.pc)
    state.memory.write_u32(state.pc, insn)
    return state


def random_word_case(rng: random.Random) -> State:
    """A state whose next instruction is any 32-bit word: mostly invalid encodings (panics)."""
    state = random_case("addu", rng)
    insn = rng.getrandbits(32)
    if rng.random() < 0.5:  # a valid-looking opcode with a random function/rt field
        insn = (rng.choice((0x00, 0x01, 0x1C)) << 26) | (insn & 0x03FFFFFF)
    state.memory.write_u32(state.pc, insn)
    return state


def misaligned_pc_case(rng: random.Random) -> State:
    """A state whose pc is not a multiple of 4: a panic before any fetch."""
    state = random_case("addu", rng)
    state.pc = (state.pc & ~3) | rng.randrange(1, 4)
    return state


def exited_case(rng: random.Random) -> State:
    """An exited state (exit codes 0, 1, panic, other): a step must leave it as it is."""
    state = random_case(rng.choice(MNEMONICS), rng)
    state.exited = True
    state.exit_code = rng.choice((0, 1, 0xFF, rng.randrange(256)))
    return state


SPECIAL_CASES: dict[str, Callable[[random.Random], State]] = {
    "random-word": random_word_case,
    "misaligned-pc": misaligned_pc_case,
    "exited": exited_case,
}
