"""Run a few instructions in unicorn (MIPS32 big-endian) and in vm.step from the same state."""

from __future__ import annotations

from dataclasses import dataclass

from unicorn import UC_ARCH_MIPS, UC_HOOK_INTR, UC_MODE_BIG_ENDIAN, UC_MODE_MIPS32, Uc, UcError
from unicorn.mips_const import UC_MIPS_REG_0, UC_MIPS_REG_HI, UC_MIPS_REG_LO, UC_MIPS_REG_PC

from vm.memory import Memory
from vm.state import State
from vm.step import step

CODE = 0x00400000
AT = 0x00400100  # where the instructions under test start
DATA = 0x10000000
PAGE = 0x1000


@dataclass
class Machine:
    regs: list[int]
    hi: int
    lo: int
    pc: int
    data: bytes
    trapped: bool  # unicorn: an exception (overflow, trap); VM: a panic state


class UnicornRef:
    """One unicorn instance reused across cases (its translation cache is flushed each time)."""

    def __init__(self) -> None:
        self.uc = Uc(UC_ARCH_MIPS, UC_MODE_MIPS32 + UC_MODE_BIG_ENDIAN)
        self.uc.mem_map(CODE, PAGE)
        self.uc.mem_map(DATA, PAGE)
        self.interrupts: list[int] = []

        def on_interrupt(uc: Uc, number: int, _: object) -> None:
            self.interrupts.append(number)
            uc.emu_stop()

        self.uc.hook_add(UC_HOOK_INTR, on_interrupt)

    def run(
        self, words: list[int], regs: list[int], hi: int, lo: int, data: bytes, count: int
    ) -> Machine:
        uc = self.uc
        self.interrupts.clear()
        code = bytearray(PAGE)
        for i, w in enumerate(words):
            code[AT - CODE + 4 * i : AT - CODE + 4 * i + 4] = w.to_bytes(4, "big")
        uc.mem_write(CODE, bytes(code))
        uc.mem_write(DATA, data)
        uc.ctl_remove_cache(CODE, CODE + PAGE)
        for i in range(1, 32):
            uc.reg_write(UC_MIPS_REG_0 + i, regs[i])
        uc.reg_write(UC_MIPS_REG_HI, hi)
        uc.reg_write(UC_MIPS_REG_LO, lo)
        trapped = False
        try:
            uc.emu_start(AT, 0, count=count)
        except UcError:
            trapped = True
        trapped = trapped or bool(self.interrupts)
        return Machine(
            [uc.reg_read(UC_MIPS_REG_0 + i) for i in range(32)],
            uc.reg_read(UC_MIPS_REG_HI),
            uc.reg_read(UC_MIPS_REG_LO),
            uc.reg_read(UC_MIPS_REG_PC),
            bytes(uc.mem_read(DATA, PAGE)),
            trapped,
        )


def vm_state(words: list[int], regs: list[int], hi: int, lo: int, data: bytes) -> State:
    mem = Memory()
    for i, w in enumerate(words):
        mem.write_u32(AT + 4 * i, w)
    mem.write_bytes(DATA, data)
    return State(mem, pc=AT, next_pc=AT + 4, hi=hi, lo=lo, regs=[0] + list(regs[1:]))


def vm_run(words: list[int], regs: list[int], hi: int, lo: int, data: bytes, count: int) -> Machine:
    state = vm_state(words, regs, hi, lo, data)
    for _ in range(count):
        step(state)
    return Machine(
        list(state.regs),
        state.hi,
        state.lo,
        state.pc,
        state.memory.read_bytes(DATA, PAGE),
        state.exited,
    )
