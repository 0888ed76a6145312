"""From model.elf and a task to the VM's initial state.

Pipeline: opmlc/backend/link.py writes model.elf; this module loads its PT_LOAD segments into a
Memory, writes the task descriptor (the node index, then the task's region table: one u32
address per value, 0 for a value the task does not map), sets pc and $sp (DESIGN
"Implementation choices"), and splices the task's input tensor roots into their regions.
`base_root` is the root recorded in the manifest and used by the dispute contract to derive a
node's initial state; it commits to the task's map through the descriptor.

Files are checked before anything is loaded: a file that is not an ELF32 big-endian MIPS
executable with sane segments raises vm.errors.ElfError with a one-line reason, never a lief
error or a traceback from inside a parser.
"""

from __future__ import annotations

import functools
import io
import os
import struct
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from vm.errors import ElfError
from vm.memory import Memory, TensorStore
from vm.state import SP_INIT, State

TASK_DESCRIPTOR_ADDR = 0x30000000
TASK_TABLE_ADDR = TASK_DESCRIPTOR_ADDR + 4  # the region table, entry i at + 4i
MAX_TABLE_ENTRIES = 1 << 24  # the descriptor must end well below the stack
WHOLE_GRAPH = 0xFFFFFFFF
IMAGE_LIMIT = TASK_DESCRIPTOR_ADDR  # the program image must stay below the descriptor

_EHDR = struct.Struct(">16sHHIIIIIHHHHHH")
_PT_LOAD = 1
_ET_EXEC = 2
_EM_MIPS = 8


@dataclass(frozen=True)
class Segment:
    vaddr: int
    data: bytes  # the file bytes; the rest up to memsz is zero
    memsz: int


@dataclass(frozen=True)
class Program:
    """What the VM needs from an ELF: its entry point and loadable segments."""

    entry: int
    segments: tuple[Segment, ...]


def _read(elf: bytes | bytearray | str | os.PathLike[str]) -> tuple[bytes, str]:
    if isinstance(elf, bytes | bytearray | memoryview):
        return bytes(elf), "ELF"
    try:
        with open(elf, "rb") as f:
            return f.read(), os.fspath(elf)
    except OSError as e:
        raise ElfError(f"{os.fspath(elf)}: cannot read: {e.strerror}") from None


@functools.cache
def _lief():
    """lief, imported on first use: its import alone costs about a second, which every command
    that only imports this module (a native run) would pay."""
    import lief

    lief.logging.disable()  # lief reports problems on stderr; ours become ElfError messages
    return lief


def parse_elf(elf: bytes | bytearray | str | os.PathLike[str]) -> Program:
    """Check and parse an ELF32 big-endian MIPS executable (bytes or a path)."""
    raw, name = _read(elf)

    def fail(reason: str) -> ElfError:
        return ElfError(f"{name}: {reason}")

    if len(raw) < 4 or raw[:4] != b"\x7fELF":
        raise fail("not an ELF file (no \\x7fELF magic)")
    if len(raw) < _EHDR.size:
        raise fail(f"truncated: {len(raw)} bytes, shorter than an ELF32 header ({_EHDR.size})")
    if raw[4] != 1:
        raise fail(f"not ELF32 (class byte {raw[4]}): the VM runs 32-bit MIPS")
    if raw[5] != 2:
        raise fail("not big-endian: the VM runs big-endian MIPS")
    (_, e_type, e_machine, _, entry, phoff, _, _, _, phentsize, phnum, _, _, _) = _EHDR.unpack_from(
        raw
    )
    if e_machine != _EM_MIPS:
        raise fail(f"machine {e_machine}, not MIPS ({_EM_MIPS})")
    if e_type != _ET_EXEC:
        raise fail(f"ELF type {e_type}, not an executable (ET_EXEC)")
    if phnum == 0:
        raise fail("no program headers")
    if phentsize != 32:
        raise fail(f"program header size {phentsize}, not 32")
    if phoff + phnum * phentsize > len(raw):
        raise fail(
            f"truncated: program headers end at {phoff + phnum * phentsize}, file has {len(raw)} bytes"
        )

    lief = _lief()
    try:
        binary = lief.parse(io.BytesIO(raw))
    except Exception as e:  # lief raises assorted errors on hostile input
        raise fail(f"unparsable ELF ({type(e).__name__})") from None
    if not isinstance(binary, lief.ELF.Binary):
        raise fail("unparsable ELF")

    segments = []
    for seg in binary.segments:
        if seg.type != lief.ELF.Segment.TYPE.LOAD:
            continue
        off, filesz = seg.file_offset, seg.physical_size
        vaddr, memsz = seg.virtual_address, seg.virtual_size
        if off + filesz > len(raw):
            raise fail(
                f"truncated: segment at {vaddr:#x} needs bytes up to {off + filesz}, file has {len(raw)}"
            )
        if filesz > memsz:
            raise fail(
                f"segment at {vaddr:#x} has more file bytes ({filesz}) than memory ({memsz})"
            )
        if vaddr + memsz > IMAGE_LIMIT:
            raise fail(f"segment at {vaddr:#x} (size {memsz:#x}) reaches past {IMAGE_LIMIT:#x}")
        segments.append(Segment(vaddr, raw[off : off + filesz], memsz))
    if not segments:
        raise fail("no PT_LOAD segment")
    if not any(s.vaddr <= entry < s.vaddr + s.memsz for s in segments):
        raise fail(f"entry point {entry:#x} is outside every PT_LOAD segment")
    if entry & 3:
        raise fail(f"entry point {entry:#x} is not 4-aligned")
    return Program(entry, tuple(segments))


