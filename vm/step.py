"""The reference semantics of one MIPS32 instruction: `step(state)`.

Pipeline: this is what `MIPS.sol` re-executes on chain, family by family (read the two side by
side: `_special`, `_regimm`, `_jump`, `_branch`, `_immediate`, `_special2`, `_load`, `_store`).
The fast path (vm/run.py) must give the same states and falls back to this function for
anything unusual; vm/witness.py wraps it with memory proofs.

The rules are DESIGN "The VM's instruction semantics". Decoding looks only at the opcode, the
function field (SPECIAL, SPECIAL2) and the rt field (REGIMM); other fields that MIPS32 reserves
as zero are ignored. Memory is accessed a whole aligned word at a time (sub-word loads and
stores read, merge and write back that word), so one memory proof covers every data access.

A program's behaviour never raises: every bad case is a panic state (exited, exit code 0xFF,
step + 1, nothing else changed). Only the environment can raise (a lazy tensor missing from
its store, vm.errors.StoreError).
"""

from __future__ import annotations

from vm.state import State

MASK = 0xFFFFFFFF
PANIC_EXIT_CODE = 0xFF
SYS_EXIT = 4001
SYS_EXIT_GROUP = 4246

OP_SPECIAL = 0x00
OP_REGIMM = 0x01
OP_J = 0x02
OP_JAL = 0x03
OP_SPECIAL2 = 0x1C
BRANCH_OPS = frozenset((0x04, 0x05, 0x06, 0x07))  # beq bne blez bgtz
IMMEDIATE_OPS = frozenset(range(0x08, 0x10))  # addi addiu slti sltiu andi ori xori lui
LOAD_OPS = frozenset((0x20, 0x21, 0x22, 0x23, 0x24, 0x25, 0x26))  # lb lh lwl lw lbu lhu lwr
STORE_OPS = frozenset((0x28, 0x29, 0x2A, 0x2B, 0x2E))  # sb sh swl sw swr


def _signed(x: int) -> int:
    return x - 0x100000000 if x & 0x80000000 else x


def _simm(insn: int) -> int:
    imm = insn & 0xFFFF
    return imm - 0x10000 if imm & 0x8000 else imm


def _set_reg(state: State, r: int, value: int) -> None:
    if r:  # $zero stays zero
        state.regs[r] = value & MASK


def _panic(state: State) -> None:
    state.exited = True
    state.exit_code = PANIC_EXIT_CODE
    state.step += 1


def _advance(state: State) -> None:
    """Finish a non-branch instruction: move to the next one (possibly a branch target)."""
    state.pc = state.next_pc
    state.next_pc = (state.next_pc + 4) & MASK
    state.step += 1


def _in_delay_slot(state: State) -> bool:
    return state.next_pc != (state.pc + 4) & MASK


def _take_branch(state: State, taken: bool, target: int) -> None:
    """Finish a branch or jump: the delay slot (old nextPC) runs next, then target or on."""
    state.pc = state.next_pc
    state.next_pc = target & MASK if taken else (state.next_pc + 4) & MASK
    state.step += 1


def data_address(state: State, insn: int) -> int | None:
    """The aligned word a load or store accesses, or None for other instructions.

    vm/witness.py proves this word; it is given even when the access will panic on alignment.
    """
    op = insn >> 26
    if op in LOAD_OPS or op in STORE_OPS:
        return (state.regs[(insn >> 21) & 31] + _simm(insn)) & MASK & ~3
    return None


def step(state: State) -> None:
    """Execute exactly one instruction of `state` in place (nothing if it has exited)."""
    if state.exited:
        return
    if state.pc & 3:
        _panic(state)
        return
    insn = state.memory.read_u32(state.pc)
    op = insn >> 26
    if op == OP_SPECIAL:
        _special(state, insn)
    elif op == OP_REGIMM:
        _regimm(state, insn)
    elif op == OP_J or op == OP_JAL:
        _jump(state, insn)
    elif op in BRANCH_OPS:
        _branch(state, insn)
    elif op in IMMEDIATE_OPS:
        _immediate(state, insn)
    elif op == OP_SPECIAL2:
        _special2(state, insn)
    elif op in LOAD_OPS:
        _load(state, insn)
    elif op in STORE_OPS:
        _store(state, insn)
    else:
        _panic(state)


