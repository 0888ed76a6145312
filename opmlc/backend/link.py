"""Our static linker: MIPS32 big-endian relocatable objects in, one `model.elf` out.

Place in the pipeline: opmlc/backend/mips_program.py compiles the runtime module and the
model's module to ELF32 big-endian REL objects (opmlc/backend/target.py) and calls `link` on
them; the result is the program image the VM, unicorn and the contracts execute.

Why a linker of our own: no MIPS linker is pip-installable. lld and GNU ld come only with a full
LLVM or binutils cross toolchain (about 400 MB, not on PyPI), while what llvmlite emits for our
target is small and regular: a few sections and five relocation types. Owning the linker also
makes the output a pure function of the input objects, which the reproducible-build rule
(docs/DESIGN.md) requires.

Reading uses lief (`lief.ELF.parse`): headers, sections, the symbol table. The relocation
entries themselves are read from the raw .rel sections (8 bytes each, big-endian), because the
pairing of R_MIPS_HI16 with the next R_MIPS_LO16 depends on their order inside one section, which
is explicit there. Writing uses `struct`, not lief: lief's builder is meant to modify existing
binaries, its layout and padding choices are its own and may change between lief versions (we
pin lief only to a range), while the ELF we need is a header, a few program headers, the segment
bytes and a small section table: about a hundred lines whose every byte we choose.

What LLVM 22 emits for our target (triple mips-unknown-linux-gnu, mips32, +soft-float,
+noabicalls, static), checked by tests/backend:

- sections: .text (code, align 16), .rodata, .rodata.cst*/.rodata.str* (mergeable constants, we
  do not merge), .data, .bss; non-allocated .pdr, .mdebug.abi32, .note.GNU-stack; allocated
  but unused by a static image: .reginfo, .MIPS.abiflags (dropped). A global given
  `section ".text"` (the runtime's exit stub) gets a second, non-executable `.text` section; we
  put every .text* section in the executable segment.
- relocations (REL: addends live in the instruction or word): R_MIPS_HI16/R_MIPS_LO16 for
  addresses of globals (`lui`/`addiu` or `lui`/`lw %lo`), several LO16 may share one HI16 and a
  HI16 is not next to its LO16 in the code (but is in the relocation table); R_MIPS_26 for `jal`
  to functions and also for `j` to local labels inside a function (against the section symbol,
  the offset in the addend); R_MIPS_32 in .pdr (dropped) and in data holding addresses (tables
  of pointers, switch tables). R_MIPS_PC16 is supported in case a branch to another section
  appears. With `-mgpopt` LLVM would use .sdata/.sbss and R_MIPS_GPREL16: target.py pins it off,
  and GPREL16 is a LinkError here.
- libcalls: __divdi3/__udivdi3/__moddi3/__umoddi3 for i64 division, memcpy/memset/memmove;
  nothing for i64 shifts or multiplication (inline).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass, field

import lief

IMAGE_BASE = 0x00400000
PAGE = 0x1000

EM_MIPS = 8
ET_EXEC = 2
PT_LOAD = 1
PF_X, PF_W, PF_R = 1, 2, 4

SHT_NULL, SHT_PROGBITS, SHT_SYMTAB, SHT_STRTAB = 0, 1, 2, 3
SHT_RELA, SHT_NOBITS, SHT_REL = 4, 8, 9
SHF_WRITE, SHF_ALLOC, SHF_EXECINSTR = 1, 2, 4
SHN_UNDEF, SHN_ABS, SHN_COMMON = 0, 0xFFF1, 0xFFF2
STB_LOCAL, STB_GLOBAL, STB_WEAK = 0, 1, 2
STT_NOTYPE, STT_OBJECT, STT_FUNC, STT_SECTION = 0, 1, 2, 3

R_MIPS_NONE = 0
R_MIPS_32 = 2
R_MIPS_26 = 4
R_MIPS_HI16 = 5
R_MIPS_LO16 = 6
R_MIPS_PC16 = 10

_RELOC_NAMES = {
    0: "R_MIPS_NONE", 1: "R_MIPS_16", 2: "R_MIPS_32", 3: "R_MIPS_REL32", 4: "R_MIPS_26",
    5: "R_MIPS_HI16", 6: "R_MIPS_LO16", 7: "R_MIPS_GPREL16", 8: "R_MIPS_LITERAL",
    9: "R_MIPS_GOT16", 10: "R_MIPS_PC16", 11: "R_MIPS_CALL16", 12: "R_MIPS_GPREL32",
    37: "R_MIPS_JALR", 38: "R_MIPS_TLS_DTPMOD32", 47: "R_MIPS_TLS_TPREL32",
}  # fmt: skip


def reloc_name(rtype: int) -> str:
    """The ABI name of a MIPS relocation type, for messages."""
    return _RELOC_NAMES.get(rtype, f"relocation type {rtype}")


class LinkError(Exception):
    """The objects cannot be linked: an unsupported relocation or section, a missing symbol…

    Always an opmlc bug or an unsupported construct in generated IR, never a user mistake.
    """


# Output segments, in address order: (name, section-name prefixes, flags).
_CLASSES: tuple[tuple[str, tuple[str, ...], int], ...] = (
    (".text", (".text",), PF_R | PF_X),
    (".rodata", (".rodata",), PF_R),
    (".data", (".data", ".sdata"), PF_R | PF_W),
    (".bss", (".bss", ".sbss"), PF_R | PF_W),
)
_CLASS_NAMES = [c[0] for c in _CLASSES]
# Allocated sections that mean nothing in a static image without a dynamic loader.
_DROPPED_ALLOC = (".reginfo", ".MIPS.abiflags", ".MIPS.options", ".eh_frame", ".note")


def _matches(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


@dataclass
class _Section:
    obj: int
    index: int
    name: str
    data: bytearray
    size: int
    align: int
    nobits: bool
    flags: int
    cls: int = -1
    address: int = 0


@dataclass
class _Symbol:
    name: str
    value: int
    size: int
    binding: int
    type: int
    shndx: int


@dataclass
class _Object:
    index: int
    flags: int
    sections: list[_Section]
    symbols: list[_Symbol]
    relocs: list[tuple[int, list[tuple[int, int, int]]]] = field(default_factory=list)


def _enum_int(value: object) -> int:
    return int(value)  # type: ignore[call-overload]


def _read_object(index: int, data: bytes) -> _Object:
    if data[:4] != b"\x7fELF" or data[4] != 1 or data[5] != 2:
        raise LinkError(f"object {index}: not an ELF32 big-endian file")
    elf = lief.ELF.parse(list(data))
    if elf is None:
        raise LinkError(f"object {index}: lief cannot parse it")
    if _enum_int(elf.header.machine_type) != EM_MIPS:
        raise LinkError(f"object {index}: not a MIPS object")
    if elf.header.file_type != lief.ELF.Header.FILE_TYPE.REL:
        raise LinkError(f"object {index}: not a relocatable object (ET_REL)")
    flags = struct.unpack_from(">I", data, 36)[0]
    sections = []
    for i, s in enumerate(elf.sections):
        stype = _enum_int(s.type)
        sections.append(
            _Section(
                obj=index,
                index=i,
                name=s.name,
                data=bytearray(bytes(s.content)) if stype != SHT_NOBITS else bytearray(),
                size=s.size,
                align=max(1, s.alignment),
                nobits=stype == SHT_NOBITS,
                flags=int(s.flags),
            )
        )
    symbols = [
        _Symbol(
            name=sym.name,
            value=sym.value,
            size=sym.size,
            binding=_enum_int(sym.binding),
            type=_enum_int(sym.type),
            shndx=sym.shndx,
        )
        for sym in elf.symtab_symbols
    ]
    obj = _Object(index=index, flags=flags, sections=sections, symbols=symbols)
    for s in elf.sections:
        stype = _enum_int(s.type)
        if stype == SHT_RELA:
            raise LinkError(f"object {index}: RELA section {s.name} (MIPS32 o32 uses REL)")
        if stype == SHT_REL:
            entries = [
                (offset, info & 0xFF, info >> 8)
                for offset, info in struct.iter_unpack(">II", bytes(s.content))
            ]
            obj.relocs.append((s.information, entries))
    return obj


def _classify(obj: _Object) -> None:
    for sec in obj.sections:
        if not sec.flags & SHF_ALLOC:
            continue
        for cls, (_name, prefixes, _f) in enumerate(_CLASSES):
            if _matches(sec.name, prefixes):
                sec.cls = cls
                break
        else:
            if not _matches(sec.name, _DROPPED_ALLOC):
                raise LinkError(f"object {obj.index}: unsupported allocated section {sec.name}")


def _align(x: int, a: int) -> int:
    return (x + a - 1) // a * a


@dataclass
class _Segment:
    name: str
    flags: int
    address: int
    data: bytearray
    memsz: int


def _sym_label(obj: _Object, sym_index: int) -> str:
    sym = obj.symbols[sym_index]
    if sym.type == STT_SECTION and 0 < sym.shndx < len(obj.sections):
        return f"section {obj.sections[sym.shndx].name}"
    return sym.name or f"symbol #{sym_index}"


def link(objects: Sequence[bytes], entry: str = "_start") -> bytes:
    """Link MIPS32 BE relocatable objects into an ELF32 BE executable with entry `entry`.

    Layout: .text*, then .rodata*, then .data*/.sdata*, then .bss*/.sbss*, each class starting
    on a fresh page from IMAGE_BASE, sections in object order then section order. The output
    depends only on the input bytes.
    """
    objs: list[_Object] = []
    for i, data in enumerate(objects):
        obj = _read_object(i, data)
        _classify(obj)
        objs.append(obj)
    if not objs:
        raise LinkError("nothing to link")
    e_flags = objs[0].flags
    for obj in objs[1:]:
        if obj.flags != e_flags:
            raise LinkError(
                f"object {obj.index}: ELF flags {obj.flags:#x} differ from {e_flags:#x}"
            )

    # Layout.
    segments: list[_Segment] = []
    cursor = IMAGE_BASE
    for cls, (name, _prefixes, pflags) in enumerate(_CLASSES):
        cursor = _align(cursor, PAGE)
        start = cursor
        for obj in objs:
            for sec in obj.sections:
                if sec.cls != cls:
                    continue
                cursor = _align(cursor, sec.align)
                sec.address = cursor
                cursor += sec.size
        if cursor > start:
            segments.append(_Segment(name, pflags, start, bytearray(), cursor - start))

    # Symbols: a global table, then a resolver per object.
    globals_: dict[str, tuple[int, int]] = {}  # name -> (address, binding)
    for obj in objs:
        for sym in obj.symbols:
            if sym.binding == STB_LOCAL or sym.shndx == SHN_UNDEF:
                continue
            addr = _symbol_address(obj, sym)
            old = globals_.get(sym.name)
            if old is not None:
                if old[1] == STB_GLOBAL and sym.binding == STB_GLOBAL:
                    raise LinkError(f"symbol {sym.name} is defined twice")
                if old[1] == STB_GLOBAL or sym.binding == STB_WEAK:
                    continue
            globals_[sym.name] = (addr, sym.binding)

    def resolve(obj: _Object, sym_index: int) -> int:
        sym = obj.symbols[sym_index]
        if sym.shndx == SHN_UNDEF:
            hit = globals_.get(sym.name)
            if hit is None:
                raise LinkError(f"undefined symbol {sym.name}")
            return hit[0]
        if sym.binding != STB_LOCAL:
            return globals_[sym.name][0]
        return _symbol_address(obj, sym)

    for obj in objs:
        for target_index, entries in obj.relocs:
            target = obj.sections[target_index]
            if target.cls < 0:
                continue  # relocations of a dropped section (.pdr) are dropped with it
            _apply(obj, target, entries, resolve)

    for seg in segments:
        cls = _CLASS_NAMES.index(seg.name)
        if seg.name == ".bss":
            continue
        buf = bytearray(seg.memsz)
        for obj in objs:
            for sec in obj.sections:
                if sec.cls == cls and not sec.nobits:
                    off = sec.address - seg.address
                    buf[off : off + sec.size] = sec.data
        seg.data = buf

    if entry not in globals_:
        raise LinkError(f"entry symbol {entry} is not defined")
    symtab = _output_symbols(objs)
    return _write_exec(segments, globals_[entry][0], e_flags, symtab)


def _symbol_address(obj: _Object, sym: _Symbol) -> int:
    if sym.shndx == SHN_ABS:
        return sym.value
    if sym.shndx == SHN_COMMON:
        raise LinkError(f"common symbol {sym.name} (use a defined global in the IR)")
    if sym.shndx >= len(obj.sections):
        raise LinkError(f"symbol {sym.name} has unsupported section index {sym.shndx:#x}")
    sec = obj.sections[sym.shndx]
    if sec.cls < 0:
        raise LinkError(f"symbol {sym.name or sec.name} is in dropped section {sec.name}")
    return sec.address + sym.value


def _sext(value: int, bits: int) -> int:
    value &= (1 << bits) - 1
    return value - (1 << bits) if value >> (bits - 1) else value


def _apply(obj, target: _Section, entries, resolve) -> None:  # noqa: ANN001
    data = target.data

    def word(off: int) -> int:
        if off + 4 > len(data) or off % 4:
            raise LinkError(f"relocation at {target.name}+{off:#x} outside or misaligned")
        return struct.unpack_from(">I", data, off)[0]

    def put(off: int, value: int) -> None:
        struct.pack_into(">I", data, off, value & 0xFFFFFFFF)

    # For each HI16, the offset of the next LO16 against the same symbol (REL pairing rule).
    next_lo: dict[int, int] = {}
    pending: dict[int, int] = {}
    for i in range(len(entries) - 1, -1, -1):
        off, rtype, sym_index = entries[i]
        if rtype == R_MIPS_LO16:
            pending[sym_index] = off
        elif rtype == R_MIPS_HI16 and sym_index in pending:
            next_lo[i] = pending[sym_index]

    for i, (off, rtype, sym_index) in enumerate(entries):
        if rtype == R_MIPS_NONE:
            continue
        label = _sym_label(obj, sym_index)
        if rtype not in (R_MIPS_32, R_MIPS_26, R_MIPS_HI16, R_MIPS_LO16, R_MIPS_PC16):
            raise LinkError(
                f"unsupported relocation {reloc_name(rtype)} against {label} "
                f"in {target.name}+{off:#x}"
            )
        s = resolve(obj, sym_index)
        p = target.address + off
        insn = word(off)
        if rtype == R_MIPS_32:
            put(off, s + insn)
        elif rtype == R_MIPS_26:
            dest = s + _sext(insn << 2, 28)
            if dest % 4 or (dest >> 28) != ((p + 4) >> 28):
                raise LinkError(f"R_MIPS_26 to {label} ({dest:#x}) out of reach of {p:#x}")
            put(off, (insn & 0xFC000000) | ((dest >> 2) & 0x03FFFFFF))
        elif rtype == R_MIPS_HI16:
            # REL: the full addend is (this immediate << 16) + the sign-extended immediate of the
            # next LO16 against the same symbol. +0x8000 carries for the LO16's sign extension.
            if i not in next_lo:
                raise LinkError(f"R_MIPS_HI16 against {label} has no matching R_MIPS_LO16")
            lo = _sext(word(next_lo[i]), 16)
            value = s + ((insn & 0xFFFF) << 16) + lo
            put(off, (insn & 0xFFFF0000) | (((value + 0x8000) >> 16) & 0xFFFF))
        elif rtype == R_MIPS_LO16:
            value = s + _sext(insn, 16)
            put(off, (insn & 0xFFFF0000) | (value & 0xFFFF))
        else:  # R_MIPS_PC16: the addend in REL already accounts for the delay slot (-4).
            value = s + _sext(insn << 2, 18) - p
            if value % 4 or not -(1 << 17) <= value < (1 << 17):
                raise LinkError(f"R_MIPS_PC16 to {label} out of reach of {p:#x}")
            put(off, (insn & 0xFFFF0000) | ((value >> 2) & 0xFFFF))


def _output_symbols(objs: list[_Object]) -> list[tuple[str, int, int, int, int, int]]:
    """Named functions and objects, for disassemblers and the VM's traces (not loaded)."""
    out = []
    for obj in objs:
        for sym in obj.symbols:
            if sym.type not in (STT_FUNC, STT_OBJECT) or sym.shndx == SHN_UNDEF or not sym.name:
                continue
            if sym.shndx == SHN_ABS or sym.shndx >= len(obj.sections):
                continue
            sec = obj.sections[sym.shndx]
            if sec.cls < 0:
                continue
            out.append(
                (sym.name, sec.address + sym.value, sym.size, sym.binding, sym.type, sec.cls)
            )
    # Locals first, as ELF requires; otherwise object and symbol-table order.
    return [s for s in out if s[3] == STB_LOCAL] + [s for s in out if s[3] != STB_LOCAL]