def load_program(program: Program, memory: Memory) -> None:
    """Copy the segments into memory (bytes past each segment's file size stay zero)."""
    for seg in program.segments:
        memory.write_bytes(seg.vaddr, seg.data)


Table = Mapping[int, int] | Sequence[int]


def _entries(table: Table) -> dict[int, int]:
    """The nonzero entries of a region table (a sequence, or a sparse mapping index → addr)."""
    items = table.items() if isinstance(table, Mapping) else enumerate(table)
    out = {}
    for i, addr in items:
        if not 0 <= i < MAX_TABLE_ENTRIES or not 0 <= addr <= 0xFFFFFFFF:
            raise ValueError(f"region table entry {i} = {addr:#x} is out of range")
        if addr:
            out[i] = addr
    return out


def write_descriptor(memory: Memory, node: int, table: Table = ()) -> None:
    """The task descriptor: u32 node index, then the region table (big-endian words; entries
    not given stay 0, as every byte of a fresh memory is)."""
    memory.write_u32(TASK_DESCRIPTOR_ADDR, node & 0xFFFFFFFF)
    for i, addr in sorted(_entries(table).items()):
        memory.write_u32(TASK_TABLE_ADDR + 4 * i, addr)


def initial_state(elf: bytes | str | os.PathLike[str] | Program, node: int = WHOLE_GRAPH,
                  table: Table = ()) -> State:
    """The task's state before step 0, without input tensors: the base root's state."""
    program = elf if isinstance(elf, Program) else parse_elf(elf)
    state = State(pc=program.entry, next_pc=(program.entry + 4) & 0xFFFFFFFF)
    load_program(program, state.memory)
    write_descriptor(state.memory, node, table)
    state.regs[29] = SP_INIT
    return state


def base_root(elf: bytes | str | os.PathLike[str] | Program, node: int = WHOLE_GRAPH,
              table: Table = ()) -> bytes:
    """Memory root of the program image plus the task descriptor, regions empty."""
    return initial_state(elf, node, table).memory.root()


def base_roots(elf: bytes | str | os.PathLike[str] | Program,
               tasks: Iterable[tuple[int, Table]]) -> Iterator[bytes]:
    """`base_root` of each (node, table), from one memory: tasks differ only in their
    descriptors, so each further root rehashes the few descriptor pages that changed."""
    state = initial_state(elf, WHOLE_GRAPH)
    memory = state.memory
    previous: dict[int, int] = {}
    for node, table in tasks:
        entries = _entries(table)
        memory.write_u32(TASK_DESCRIPTOR_ADDR, node & 0xFFFFFFFF)
        for i in previous.keys() - entries.keys():
            memory.write_u32(TASK_TABLE_ADDR + 4 * i, 0)
        for i, addr in entries.items():
            if previous.get(i) != addr:
                memory.write_u32(TASK_TABLE_ADDR + 4 * i, addr)
        previous = entries
        yield memory.root()


def load_task(
    elf: bytes | str | os.PathLike[str] | Program,
    node: int,
    inputs: Iterable[tuple[int, int, bytes]],
    store: TensorStore | Mapping[bytes, bytes],
    table: Table = (),
) -> State:
    """Initial state of a task: the base state (descriptor with `table`) with each (addr, size,
    root) input spliced in.

    Tensor bytes are fetched from `store` (root → bytes) only when the program touches them.
    """
    state = initial_state(elf, node, table)
    for addr, size, root in inputs:
        state.memory.splice(addr, size, root, store)
    return state
