"""A tiny MIPS32 encoder and ELF writer for tests and benchmarks (not used by the VM itself).

Pipeline: real programs come from opmlc/backend (LLVM) and the linker; this module lets
tests/vm and bench/vm_speed.py hand-assemble small programs (a dot-product loop, a call, the
exit syscall) into words or into a minimal ELF32 big-endian MIPS executable, so that the VM
can be exercised before, and independently of, the compiler. The backend's one use:
opmlc/backend/kernels/_mipsdot.py encodes the q-kernels' hand-written inner loops with `Asm`
(so a change of an encoding here changes those programs' images).
"""

from __future__ import annotations

import struct

MASK = 0xFFFFFFFF

SPECIAL_FUNCT = {
    "sll": 0x00, "srl": 0x02, "sra": 0x03, "sllv": 0x04, "srlv": 0x06, "srav": 0x07,
    "jr": 0x08, "jalr": 0x09, "movz": 0x0A, "movn": 0x0B, "syscall": 0x0C, "break": 0x0D,
    "mfhi": 0x10, "mthi": 0x11, "mflo": 0x12, "mtlo": 0x13, "mult": 0x18, "multu": 0x19,
    "div": 0x1A, "divu": 0x1B, "add": 0x20, "addu": 0x21, "sub": 0x22, "subu": 0x23,
    "and": 0x24, "or": 0x25, "xor": 0x26, "nor": 0x27, "slt": 0x2A, "sltu": 0x2B, "teq": 0x34,
}  # fmt: skip
SPECIAL2_FUNCT = {"madd": 0x00, "maddu": 0x01, "mul": 0x02, "msub": 0x04, "msubu": 0x05,
                  "clz": 0x20, "clo": 0x21}  # fmt: skip
REGIMM_RT = {"bltz": 0x00, "bgez": 0x01, "bltzal": 0x10, "bgezal": 0x11}
I_OPCODE = {
    "beq": 0x04, "bne": 0x05, "blez": 0x06, "bgtz": 0x07, "addi": 0x08, "addiu": 0x09,
    "slti": 0x0A, "sltiu": 0x0B, "andi": 0x0C, "ori": 0x0D, "xori": 0x0E, "lui": 0x0F,
    "lb": 0x20, "lh": 0x21, "lwl": 0x22, "lw": 0x23, "lbu": 0x24, "lhu": 0x25, "lwr": 0x26,
    "sb": 0x28, "sh": 0x29, "swl": 0x2A, "sw": 0x2B, "swr": 0x2E,
}  # fmt: skip
J_OPCODE = {"j": 0x02, "jal": 0x03}


def r_type(funct: int, rd: int = 0, rs: int = 0, rt: int = 0, sa: int = 0, op: int = 0) -> int:
    return (op << 26) | (rs << 21) | (rt << 16) | (rd << 11) | (sa << 6) | funct


def i_type(op: int, rt: int, rs: int, imm: int) -> int:
    return (op << 26) | (rs << 21) | (rt << 16) | (imm & 0xFFFF)


def special(name: str, rd: int = 0, rs: int = 0, rt: int = 0, sa: int = 0) -> int:
    """A SPECIAL instruction by name (fields as in the manual: rd, rs, rt, sa)."""
    return r_type(SPECIAL_FUNCT[name], rd, rs, rt, sa)


def special2(name: str, rd: int = 0, rs: int = 0, rt: int = 0) -> int:
    """A SPECIAL2 instruction; clz/clo get rt = rd as MIPS32 requires."""
    if name in ("clz", "clo"):
        rt = rd
    return r_type(SPECIAL2_FUNCT[name], rd, rs, rt, 0, op=0x1C)


def imm(name: str, rt: int, rs: int, value: int) -> int:
    """An I-type instruction (ALU immediate, load/store `rt, value(rs)`, beq/bne offsets)."""
    return i_type(I_OPCODE[name], rt, rs, value)


def regimm(name: str, rs: int, offset: int) -> int:
    return i_type(0x01, REGIMM_RT[name], rs, offset)


def jump(name: str, target: int) -> int:
    return (J_OPCODE[name] << 26) | ((target >> 2) & 0x03FFFFFF)