def _write_exec(
    segments: list[_Segment],
    entry: int,
    e_flags: int,
    symbols: list[tuple[str, int, int, int, int, int]],
) -> bytes:
    ehsize, phentsize, shentsize = 52, 32, 40
    phoff = ehsize
    body = bytearray()
    base = _align(phoff + phentsize * len(segments), PAGE)

    # Segments at page-aligned file offsets, so that p_offset ≡ p_vaddr (mod PAGE).
    phdrs = bytearray()
    offsets = []
    for seg in segments:
        offset = base + len(body)
        offsets.append(offset)
        body += seg.data
        body += bytes(_align(len(body), PAGE) - len(body))
    for seg, offset in zip(segments, offsets, strict=True):
        phdrs += struct.pack(
            ">8I", PT_LOAD, offset, seg.address, seg.address, len(seg.data), seg.memsz,
            seg.flags, PAGE,
        )  # fmt: skip

    # Section table: one section per segment, the symbol table, the string tables.
    shstr = bytearray(b"\0")
    strtab = bytearray(b"\0")

    def shname(name: str) -> int:
        shstr.extend(name.encode() + b"\0")
        return len(shstr) - len(name) - 1

    sec_index = {_CLASS_NAMES.index(seg.name): i + 1 for i, seg in enumerate(segments)}
    syms = bytearray(bytes(16))
    n_local = 1
    for name, value, size, binding, stype, cls in symbols:
        strtab.extend(name.encode() + b"\0")
        # A symbol of an empty section (no segment) still needs some index: SHN_ABS.
        seg_idx = sec_index.get(cls, SHN_ABS)
        syms += struct.pack(
            ">IIIBBH", len(strtab) - len(name) - 1, value, size, (binding << 4) | stype, 0,
            seg_idx,
        )  # fmt: skip
        if binding == STB_LOCAL:
            n_local += 1

    file_end = base + len(body)
    symtab_off = file_end
    strtab_off = symtab_off + len(syms)
    shstr_placeholder = strtab_off + len(strtab)

    def shdr(
        name: str,
        stype: int,
        flags: int,
        addr: int,
        offset: int,
        size: int,
        link: int = 0,
        info: int = 0,
        align: int = 1,
        entsize: int = 0,
    ) -> bytes:
        return struct.pack(">10I", shname(name), stype, flags, addr, offset, size, link, info,
                           align, entsize)  # fmt: skip

    shdrs = [bytes(shentsize)]
    for seg, offset in zip(segments, offsets, strict=True):
        flags = SHF_ALLOC
        flags |= SHF_EXECINSTR if seg.flags & PF_X else 0
        flags |= SHF_WRITE if seg.flags & PF_W else 0
        stype = SHT_NOBITS if seg.name == ".bss" else SHT_PROGBITS
        shdrs.append(shdr(seg.name, stype, flags, seg.address, offset, seg.memsz, align=16))
    symtab_index = len(shdrs)
    shdrs.append(
        shdr(
            ".symtab",
            SHT_SYMTAB,
            0,
            0,
            symtab_off,
            len(syms),
            link=symtab_index + 1,
            info=n_local,
            align=4,
            entsize=16,
        )  # fmt: skip
    )
    shdrs.append(shdr(".strtab", SHT_STRTAB, 0, 0, strtab_off, len(strtab)))
    shstrndx = len(shdrs)
    shdrs.append(shdr(".shstrtab", SHT_STRTAB, 0, 0, shstr_placeholder, 0))
    # The .shstrtab header was packed before its own size was known; patch sh_size (+20).
    last = bytearray(shdrs[-1])
    struct.pack_into(">I", last, 20, len(shstr))
    shdrs[-1] = bytes(last)
    shoff = _align(shstr_placeholder + len(shstr), 4)

    ident = b"\x7fELF" + bytes([1, 2, 1, 0]) + bytes(8)  # ELF32, big-endian, version 1, SysV
    header = ident + struct.pack(
        ">HHIIIIIHHHHHH", ET_EXEC, EM_MIPS, 1, entry, phoff, shoff, e_flags, ehsize, phentsize,
        len(segments), shentsize, len(shdrs), shstrndx,
    )  # fmt: skip
    out = bytearray(header) + phdrs
    out += bytes(base - len(out))
    out += body
    out += syms + strtab + shstr
    out += bytes(shoff - len(out))
    for sh in shdrs:
        out += sh
    return bytes(out)