def _special(state: State, insn: int) -> None:
    """Opcode 0: register ALU, shifts, jr/jalr, movz/movn, HI/LO, mult/div, syscall, teq."""
    regs = state.regs
    rs, rt, rd = (insn >> 21) & 31, (insn >> 16) & 31, (insn >> 11) & 31
    sa, funct = (insn >> 6) & 31, insn & 63
    s, t = regs[rs], regs[rt]

    if funct == 0x08 or funct == 0x09:  # jr, jalr
        if _in_delay_slot(state):
            _panic(state)
            return
        if funct == 0x09:
            _set_reg(state, rd, state.pc + 8)
        _take_branch(state, True, s)
        return
    if funct == 0x0C:  # syscall: exit and exit_group only
        if regs[2] in (SYS_EXIT, SYS_EXIT_GROUP):
            state.exited = True
            state.exit_code = regs[4] & 0xFF
            state.step += 1
        else:
            _panic(state)
        return

    if funct == 0x00:  # sll
        _set_reg(state, rd, t << sa)
    elif funct == 0x02:  # srl
        _set_reg(state, rd, t >> sa)
    elif funct == 0x03:  # sra
        _set_reg(state, rd, _signed(t) >> sa)
    elif funct == 0x04:  # sllv
        _set_reg(state, rd, t << (s & 31))
    elif funct == 0x06:  # srlv
        _set_reg(state, rd, t >> (s & 31))
    elif funct == 0x07:  # srav
        _set_reg(state, rd, _signed(t) >> (s & 31))
    elif funct == 0x0A:  # movz
        if t == 0:
            _set_reg(state, rd, s)
    elif funct == 0x0B:  # movn
        if t != 0:
            _set_reg(state, rd, s)
    elif funct == 0x10:  # mfhi
        _set_reg(state, rd, state.hi)
    elif funct == 0x11:  # mthi
        state.hi = s
    elif funct == 0x12:  # mflo
        _set_reg(state, rd, state.lo)
    elif funct == 0x13:  # mtlo
        state.lo = s
    elif funct == 0x18 or funct == 0x19:  # mult, multu
        product = _signed(s) * _signed(t) if funct == 0x18 else s * t
        state.hi = (product >> 32) & MASK
        state.lo = product & MASK
    elif funct == 0x1A or funct == 0x1B:  # div, divu
        if t == 0:
            _panic(state)
            return
        a, b = (_signed(s), _signed(t)) if funct == 0x1A else (s, t)
        q = abs(a) // abs(b)
        if (a < 0) != (b < 0):
            q = -q  # truncate toward zero; INT_MIN / -1 wraps to INT_MIN below
        state.lo = q & MASK
        state.hi = (a - q * b) & MASK  # the remainder takes the dividend's sign
    elif funct == 0x20 or funct == 0x22:  # add, sub: trap on signed overflow
        r = _signed(s) + _signed(t) if funct == 0x20 else _signed(s) - _signed(t)
        if not -0x80000000 <= r <= 0x7FFFFFFF:
            _panic(state)
            return
        _set_reg(state, rd, r)
    elif funct == 0x21:  # addu
        _set_reg(state, rd, s + t)
    elif funct == 0x23:  # subu
        _set_reg(state, rd, s - t)
    elif funct == 0x24:  # and
        _set_reg(state, rd, s & t)
    elif funct == 0x25:  # or
        _set_reg(state, rd, s | t)
    elif funct == 0x26:  # xor
        _set_reg(state, rd, s ^ t)
    elif funct == 0x27:  # nor
        _set_reg(state, rd, ~(s | t))
    elif funct == 0x2A:  # slt
        _set_reg(state, rd, int(_signed(s) < _signed(t)))
    elif funct == 0x2B:  # sltu
        _set_reg(state, rd, int(s < t))
    elif funct == 0x34:  # teq
        if s == t:
            _panic(state)
            return
    else:  # break (0x0D) and every function field not listed in DESIGN
        _panic(state)
        return
    _advance(state)


def _regimm(state: State, insn: int) -> None:
    """Opcode 1: bltz bgez bltzal bgezal (the *al forms link whether or not taken)."""
    rt = (insn >> 16) & 31
    if rt not in (0x00, 0x01, 0x10, 0x11):
        _panic(state)
        return
    if _in_delay_slot(state):
        _panic(state)
        return
    negative = bool(state.regs[(insn >> 21) & 31] & 0x80000000)
    taken = not negative if rt & 1 else negative
    if rt & 0x10:
        _set_reg(state, 31, state.pc + 8)
    _take_branch(state, taken, state.pc + 4 + (_simm(insn) << 2))


def _jump(state: State, insn: int) -> None:
    """Opcodes 2, 3: j, jal within the 256 MiB segment of the delay slot."""
    if _in_delay_slot(state):
        _panic(state)
        return
    target = ((state.pc + 4) & 0xF0000000) | ((insn & 0x03FFFFFF) << 2)
    if insn >> 26 == OP_JAL:
        _set_reg(state, 31, state.pc + 8)
    _take_branch(state, True, target)


def _branch(state: State, insn: int) -> None:
    """Opcodes 4-7: beq bne blez bgtz."""
    if _in_delay_slot(state):
        _panic(state)
        return
    op = insn >> 26
    s = state.regs[(insn >> 21) & 31]
    if op == 0x04:
        taken = s == state.regs[(insn >> 16) & 31]
    elif op == 0x05:
        taken = s != state.regs[(insn >> 16) & 31]
    elif op == 0x06:
        taken = _signed(s) <= 0
    else:
        taken = _signed(s) > 0
    _take_branch(state, taken, state.pc + 4 + (_simm(insn) << 2))


