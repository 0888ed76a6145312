"""vm.loader: a MIPS ELF becomes the initial state of DESIGN; anything else is a clear ElfError."""

from __future__ import annotations

import struct

import pytest

from vm import asm
from vm.errors import ElfError
from vm.loader import (
    TASK_DESCRIPTOR_ADDR,
    WHOLE_GRAPH,
    base_root,
    initial_state,
    load_task,
    parse_elf,
)
from vm.memory import Memory
from vm.merkle import subtree_root
from vm.run import run
from vm.state import SP_INIT


def test_initial_state_follows_the_design():
    elf = asm.demo_program()
    state = initial_state(elf, node=7)
    assert (state.pc, state.next_pc) == (asm.DEMO_TEXT, asm.DEMO_TEXT + 4)
    assert state.regs[29] == SP_INIT and sum(state.regs) == SP_INIT
    assert (state.lo, state.hi, state.step, state.exit_code, state.exited) == (0, 0, 0, 0, False)
    assert state.memory.read_u32(TASK_DESCRIPTOR_ADDR) == 7
    assert initial_state(elf).memory.read_u32(TASK_DESCRIPTOR_ADDR) == WHOLE_GRAPH


def test_base_root_is_the_image_plus_the_descriptor():
    elf = asm.demo_program()
    program = parse_elf(elf)
    mem = Memory()
    for seg in program.segments:
        mem.write_bytes(seg.vaddr, seg.data)
    mem.write_u32(TASK_DESCRIPTOR_ADDR, 3)
    assert base_root(elf, 3) == mem.root()
    assert base_root(elf, 3) != base_root(elf, 4)


def test_bss_beyond_the_file_bytes_is_zero(tmp_path):
    elf = asm.elf32_mips(
        [(0x00400000, b"\x00" * 8, 0), (0x10000000, b"\xff" * 4, 0x2000)], 0x00400000
    )
    path = tmp_path / "model.elf"
    path.write_bytes(elf)
    state = initial_state(path)
    assert state.memory.read_bytes(0x10000000, 8) == b"\xff" * 4 + bytes(4)


def test_load_task_splices_inputs_lazily():
    elf = asm.demo_program()
    data = bytes(range(256)) * 16
    root = subtree_root(data)
    fetched = []

    class Store(dict):
        def get(self, key, default=None):
            fetched.append(key)
            return super().get(key, default)

    state = load_task(elf, WHOLE_GRAPH, [(0x80000000, len(data), root)], Store({root: data}))
    assert not fetched
    assert state.memory.region_root(0x80000000, len(data)) == root
    run(state, 10_000)
    assert not fetched  # the demo program never reads its input region
    assert state.memory.read_u32(0x80000004) == 0x04050607 and fetched == [root]


def valid() -> bytes:
    return asm.demo_program()


def patched(offset: int, fmt: str, value: int) -> bytes:
    raw = bytearray(valid())
    struct.pack_into(fmt, raw, offset, value)
    return bytes(raw)


@pytest.mark.parametrize(
    "make,message",
    [
        (lambda: b"", "not an ELF file"),
        (lambda: b"garbage that is not an ELF at all", "not an ELF file"),
        (lambda: valid()[:40], "truncated"),
        (lambda: valid()[:60], "truncated"),  # program headers cut
        (lambda: valid()[:200], "truncated"),  # segment bytes cut
        (lambda: open("/bin/ls", "rb").read(), "not ELF32"),
        (lambda: patched(4, ">B", 2), "not ELF32"),
        (lambda: patched(5, ">B", 1), "not big-endian"),
        (lambda: patched(18, ">H", 3), "not MIPS"),
        (lambda: patched(16, ">H", 3), "not an executable"),
        (lambda: patched(24, ">I", 0x00100000), "entry point"),
        (lambda: patched(44, ">H", 0), "no program headers"),
    ],
)
def test_bad_files_raise_elf_error_with_a_reason(make, message):
    with pytest.raises(ElfError, match=message) as info:
        parse_elf(make())
    assert isinstance(info.value, ValueError)
    assert "\n" not in str(info.value)


def test_a_missing_file_is_an_elf_error(tmp_path):
    with pytest.raises(ElfError, match="cannot read"):
        parse_elf(tmp_path / "absent.elf")


def test_a_32_bit_little_endian_x86_style_header_is_refused():
    raw = bytearray(valid())
    raw[5] = 1  # little-endian: every field would be misread
    with pytest.raises(ElfError, match="big-endian"):
        parse_elf(bytes(raw))
