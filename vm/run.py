"""The fast path: `run(state, max_steps)`, the same states as repeated `step`, without proofs.

Pipeline: used for whole runs (`opmlc run --backend vm`) and by vm/checkpoint.py to reach the
states the bisection asks for; vm/step.py stays the reference, and this module falls back to
it for anything unusual.

How. Each basic block (straight-line instructions up to a branch or jump and its delay slot)
is translated once into a Python function, generated as source with registers in local
variables and immediates folded, and cached by its start pc. A block runs only from a state
that is not in a delay slot and only when all its instructions fit in the step budget. Any
instruction that might panic or needs care (a misaligned or unmapped access, a division by
zero, an overflowing add, an equal teq, a store into a page holding translated code) checks
its condition and, if it holds, "bails": it writes back the registers, sets pc/nextPC to
itself and returns how many instructions ran; `run` then executes that one instruction with
`step`. Syscalls, traps, unknown instructions and branches in delay slots are never
translated: `step` executes them. Writes into code pages through Memory's methods are recorded
in `Memory.code_written`, and the blocks on those pages are dropped.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

from vm.memory import PAGE_SHIFT, Memory
from vm.state import State
from vm.step import step

MASK = 0xFFFFFFFF
MAX_BLOCK = 64  # longer straight-line code is split; a limit keeps generated functions small

_SIMPLE_SPECIAL = frozenset(
    (0x00, 0x02, 0x03, 0x04, 0x06, 0x07, 0x0A, 0x0B, 0x10, 0x11, 0x12, 0x13, 0x18, 0x19,
     0x1A, 0x1B, 0x20, 0x21, 0x22, 0x23, 0x24, 0x25, 0x26, 0x27, 0x2A, 0x2B, 0x34)
)  # fmt: skip
_SIMPLE_SPECIAL2 = frozenset((0x00, 0x01, 0x02, 0x04, 0x05, 0x20, 0x21))
_LOADS = frozenset((0x20, 0x21, 0x22, 0x23, 0x24, 0x25, 0x26))
_STORES = frozenset((0x28, 0x29, 0x2A, 0x2B, 0x2E))

_SIMPLE, _BRANCH, _STOP = 0, 1, 2

BlockFn = Callable[[list[int], State, dict[int, bytearray], set[int], set[int]], int]

_GLOBALS = {
    "U32": struct.Struct(">I").unpack_from,
    "U16": struct.Struct(">H").unpack_from,
    "P32": struct.Struct(">I").pack_into,
    "P16": struct.Struct(">H").pack_into,
    "sdiv": None,  # set below
}


def _sdiv(a: int, b: int) -> tuple[int, int]:
    """Signed division of u32 bit patterns: (LO, HI) as vm/step.py computes them."""
    a = (a ^ 0x80000000) - 0x80000000
    b = (b ^ 0x80000000) - 0x80000000
    q = abs(a) // abs(b)
    if (a < 0) != (b < 0):
        q = -q
    return q & MASK, (a - q * b) & MASK


_GLOBALS["sdiv"] = _sdiv


# Block functions by source text: they depend only on the code, not on the Memory, so copies
# of a state (checkpoints, bisection queries) and later runs of the same program reuse them.
_COMPILED: dict[str, BlockFn] = {}
_COMPILED_MAX = 50_000


def _kind(insn: int) -> int:
    op = insn >> 26
    if op == 0:
        funct = insn & 63
        if funct in _SIMPLE_SPECIAL:
            return _SIMPLE
        return _BRANCH if funct in (0x08, 0x09) else _STOP
    if op == 1:
        return _BRANCH if (insn >> 16) & 31 in (0x00, 0x01, 0x10, 0x11) else _STOP
    if 2 <= op <= 7:
        return _BRANCH
    if 8 <= op <= 0x0F or op in _LOADS or op in _STORES:
        return _SIMPLE
    if op == 0x1C and insn & 63 in _SIMPLE_SPECIAL2:
        return _SIMPLE
    return _STOP


def _simm(insn: int) -> int:
    imm = insn & 0xFFFF
    return imm - 0x10000 if imm & 0x8000 else imm


class _BlockCompiler:
    """Generates the source of one block's function."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.used: set[int] = set()  # registers read or written: loaded at entry
        self.written: set[int] = set()  # registers written so far: stored on exit
        self.hilo = False  # HI/LO used: loaded at entry
        self.hilo_written = False
        self.executed = 0
        self.next_pc_expr = ""  # nextPC after the current instruction, for bails in a delay slot

    def r(self, i: int) -> str:
        if i == 0:
            return "0"
        self.used.add(i)
        return f"r{i}"

    def w(self, i: int, expr: str) -> None:
        if i:
            self.used.add(i)
            self.written.add(i)
            self.emit(f"r{i} = {expr}")

    def emit(self, line: str) -> None:
        self.lines.append("    " + line)

    def writeback(self, indent: str) -> list[str]:
        out = [f"{indent}R[{i}] = r{i}" for i in sorted(self.written)]
        if self.hilo_written:
            out += [f"{indent}s.hi = hi", f"{indent}s.lo = lo"]
        return out

    def bail_if(self, cond: str, pc: int) -> None:
        """If cond holds, stop before the instruction at pc and let `step` execute it."""
        next_pc = self.next_pc_expr or str((pc + 4) & MASK)
        self.emit(f"if {cond}:")
        self.lines += self.writeback("        ")
        self.lines += [f"        s.pc = {pc}", f"        s.next_pc = {next_pc}"]
        self.lines.append(f"        return {self.executed}")

    def use_hilo(self, write: bool) -> None:
        self.hilo = True
        self.hilo_written = self.hilo_written or write

    # ------------------------------------------------------------ instruction families

    def simple(self, pc: int, insn: int) -> None:
        op = insn >> 26
        if op == 0:
            self.special(pc, insn)
        elif op == 0x1C:
            self.special2(insn)
        elif op in _LOADS:
            self.load(pc, insn)
        elif op in _STORES:
            self.store(pc, insn)
        else:
            self.immediate(pc, insn)
        self.executed += 1

    def special(self, pc: int, insn: int) -> None:
        rs, rt, rd = (insn >> 21) & 31, (insn >> 16) & 31, (insn >> 11) & 31
        sa, funct = (insn >> 6) & 31, insn & 63
        s, t = self.r(rs), self.r(rt)
        signed_s, signed_t = (
            f"(({s} ^ 0x80000000) - 0x80000000)",
            f"(({t} ^ 0x80000000) - 0x80000000)",
        )
        if funct == 0x00:
            self.w(rd, f"({t} << {sa}) & 0xFFFFFFFF")
        elif funct == 0x02:
            self.w(rd, f"{t} >> {sa}")
        elif funct == 0x03:
            self.w(rd, f"({signed_t} >> {sa}) & 0xFFFFFFFF")
        elif funct == 0x04:
            self.w(rd, f"({t} << ({s} & 31)) & 0xFFFFFFFF")
        elif funct == 0x06:
            self.w(rd, f"{t} >> ({s} & 31)")
        elif funct == 0x07:
            self.w(rd, f"({signed_t} >> ({s} & 31)) & 0xFFFFFFFF")
        elif funct == 0x0A:
            if rd:
                self.w(rd, f"{s} if {t} == 0 else {self.r(rd)}")
        elif funct == 0x0B:
            if rd:
                self.w(rd, f"{s} if {t} != 0 else {self.r(rd)}")
        elif funct == 0x10:
            self.use_hilo(False)
            self.w(rd, "hi")
        elif funct == 0x11:
            self.use_hilo(True)
            self.emit(f"hi = {s}")
        elif funct == 0x12:
            self.use_hilo(False)
            self.w(rd, "lo")
        elif funct == 0x13:
            self.use_hilo(True)
            self.emit(f"lo = {s}")
        elif funct == 0x18:
            self.use_hilo(True)
            self.emit(f"p = {signed_s} * {signed_t}")
            self.emit("hi = (p >> 32) & 0xFFFFFFFF")
            self.emit("lo = p & 0xFFFFFFFF")
        elif funct == 0x19:
            self.use_hilo(True)
            self.emit(f"p = {s} * {t}")
            self.emit("hi = p >> 32")
            self.emit("lo = p & 0xFFFFFFFF")
        elif funct == 0x1A:
            self.bail_if(f"{t} == 0", pc)
            self.use_hilo(True)
            self.emit(f"lo, hi = sdiv({s}, {t})")
        elif funct == 0x1B:
            self.bail_if(f"{t} == 0", pc)
            self.use_hilo(True)
            self.emit(f"lo, hi = divmod({s}, {t})")
        elif funct in (0x20, 0x22):
            sign = "+" if funct == 0x20 else "-"
            self.emit(f"v = {signed_s} {sign} {signed_t}")
            self.bail_if("not -0x80000000 <= v <= 0x7FFFFFFF", pc)
            self.w(rd, "v & 0xFFFFFFFF")
        elif funct == 0x21:
            self.w(rd, f"({s} + {t}) & 0xFFFFFFFF")
        elif funct == 0x23:
            self.w(rd, f"({s} - {t}) & 0xFFFFFFFF")
        elif funct == 0x24:
            self.w(rd, f"{s} & {t}")
        elif funct == 0x25:
            self.w(rd, f"{s} | {t}")
        elif funct == 0x26:
            self.w(rd, f"{s} ^ {t}")
        elif funct == 0x27:
            self.w(rd, f"({s} | {t}) ^ 0xFFFFFFFF")
        elif funct == 0x2A:
            self.w(rd, f"1 if ({s} ^ 0x80000000) < ({t} ^ 0x80000000) else 0")
        elif funct == 0x2B:
            self.w(rd, f"1 if {s} < {t} else 0")
        elif funct == 0x34:
            self.bail_if(f"{s} == {t}", pc)
        else:  # pragma: no cover - _kind admits only the functions above
            raise AssertionError(funct)

    def special2(self, insn: int) -> None:
        rs, rt, rd, funct = (insn >> 21) & 31, (insn >> 16) & 31, (insn >> 11) & 31, insn & 63
        s, t = self.r(rs), self.r(rt)
        if funct in (0x00, 0x01, 0x04, 0x05):
            self.use_hilo(True)
            if funct in (0x00, 0x04):
                product = f"(({s} ^ 0x80000000) - 0x80000000) * (({t} ^ 0x80000000) - 0x80000000)"
            else:
                product = f"{s} * {t}"
            sign = "-" if funct & 0x04 else "+"
            self.emit(f"acc = ((hi << 32) | lo) {sign} {product}")
            self.emit("hi = (acc >> 32) & 0xFFFFFFFF")
            self.emit("lo = acc & 0xFFFFFFFF")
        elif funct == 0x02:  # the low 32 bits of a product do not depend on signedness
            self.w(rd, f"({s} * {t}) & 0xFFFFFFFF")
        elif funct == 0x20:
            self.w(rd, f"32 - {s}.bit_length()" if rs else "32")
        elif funct == 0x21:
            self.w(rd, f"32 - ({s} ^ 0xFFFFFFFF).bit_length()" if rs else "0")
        else:  # pragma: no cover
            raise AssertionError(funct)

    def immediate(self, pc: int, insn: int) -> None:
        op, rt = insn >> 26, (insn >> 16) & 31
        s = self.r((insn >> 21) & 31)
        imm, simm = insn & 0xFFFF, _simm(insn)
        if op == 0x08:
            self.emit(f"v = (({s} ^ 0x80000000) - 0x80000000) + {simm}")
            self.bail_if("not -0x80000000 <= v <= 0x7FFFFFFF", pc)
            self.w(rt, "v & 0xFFFFFFFF")
        elif op == 0x09:
            self.w(rt, f"({s} + {simm}) & 0xFFFFFFFF" if simm else s)
        elif op == 0x0A:
            self.w(rt, f"1 if ({s} ^ 0x80000000) < {simm + 0x80000000} else 0")
        elif op == 0x0B:
            self.w(rt, f"1 if {s} < {simm & MASK} else 0")
        elif op == 0x0C:
            self.w(rt, f"{s} & {imm}")
        elif op == 0x0D:
            self.w(rt, f"{s} | {imm}")
        elif op == 0x0E:
            self.w(rt, f"{s} ^ {imm}")
        else:
            self.w(rt, str(imm << 16))

    def _address(self, insn: int) -> None:
        rs, simm = (insn >> 21) & 31, _simm(insn)
        if rs == 0:
            self.emit(f"a = {simm & MASK}")
        else:
            self.emit(f"a = ({self.r(rs)} + {simm}) & 0xFFFFFFFF" if simm else f"a = {self.r(rs)}")

    def load(self, pc: int, insn: int) -> None:
        op, rt = insn >> 26, (insn >> 16) & 31
        self._address(insn)
        self.emit("p = P.get(a >> 12)")
        align = {0x21: " or a & 1", 0x25: " or a & 1", 0x23: " or a & 3"}.get(op, "")
        self.bail_if(f"p is None{align}", pc)
        if op == 0x23:
            self.w(rt, "U32(p, a & 4095)[0]")
        elif op == 0x24:
            self.w(rt, "p[a & 4095]")
        elif op == 0x20:
            self.w(rt, "((p[a & 4095] ^ 0x80) - 0x80) & 0xFFFFFFFF")
        elif op == 0x25:
            self.w(rt, "U16(p, a & 4095)[0]")
        elif op == 0x21:
            self.w(rt, "((U16(p, a & 4095)[0] ^ 0x8000) - 0x8000) & 0xFFFFFFFF")
        elif rt:  # lwl, lwr merge into the old rt
            old = self.r(rt)
            self.emit("m = U32(p, a & 4092)[0]")
            self.emit("b = (a & 3) << 3")
            if op == 0x22:
                self.w(rt, f"((m << b) & 0xFFFFFFFF) | ({old} & ((1 << b) - 1))")
            else:
                self.w(rt, f"(m >> (24 - b)) | ({old} & ~(0xFFFFFFFF >> (24 - b)) & 0xFFFFFFFF)")

    def store(self, pc: int, insn: int) -> None:
        op = insn >> 26
        t = self.r((insn >> 16) & 31)
        self._address(insn)
        self.emit("pi = a >> 12")
        self.emit("p = P.get(pi)")
        align = {0x29: " or a & 1", 0x2B: " or a & 3"}.get(op, "")
        self.bail_if(f"p is None or pi in CP{align}", pc)
        if op == 0x2B:
            self.emit(f"P32(p, a & 4095, {t})")
        elif op == 0x28:
            self.emit(f"p[a & 4095] = {t} & 0xFF")
        elif op == 0x29:
            self.emit(f"P16(p, a & 4095, {t} & 0xFFFF)")
        else:
            self.emit("m = U32(p, a & 4092)[0]")
            self.emit("b = (a & 3) << 3")
            if op == 0x2A:  # swl
                self.emit(f"P32(p, a & 4092, (m & ~(0xFFFFFFFF >> b) & 0xFFFFFFFF) | ({t} >> b))")
            else:  # swr
                self.emit(
                    f"P32(p, a & 4092, (({t} << (24 - b)) & 0xFFFFFFFF) | (m & ((1 << (24 - b)) - 1)))"
                )
        self.emit("D.add(pi)")

    def branch(self, pc: int, insn: int) -> tuple[str, str]:
        """Emit the branch's condition (`c`) and target (`t`); return (cond, target) exprs."""
        op = insn >> 26
        rs, rt = (insn >> 21) & 31, (insn >> 16) & 31
        rel = (pc + 4 + (_simm(insn) << 2)) & MASK
        link = (pc + 8) & MASK
        if op == 0:
            self.emit(f"t = {self.r(rs)}")  # read before linking: jalr may link into rs
            if insn & 63 == 0x09:
                self.w((insn >> 11) & 31, str(link))
            return "True", "t"
        if op in (2, 3):
            if op == 3:
                self.w(31, str(link))
            return "True", str(((pc + 4) & 0xF0000000) | ((insn & 0x03FFFFFF) << 2))
        s = self.r(rs)
        if op == 1:
            cond = f"{s} < 0x80000000" if rt & 1 else f"{s} >= 0x80000000"
        elif op == 4:
            cond = f"{s} == {self.r(rt)}"
        elif op == 5:
            cond = f"{s} != {self.r(rt)}"
        elif op == 6:
            cond = f"({s} ^ 0x80000000) <= 0x80000000"
        else:
            cond = f"({s} ^ 0x80000000) > 0x80000000"
        self.emit(f"c = {cond}")
        if op == 1 and rt & 0x10:
            self.w(31, str(link))
        return "c", str(rel)