def _immediate(state: State, insn: int) -> None:
    """Opcodes 8-15: addi addiu slti sltiu (sign-extended), andi ori xori (zero-extended), lui."""
    op = insn >> 26
    rt = (insn >> 16) & 31
    s = state.regs[(insn >> 21) & 31]
    imm, simm = insn & 0xFFFF, _simm(insn)
    if op == 0x08:  # addi: traps on signed overflow
        r = _signed(s) + simm
        if not -0x80000000 <= r <= 0x7FFFFFFF:
            _panic(state)
            return
        _set_reg(state, rt, r)
    elif op == 0x09:  # addiu
        _set_reg(state, rt, s + simm)
    elif op == 0x0A:  # slti
        _set_reg(state, rt, int(_signed(s) < simm))
    elif op == 0x0B:  # sltiu: the sign-extended immediate compared as unsigned
        _set_reg(state, rt, int(s < (simm & MASK)))
    elif op == 0x0C:  # andi
        _set_reg(state, rt, s & imm)
    elif op == 0x0D:  # ori
        _set_reg(state, rt, s | imm)
    elif op == 0x0E:  # xori
        _set_reg(state, rt, s ^ imm)
    else:  # lui
        _set_reg(state, rt, imm << 16)
    _advance(state)


def _special2(state: State, insn: int) -> None:
    """Opcode 0x1C: madd maddu mul msub msubu clz clo. `mul` leaves HI/LO unchanged."""
    funct = insn & 63
    rd = (insn >> 11) & 31
    s, t = state.regs[(insn >> 21) & 31], state.regs[(insn >> 16) & 31]
    if funct in (0x00, 0x01, 0x04, 0x05):  # madd maddu msub msubu: 64-bit HI:LO wraps
        product = _signed(s) * _signed(t) if funct in (0x00, 0x04) else s * t
        acc = (state.hi << 32) | state.lo
        acc = (acc - product if funct & 0x04 else acc + product) & 0xFFFFFFFFFFFFFFFF
        state.hi = acc >> 32
        state.lo = acc & MASK
    elif funct == 0x02:  # mul
        _set_reg(state, rd, _signed(s) * _signed(t))
    elif funct == 0x20:  # clz
        _set_reg(state, rd, 32 - s.bit_length())
    elif funct == 0x21:  # clo
        _set_reg(state, rd, 32 - (~s & MASK).bit_length())
    else:
        _panic(state)
        return
    _advance(state)


def _load(state: State, insn: int) -> None:
    """lb lh lwl lw lbu lhu lwr, each from the aligned word that holds the address."""
    op = insn >> 26
    rt = (insn >> 16) & 31
    addr = (state.regs[(insn >> 21) & 31] + _simm(insn)) & MASK
    if (op in (0x21, 0x25) and addr & 1) or (op == 0x23 and addr & 3):
        _panic(state)
        return
    word = state.memory.read_u32(addr & ~3)
    b = addr & 3  # big-endian: byte 0 is the word's most significant
    if op == 0x20:  # lb
        v = (word >> (24 - 8 * b)) & 0xFF
        _set_reg(state, rt, v - 0x100 if v & 0x80 else v)
    elif op == 0x24:  # lbu
        _set_reg(state, rt, (word >> (24 - 8 * b)) & 0xFF)
    elif op == 0x21:  # lh
        v = (word >> (16 - 8 * b)) & 0xFFFF
        _set_reg(state, rt, v - 0x10000 if v & 0x8000 else v)
    elif op == 0x25:  # lhu
        _set_reg(state, rt, (word >> (16 - 8 * b)) & 0xFFFF)
    elif op == 0x23:  # lw
        _set_reg(state, rt, word)
    elif op == 0x22:  # lwl: bytes addr..end of word into the high end of rt
        keep = (1 << (8 * b)) - 1
        _set_reg(state, rt, (word << (8 * b)) | (state.regs[rt] & keep))
    else:  # lwr: bytes start of word..addr into the low end of rt
        shift = 8 * (3 - b)
        _set_reg(state, rt, (word >> shift) | (state.regs[rt] & ~(MASK >> shift)))
    _advance(state)


def _store(state: State, insn: int) -> None:
    """sb sh swl sw swr: merge into the aligned word that holds the address, write it back."""
    op = insn >> 26
    t = state.regs[(insn >> 16) & 31]
    addr = (state.regs[(insn >> 21) & 31] + _simm(insn)) & MASK
    if (op == 0x29 and addr & 1) or (op == 0x2B and addr & 3):
        _panic(state)
        return
    aligned = addr & ~3
    word = state.memory.read_u32(aligned)
    b = addr & 3
    if op == 0x28:  # sb
        shift = 24 - 8 * b
        word = (word & ~(0xFF << shift)) | ((t & 0xFF) << shift)
    elif op == 0x29:  # sh
        shift = 16 - 8 * b
        word = (word & ~(0xFFFF << shift)) | ((t & 0xFFFF) << shift)
    elif op == 0x2B:  # sw
        word = t
    elif op == 0x2A:  # swl: the high bytes of rt into addr..end of word
        word = (word & ~(MASK >> (8 * b))) | (t >> (8 * b))
    else:  # swr: the low bytes of rt into start of word..addr
        shift = 8 * (3 - b)
        word = (t << shift) | (word & ((1 << shift) - 1))
    state.memory.write_u32(aligned, word & MASK)
    _advance(state)
