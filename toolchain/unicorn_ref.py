"""Reference execution of a MIPS program in unicorn, for tests only.

Place in the pipeline: a test oracle beside the real executors. opmlc's MIPS build
(opmlc/backend/mips_program.py) is checked here against the native build before, and
independently of, our own VM (vm/); later the VM is checked against it step counts included.

The machine follows docs/DESIGN.md "The MIPS program": the PT_LOAD segments of the ELF, the task
descriptor (u32 big-endian node index, then the region table: one u32 per value) at 0x30000000, $sp = 0x7FFFF000 and every other register
zero, input tensors written at their regions. Every other byte reads as zero: the whole 4 GiB space
is mapped up front, as in the VM (the host commits memory only for the pages touched).

Two unicorn traps, and how we avoid them:

- Its MIPS CPU runs in kernel mode, where 0x80000000-0xBFFFFFFF (kseg0/kseg1) are fixed
  windows onto physical 0-0x1FFFFFFF and 0xC0000000 and above go through the TLB: our tensor
  regions would silently alias the program image. We pick the P5600 core, which has MIPS
  Segmentation Control, and run a boot stub (`mtc0` to SegCtl0/SegCtl1) that makes every kernel
  segment unmapped with physical address = virtual address. Low memory is already identity
  (the reset state has Status.ERL set), so the CPU sees the flat 4 GiB space the VM has. The
  P5600 is MIPS32 release 5, which still has every MIPS32 instruction LLVM emits for `mips32`.
- The alternative, `UC_TLB_VIRTUAL`, is broken for us: a TLB fill caused by a load or store in a
  branch delay slot leaks the delay-slot flags into the next block, which then executes wrongly
  or raises a spurious Reserved Instruction (unicorn issue #2272, open in 2.1.4). LLVM puts
  loads and stores in delay slots all the time. The same leak happens when pages are mapped
  from an unmapped-access hook, so the whole space is mapped up front.

Reading the ELF uses lief, not our linker's own structures, so a header the linker writes wrong
shows up here.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

import lief
from unicorn import (
    UC_ARCH_MIPS,
    UC_HOOK_BLOCK,
    UC_HOOK_INTR,
    UC_MODE_BIG_ENDIAN,
    UC_MODE_MIPS32,
    Uc,
    UcError,
)
from unicorn.mips_const import (
    UC_CPU_MIPS32_P5600,
    UC_MIPS_REG_A0,
    UC_MIPS_REG_PC,
    UC_MIPS_REG_SP,
    UC_MIPS_REG_T0,
    UC_MIPS_REG_V0,
)

TASK_DESCRIPTOR = 0x30000000
STACK_TOP = 0x7FFFF000
WHOLE_GRAPH = 0xFFFFFFFF
EXIT_SYSCALLS = (4001, 4246)
PAGE = 0x1000
# unicorn's interrupt number for `syscall` on MIPS (QEMU's EXCP_SYSCALL).
_INTR_SYSCALL = 17

# Segmentation Control: a 16-bit config per segment, PA (physical address bits 31:29) in bits
# 15:9, access mode in bits 6:4 (0 = unmapped, kernel only). SegCtl0 holds kseg2 (high half) and
# kseg3, SegCtl1 holds kseg0 (high half) and kseg1.
_SEGCTL0 = ((6 << 9) << 16) | (7 << 9)
_SEGCTL1 = ((4 << 9) << 16) | (5 << 9)
_BOOT_ADDRESS = 0x1000


def _boot_words() -> list[int]:
    def li_t0(value: int) -> list[int]:  # lui $t0, hi; ori $t0, $t0, lo
        return [0x3C080000 | (value >> 16), 0x35080000 | (value & 0xFFFF)]

    def mtc0_t0(reg: int, sel: int) -> int:
        return (0x10 << 26) | (4 << 21) | (8 << 16) | (reg << 11) | sel

    return li_t0(_SEGCTL0) + [mtc0_t0(5, 2)] + li_t0(_SEGCTL1) + [mtc0_t0(5, 3), 0]


@dataclass
class UnicornResult:
    """How a run ended: exit code (None if it did not exit), output bytes, instructions run.

    `instructions` counts every executed instruction including delay slots and the final
    `syscall`, the way the VM counts steps.
    """

    exit_code: int | None
    outputs: list[bytes]
    instructions: int
    panic: str | None = None


class _Machine:
    def __init__(self) -> None:
        self.uc = Uc(UC_ARCH_MIPS, UC_MODE_MIPS32 | UC_MODE_BIG_ENDIAN)
        self.uc.ctl_set_cpu_model(UC_CPU_MIPS32_P5600)
        for base in range(0, 1 << 32, 1 << 30):
            self.uc.mem_map(base, 1 << 30)
        boot = b"".join(struct.pack(">I", w) for w in _boot_words())
        self.uc.mem_write(_BOOT_ADDRESS, boot)
        self.uc.emu_start(_BOOT_ADDRESS, _BOOT_ADDRESS + len(boot) - 4)
        # Leave nothing of the boot behind: memory zero, registers as the VM starts them.
        self.uc.mem_write(_BOOT_ADDRESS, bytes(len(boot)))
        self.uc.reg_write(UC_MIPS_REG_T0, 0)
        self.exit_code: int | None = None
        self.panic: str | None = None
        self.executed = 0  # instructions of the blocks entered so far
        self.block_end = 0
        self.uc.hook_add(UC_HOOK_BLOCK, self._on_block)
        self.uc.hook_add(UC_HOOK_INTR, self._on_intr)

    def _on_block(self, uc: Uc, address: int, size: int, _d) -> None:  # noqa: ANN001
        # One Python call per translation block, not per instruction; a block that ends early
        # (only the exit syscall does) is corrected in `_on_intr`.
        self.executed += size // 4
        self.block_end = address + size

    def _on_intr(self, uc: Uc, intno: int, _d) -> None:  # noqa: ANN001
        pc = uc.reg_read(UC_MIPS_REG_PC)
        if intno == _INTR_SYSCALL:
            v0 = uc.reg_read(UC_MIPS_REG_V0)
            # unicorn reports the pc after the syscall; the block's instructions from there on
            # did not run.
            self.executed -= (self.block_end - pc) // 4
            if v0 in EXIT_SYSCALLS:
                self.exit_code = uc.reg_read(UC_MIPS_REG_A0) & 0xFF
            else:
                self.panic = f"syscall {v0} at {pc:#010x}"
        else:
            self.panic = f"exception {intno} at {pc:#010x}"
        uc.emu_stop()


def load_segments(elf: bytes) -> tuple[int, list[tuple[int, bytes, int]]]:
    """The entry point and the PT_LOAD segments (address, file bytes, memory size) of an ELF."""
    parsed = lief.ELF.parse(list(elf))
    if parsed is None:
        raise ValueError("not an ELF file")
    segments = []
    for seg in parsed.segments:
        if seg.type == lief.ELF.Segment.TYPE.LOAD:
            segments.append((seg.virtual_address, bytes(seg.content), seg.virtual_size))
    return parsed.entrypoint, segments


def run_elf(
    elf: bytes,
    node: int = WHOLE_GRAPH,
    inputs: Sequence[tuple[int, bytes]] = (),
    outputs: Sequence[tuple[int, int]] = (),
    max_instructions: int = 50_000_000,
    table: Sequence[int] = (),
) -> UnicornResult:
    """Run a task of `elf` to its exit.

    `inputs` are (address, bytes) written before the start, `outputs` (address, size) read after
    the end; `table` is the descriptor's region table (value i's address at entry i). A run that reaches `max_instructions` without exiting has `exit_code` None.
    """
    m = _Machine()
    entry, segments = load_segments(elf)
    for addr, data, _memsz in segments:
        m.uc.mem_write(addr, data)
    m.uc.mem_write(TASK_DESCRIPTOR, struct.pack(f">{1 + len(table)}I", node & 0xFFFFFFFF, *table))
    for addr, data in inputs:
        m.uc.mem_write(addr, bytes(data))
    m.uc.reg_write(UC_MIPS_REG_SP, STACK_TOP)
    try:
        # `until` is an address never reached (the page at 0 holds nothing); `count` bounds the
        # run inside unicorn, in C, without a Python hook per instruction.
        m.uc.emu_start(entry, 0, count=max_instructions)
    except UcError as e:
        m.panic = f"{e} at {m.uc.reg_read(UC_MIPS_REG_PC):#010x}"
    instructions = m.executed
    if m.exit_code is None and m.panic is None:
        m.panic = f"no exit within {max_instructions} instructions"
        instructions = max_instructions
    outs = [bytes(m.uc.mem_read(addr, size)) for addr, size in outputs]
    return UnicornResult(
        exit_code=m.exit_code,
        outputs=outs,
        instructions=instructions,
        panic=m.panic,
    )
