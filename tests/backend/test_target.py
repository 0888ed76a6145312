"""The pinned targets: what LLVM emits for MIPS with our options, and the native build's caches."""

from __future__ import annotations

from pathlib import Path

import lief
import numpy as np
import pytest

from opmlc.backend.target import (
    MIPS_CPU,
    MIPS_FEATURES,
    MIPS_TRIPLE,
    NativeProgram,
    compile_mips_object,
    load_native,
    mips_target_machine,
)
from runtime.mips import PROVIDED_SYMBOLS, build_runtime_ir

SMALL_GLOBALS_IR = r"""
@a = global i32 1
@b = global i16 0
@c = internal global i8 0
@k = constant i32 7

define void @task(ptr %regions, i32 %node) {
  %x = load i32, ptr @a
  %y = load i32, ptr @k
  %z = add i32 %x, %y
  store i32 %z, ptr @a
  store i16 1, ptr @b
  store i8 2, ptr @c
  ret void
}
"""

I64_INLINE_IR = r"""
define i64 @ops(i64 %a, i64 %b, i32 %s32) {
  %s = zext i32 %s32 to i64
  %m = and i64 %s, 63
  %x1 = shl i64 %a, %m
  %x2 = lshr i64 %x1, %m
  %x3 = ashr i64 %x2, %m
  %x4 = mul i64 %x3, %b
  %x5 = call i64 @llvm.smax.i64(i64 %x4, i64 %a)
  %x6 = call i64 @llvm.ctlz.i64(i64 %x5, i1 false)
  %x7 = call i64 @llvm.abs.i64(i64 %x6, i1 false)
  ret i64 %x7
}
define void @task(ptr %regions, i32 %node) {
  ret void
}
declare i64 @llvm.smax.i64(i64, i64)
declare i64 @llvm.ctlz.i64(i64, i1)
declare i64 @llvm.abs.i64(i64, i1)
"""


def _elf(obj: bytes) -> lief.ELF.Binary:
    # Keep the returned Binary in a variable while iterating its sections or symbols: lief's
    # iterators do not keep a temporary Binary alive (iterating `_elf(x).sections` segfaults).
    return lief.ELF.parse(list(obj))


def _reloc_types(obj: bytes) -> set[int]:
    import struct

    elf = _elf(obj)
    types = set()
    for sec in elf.sections:
        if sec.type == lief.ELF.Section.TYPE.REL and sec.name != ".rel.pdr":
            types |= {info & 0xFF for _off, info in struct.iter_unpack(">II", bytes(sec.content))}
    return types


def test_mips_target_machine_is_the_pinned_one() -> None:
    tm = mips_target_machine()
    assert tm.triple == MIPS_TRIPLE
    assert str(tm.target_data).startswith("E-")  # big-endian, 32-bit pointers below
    assert "p:32:32" in str(tm.target_data)
    assert (MIPS_CPU, MIPS_FEATURES) == ("mips32", "+soft-float,+noabicalls")


def test_small_globals_use_no_gp_relative_small_data() -> None:
    obj = compile_mips_object(SMALL_GLOBALS_IR)
    elf = _elf(obj)
    names = {s.name for s in elf.sections}
    assert not names & {".sdata", ".sbss", ".scommon"}
    assert 7 not in _reloc_types(obj)  # R_MIPS_GPREL16


def test_emitted_relocations_are_the_ones_the_linker_implements() -> None:
    for ir in (SMALL_GLOBALS_IR, I64_INLINE_IR, build_runtime_ir()):
        assert _reloc_types(compile_mips_object(ir)) <= {2, 4, 5, 6, 10}


def test_i64_shifts_and_multiplication_need_no_libcalls() -> None:
    elf = _elf(compile_mips_object(I64_INLINE_IR))
    assert not [s.name for s in elf.symtab_symbols if s.shndx == 0 and s.name]


def test_runtime_references_nothing_but_task() -> None:
    # In particular memcpy/memset do not call themselves (LoopIdiomRecognize kept off).
    elf = _elf(compile_mips_object(build_runtime_ir()))
    undefined = {s.name for s in elf.symtab_symbols if s.shndx == 0 and s.name}
    defined = {s.name for s in elf.symtab_symbols if s.shndx != 0 and s.name}
    assert undefined == {"task"}
    assert PROVIDED_SYMBOLS | {"_start"} <= defined


def test_compiling_the_same_ir_twice_gives_the_same_object() -> None:
    from opmlc.backend import target

    first = compile_mips_object(SMALL_GLOBALS_IR)
    target._mips_objects.clear()
    assert compile_mips_object(SMALL_GLOBALS_IR) == first


ADD_ONE_IR = r"""
define void @task(ptr %regions, i32 %node) {
  %p = load ptr, ptr %regions
  %v = load i32, ptr %p
  %w = add i32 %v, %node
  store i32 %w, ptr %p
  ret void
}
"""


def test_load_native_compiles_once_per_process() -> None:
    assert load_native(ADD_ONE_IR, cache_dir=None) is load_native(ADD_ONE_IR, cache_dir=None)


def test_native_object_cache_on_disk_is_reused(tmp_path: Path) -> None:
    first = NativeProgram(ADD_ONE_IR, cache_dir=tmp_path)
    assert not first.from_cache
    assert [p.name for p in tmp_path.iterdir()] == [f"{first.key}.o"]
    second = NativeProgram(ADD_ONE_IR, cache_dir=tmp_path)
    assert second.from_cache
    for prog in (first, second):
        buf = np.array([40], dtype=np.int32)
        prog.run([buf], 2)
        assert buf[0] == 42


def test_native_task_rejects_a_module_without_task() -> None:
    with pytest.raises(ValueError, match="no function @task"):
        NativeProgram("define void @other() {\n  ret void\n}\n")
