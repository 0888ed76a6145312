"""Our static linker: a well-formed, reproducible ELF; clear LinkErrors for what it cannot do."""

from __future__ import annotations

import hashlib
import struct
import subprocess
import sys

import lief
import pytest

from opmlc.backend.link import IMAGE_BASE, PAGE, LinkError, link
from opmlc.backend.mips_program import build_mips_elf
from opmlc.backend.target import compile_mips_object
from runtime.mips import build_runtime_ir

# A module with code, read-only data, initialised and zero data, a switch table and a call.
MODULE_IR = r"""
@table = internal constant [6 x i32] [i32 3, i32 1, i32 4, i32 1, i32 5, i32 9]
@counter = global i32 0
@seed = global i32 12345
@msg = internal constant [5 x i8] c"opmlc"

define void @task(ptr %regions, i32 %node) {
entry:
  %out = load ptr, ptr %regions
  %i = and i32 %node, 3
  %p = getelementptr [6 x i32], ptr @table, i32 0, i32 %i
  %v = load i32, ptr %p
  %c = load i32, ptr @counter
  %c1 = add i32 %c, 1
  store i32 %c1, ptr @counter
  %s = load i32, ptr @seed
  %m = getelementptr [5 x i8], ptr @msg, i32 0, i32 %i
  %mb = load i8, ptr %m
  %m32 = zext i8 %mb to i32
  %r0 = add i32 %v, %s
  %r1 = add i32 %r0, %c1
  %r2 = add i32 %r1, %m32
  store i32 %r2, ptr %out
  ret void
}
"""


def _build() -> bytes:
    return build_mips_elf(MODULE_IR)


def test_elf_is_a_mips32_big_endian_executable_with_entry_start() -> None:
    elf = lief.ELF.parse(list(_build()))
    assert elf.header.file_type == lief.ELF.Header.FILE_TYPE.EXEC
    assert elf.header.machine_type == lief.ELF.ARCH.MIPS
    assert elf.header.identity_class == lief.ELF.Header.CLASS.ELF32
    assert elf.header.identity_data == lief.ELF.Header.ELF_DATA.MSB
    start = elf.get_symbol("_start")
    assert elf.header.entrypoint == start.value == IMAGE_BASE  # the runtime is linked first
    assert elf.get_symbol("task") is not None


def test_segments_are_page_aligned_loads_from_the_image_base() -> None:
    elf = lief.ELF.parse(list(_build()))
    loads = [s for s in elf.segments if s.type == lief.ELF.Segment.TYPE.LOAD]
    assert [s.virtual_address for s in loads] == sorted(s.virtual_address for s in loads)
    assert loads[0].virtual_address == IMAGE_BASE
    for seg in loads:
        assert seg.virtual_address % PAGE == 0 and seg.file_offset % PAGE == 0
        assert seg.physical_size <= seg.virtual_size
    flags = [
        (bool(s.has(lief.ELF.Segment.FLAGS.X)), bool(s.has(lief.ELF.Segment.FLAGS.W)))
        for s in loads
    ]
    # text r-x, rodata r--, data rw-, bss rw- (no file bytes)
    assert flags == [(True, False), (False, False), (False, True), (False, True)]
    assert loads[-1].physical_size == 0


def test_two_builds_give_identical_bytes() -> None:
    assert hashlib.sha256(_build()).digest() == hashlib.sha256(_build()).digest()


def test_a_fresh_process_builds_the_same_bytes() -> None:
    # No in-process cache, another working directory: only the inputs may matter.
    code = (
        "import sys, hashlib\n"
        "from opmlc.backend.mips_program import build_mips_elf\n"
        "sys.stdout.write(hashlib.sha256(build_mips_elf(sys.stdin.read())).hexdigest())\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        input=MODULE_IR,
        capture_output=True,
        text=True,
        check=True,
        cwd="/",
    )
    assert out.stdout == hashlib.sha256(_build()).hexdigest()


def test_the_image_holds_no_region_table_task_reads_the_descriptors() -> None:
    # One image serves every task map: `task` gets the descriptor's table (0x30000004).
    from vm.loader import TASK_TABLE_ADDR, initial_state
    from vm.run import run

    elf_bytes = _build()
    assert lief.ELF.parse(list(elf_bytes)).get_symbol("opmlc_regions") is None
    outs = []
    for out in (0x80000000, 0x80400000):
        state = initial_state(elf_bytes, 2, {0: out})
        assert state.memory.read_u32(TASK_TABLE_ADDR) == out
        run(state, 100_000)
        assert state.exited and state.exit_code == 0
        outs.append(state.memory.read_u32(out))
    assert outs[0] == outs[1] == 4 + 12345 + 1 + ord("m")


def _objects() -> list[bytes]:
    return [compile_mips_object(build_runtime_ir()), compile_mips_object(MODULE_IR)]


def _patch_relocation(obj: bytes, rtype_from: int, rtype_to: int) -> bytes:
    """Change the first relocation of type `rtype_from` in .rel.text to `rtype_to`."""
    elf = lief.ELF.parse(list(obj))
    rel = elf.get_section(".rel.text")
    data = bytearray(obj)
    for off in range(rel.file_offset, rel.file_offset + rel.size, 8):
        info = struct.unpack_from(">I", data, off + 4)[0]
        if info & 0xFF == rtype_from:
            struct.pack_into(">I", data, off + 4, (info & ~0xFF) | rtype_to)
            return bytes(data)
    raise AssertionError(f"no relocation of type {rtype_from}")


def test_unsupported_relocation_is_a_link_error_naming_type_and_symbol() -> None:
    runtime, model = _objects()
    bad = _patch_relocation(model, 5, 7)  # the first R_MIPS_HI16 becomes R_MIPS_GPREL16
    with pytest.raises(
        LinkError, match=r"R_MIPS_GPREL16 against (table|counter|seed|msg|section \.\w+)"
    ):
        link([runtime, bad])


def test_hi16_without_a_matching_lo16_is_a_link_error() -> None:
    runtime, model = _objects()
    elf = lief.ELF.parse(list(model))
    rel = elf.get_section(".rel.text")
    data = bytearray(model)
    # Neutralise every LO16 (R_MIPS_NONE is skipped): every HI16 loses its partner.
    for off in range(rel.file_offset, rel.file_offset + rel.size, 8):
        info = struct.unpack_from(">I", data, off + 4)[0]
        if info & 0xFF == 6:
            struct.pack_into(">I", data, off + 4, info & ~0xFF)
    with pytest.raises(LinkError, match="R_MIPS_HI16 against .* no matching R_MIPS_LO16"):
        link([runtime, bytes(data)])


def test_undefined_symbol_is_a_link_error_naming_it() -> None:
    ir = r"""
declare void @opmlc_missing_helper(i32)
define void @task(ptr %regions, i32 %node) {
  call void @opmlc_missing_helper(i32 %node)
  ret void
}
"""
    with pytest.raises(LinkError, match="undefined symbol opmlc_missing_helper"):
        build_mips_elf(ir)


def test_symbol_defined_twice_is_a_link_error() -> None:
    runtime, model = _objects()
    with pytest.raises(LinkError, match="defined twice"):
        link([runtime, model, model])


def test_missing_task_is_a_link_error() -> None:
    with pytest.raises(LinkError, match="undefined symbol task"):
        link([compile_mips_object(build_runtime_ir())])


def test_non_mips_input_is_a_link_error() -> None:
    with pytest.raises(LinkError, match="not an ELF32 big-endian"):
        link([b"\x7fELF\x02\x01" + bytes(64)])