class Jit:
    """The translated blocks of one Memory (kept in `Memory.jit`)."""

    def __init__(self, memory: Memory) -> None:
        self.memory = memory
        self.blocks: dict[int, tuple[BlockFn | None, int]] = {}
        self.by_page: dict[int, list[int]] = {}

    def sync(self) -> None:
        """Drop the blocks on code pages written through Memory's methods."""
        mem = self.memory
        for pi in mem.code_written:
            for pc in self.by_page.pop(pi, ()):
                self.blocks.pop(pc, None)
            mem.code_pages.discard(pi)
        mem.code_written.clear()

    def translate(self, start: int) -> tuple[BlockFn | None, int]:
        """Translate the block at `start` (length 0 means: let `step` run this pc)."""
        mem = self.memory
        entry: tuple[BlockFn | None, int] = (None, 0)
        if start & 3:
            self.blocks[start] = entry
            return entry

        def fetch(pc: int) -> int:
            return mem.read_u32(pc)

        comp = _BlockCompiler()
        pc = start
        end_lines: list[str] = []
        while comp.executed < MAX_BLOCK:
            insn = fetch(pc)
            kind = _kind(insn)
            if kind == _STOP:
                break
            if kind == _SIMPLE:
                comp.simple(pc, insn)
                pc = (pc + 4) & MASK
                continue
            slot = (pc + 4) & MASK
            if _kind(fetch(slot)) != _SIMPLE:
                break  # `step` runs the branch and its unusual delay slot
            cond, target = comp.branch(pc, insn)
            comp.executed += 1
            fall = (slot + 4) & MASK
            comp.next_pc_expr = target if cond == "True" else f"({target} if c else {fall})"
            comp.simple(slot, fetch(slot))
            pc = (slot + 4) & MASK
            wb = comp.writeback("    ")
            if cond == "True":
                if target == "t":
                    end_lines = wb + ["    s.pc = t", "    s.next_pc = (t + 4) & 0xFFFFFFFF"]
                else:
                    tgt = int(target)
                    end_lines = wb + [f"    s.pc = {tgt}", f"    s.next_pc = {(tgt + 4) & MASK}"]
            else:
                tgt = int(target)
                end_lines = wb + [
                    "    if c:",
                    f"        s.pc = {tgt}",
                    f"        s.next_pc = {(tgt + 4) & MASK}",
                    "    else:",
                    f"        s.pc = {fall}",
                    f"        s.next_pc = {(fall + 4) & MASK}",
                ]
            break
        if comp.executed == 0:
            self.blocks[start] = entry
            return entry
        if not end_lines:  # straight-line code cut at MAX_BLOCK or before an unusual insn
            end_lines = comp.writeback("    ") + [
                f"    s.pc = {pc}",
                f"    s.next_pc = {(pc + 4) & MASK}",
            ]
        head = ["def block(R, s, P, D, CP):"]
        head += [f"    r{i} = R[{i}]" for i in sorted(comp.used)]
        if comp.hilo:
            head += ["    hi = s.hi", "    lo = s.lo"]
        src = "\n".join(head + comp.lines + end_lines + [f"    return {comp.executed}"])
        fn = _COMPILED.get(src)
        if fn is None:
            namespace: dict[str, object] = {}
            exec(compile(src, f"<block {start:#010x}>", "exec"), dict(_GLOBALS), namespace)
            fn = namespace["block"]
            if len(_COMPILED) >= _COMPILED_MAX:
                _COMPILED.clear()
            _COMPILED[src] = fn
        entry = (fn, comp.executed)  # type: ignore[assignment]
        self.blocks[start] = entry
        last = (pc - 4) & MASK
        for pi in {start >> PAGE_SHIFT, last >> PAGE_SHIFT}:
            self.by_page.setdefault(pi, []).append(start)
            mem.code_pages.add(pi)
        return entry


def _jit(memory: Memory) -> Jit:
    jit = memory.jit
    if not isinstance(jit, Jit):
        jit = memory.jit = Jit(memory)
    return jit


def run(state: State, max_steps: int) -> int:
    """Execute up to `max_steps` instructions (fewer if the program exits); return how many.

    The resulting state (and its hash) is exactly that of calling `step` as many times.
    """
    if state.exited or max_steps <= 0:
        return 0
    mem = state.memory
    jit = _jit(mem)
    jit.sync()
    blocks = jit.blocks
    regs, pages, dirty, code_pages = state.regs, mem.pages, mem.dirty, mem.code_pages
    done = 0
    while done < max_steps:
        pc = state.pc
        entry = blocks.get(pc)
        if entry is None:
            entry = jit.translate(pc)
        fn, n = entry
        if fn is not None and n <= max_steps - done and state.next_pc == (pc + 4) & MASK:
            k = fn(regs, state, pages, dirty, code_pages)
            state.step += k
            done += k
            if k == n:
                continue
        # Not translatable here, or the block bailed before the instruction now at pc.
        step(state)
        done += 1
        if state.exited:
            break
        if mem.code_written:
            jit.sync()
    return done