NOP = 0


class Asm:
    """Append instructions; branches and jumps may name labels defined before or after."""

    def __init__(self, base: int) -> None:
        self.base = base
        self.items: list[int | tuple[str, str, tuple[int, ...]]] = []
        self.labels: dict[str, int] = {}

    @property
    def pc(self) -> int:
        return self.base + 4 * len(self.items)

    def label(self, name: str) -> None:
        self.labels[name] = self.pc

    def word(self, w: int) -> None:
        self.items.append(w & MASK)

    def __call__(self, name: str, *args: int) -> None:
        """Emit by mnemonic: `a("addu", rd, rs, rt)`, `a("lw", rt, off, base)`, `a("sll", rd, rt, sa)`."""
        if name in ("sll", "srl", "sra"):
            rd, rt, sa = args
            self.word(special(name, rd=rd, rt=rt, sa=sa))
        elif name in ("sllv", "srlv", "srav"):
            rd, rt, rs = args
            self.word(special(name, rd=rd, rs=rs, rt=rt))
        elif name in ("jr", "mthi", "mtlo"):
            self.word(special(name, rs=args[0]))
        elif name == "jalr":
            rd, rs = args if len(args) == 2 else (31, args[0])
            self.word(special(name, rd=rd, rs=rs))
        elif name in ("mfhi", "mflo"):
            self.word(special(name, rd=args[0]))
        elif name in ("mult", "multu", "div", "divu", "teq"):
            self.word(special(name, rs=args[0], rt=args[1]))
        elif name in ("syscall", "break"):
            self.word(special(name))
        elif name in SPECIAL_FUNCT:
            rd, rs, rt = args
            self.word(special(name, rd=rd, rs=rs, rt=rt))
        elif name in ("madd", "maddu", "msub", "msubu"):
            self.word(special2(name, rs=args[0], rt=args[1]))
        elif name in ("clz", "clo"):
            self.word(special2(name, rd=args[0], rs=args[1]))
        elif name == "mul":
            self.word(special2(name, rd=args[0], rs=args[1], rt=args[2]))
        elif name == "lui":
            self.word(imm(name, args[0], 0, args[1]))
        elif name in I_OPCODE and I_OPCODE[name] >= 0x20:  # rt, offset(base)
            rt, off, base = args
            self.word(imm(name, rt, base, off))
        elif name in I_OPCODE and I_OPCODE[name] >= 0x08:  # rt, rs, imm
            self.word(imm(name, args[0], args[1], args[2]))
        else:
            raise ValueError(f"use branch()/jump() for {name}")

    def branch(self, name: str, label: str, rs: int = 0, rt: int = 0) -> None:
        """beq/bne/blez/bgtz/bltz/bgez/bltzal/bgezal to a label (the delay slot is yours)."""
        self.items.append((name, label, (rs, rt)))

    def jump(self, name: str, label: str) -> None:
        """j/jal to a label."""
        self.items.append((name, label, ()))

    def li(self, r: int, value: int) -> None:
        """Load a 32-bit constant (lui + ori)."""
        self("lui", r, (value >> 16) & 0xFFFF)
        self("ori", r, r, value & 0xFFFF)

    def words(self) -> list[int]:
        out = []
        for i, it in enumerate(self.items):
            if isinstance(it, int):
                out.append(it)
                continue
            name, label, regs = it
            pc = self.base + 4 * i
            target = self.labels[label]
            if name in J_OPCODE:
                out.append(jump(name, target))
                continue
            off = (target - pc - 4) >> 2
            if name in REGIMM_RT:
                out.append(regimm(name, regs[0], off))
            else:
                out.append(i_type(I_OPCODE[name], regs[1], regs[0], off))
        return out

    def assemble(self) -> bytes:
        return b"".join(w.to_bytes(4, "big") for w in self.words())


def elf32_mips(segments: list[tuple[int, bytes, int]], entry: int) -> bytes:
    """A minimal ELF32 big-endian MIPS executable: (vaddr, file bytes, memsz) per PT_LOAD."""
    ehsize, phentsize = 52, 32
    offset = ehsize + phentsize * len(segments)
    phdrs, body = b"", b""
    for vaddr, data, memsz in segments:
        pad = (-(offset + len(body))) % 16
        body += bytes(pad)
        off = offset + len(body)
        # p_type, p_offset, p_vaddr, p_paddr, p_filesz, p_memsz, p_flags (rwx), p_align
        phdrs += struct.pack(">8I", 1, off, vaddr, vaddr, len(data), max(memsz, len(data)), 7, 16)
        body += data
    ident = b"\x7fELF" + bytes([1, 2, 1, 0]) + bytes(8)  # ELF32, big-endian, version 1
    header = ident + struct.pack(
        ">HHIIIIIHHHHHH",
        2,  # ET_EXEC
        8,  # EM_MIPS
        1,
        entry,
        ehsize,  # e_phoff
        0,  # e_shoff: no sections
        0x50000000,  # e_flags: EF_MIPS_ARCH_32
        ehsize,
        phentsize,
        len(segments),
        40,
        0,
        0,
    )
    return header + phdrs + body


DEMO_TEXT = 0x00400000
DEMO_DATA = 0x10000000


def demo_program(vectors: int = 4, length: int = 64, repeat: int = 1, seed: int = 0) -> bytes:
    """A small ELF shaped like compiled model code: fixed-point dot products in a loop.

    `_start` calls `dot(a, b, n)` (a leaf function that saves $ra on the stack, accumulates
    with madd in HI/LO and rescales by >> 16) for each of `vectors` rows of a matrix times one
    vector, `repeat` times, storing each result with sw and its low byte with sb, then exits
    with code 0. About 8 instructions per multiply-add, like LLVM's output.
    """
    import random

    rng = random.Random(seed)
    a = Asm(DEMO_TEXT)
    mat, vec, out = DEMO_DATA, DEMO_DATA + 4 * vectors * length, DEMO_DATA + 0x8000
    a.li(16, repeat)  # $s0: repetitions left
    a.label("again")
    a.li(17, mat)  # $s1: row pointer
    a.li(18, out)  # $s2: output pointer
    a("addiu", 19, 0, vectors)  # $s3: rows left
    a.label("row")
    a("addu", 4, 17, 0)
    a.li(5, vec)
    a.jump("jal", "dot")
    a("addiu", 6, 0, length)  # delay slot: third argument
    a("sw", 2, 0, 18)
    a("sb", 2, 0x100, 18)
    a("lbu", 8, 0x100, 18)
    a("addu", 9, 8, 2)
    a("addiu", 17, 17, 4 * length)
    a("addiu", 19, 19, -1)
    a.branch("bgtz", "row", rs=19)
    a("addiu", 18, 18, 4)
    a("addiu", 16, 16, -1)
    a.branch("bne", "again", rs=16, rt=0)
    a.word(NOP)
    a("addiu", 2, 0, 4001)
    a("addiu", 4, 0, 0)
    a("syscall")
    a.label("dot")  # v0 = (sum a[i] * b[i]) >> 16, wrapping like the IR's int64 accumulator
    a("addiu", 29, 29, -8)
    a("sw", 31, 4, 29)
    a("mtlo", 0)
    a("mthi", 0)
    a.label("loop")
    a("lw", 8, 0, 4)
    a("lw", 9, 0, 5)
    a("addiu", 4, 4, 4)
    a("addiu", 6, 6, -1)
    a("madd", 8, 9)
    a.branch("bne", "loop", rs=6, rt=0)
    a("addiu", 5, 5, 4)
    a("mflo", 10)
    a("mfhi", 11)
    a("srl", 10, 10, 16)
    a("sll", 11, 11, 16)
    a("or", 2, 10, 11)
    a("lw", 31, 4, 29)
    a("jr", 31)
    a("addiu", 29, 29, 8)
    values = [rng.randrange(-(1 << 20), 1 << 20) & MASK for _ in range(vectors * length + length)]
    data = b"".join(v.to_bytes(4, "big") for v in values)
    return elf32_mips([(DEMO_TEXT, a.assemble(), 0), (DEMO_DATA, data, 0x9000)], DEMO_TEXT)
