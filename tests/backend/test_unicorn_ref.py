"""The unicorn reference runner: flat 4 GiB memory, exact instruction counts, clean failures."""

from __future__ import annotations

import numpy as np
import pytest
from backend_harness import big_endian
from unicorn import UC_HOOK_CODE

import toolchain.unicorn_ref as unicorn_ref
from opmlc.backend.mips_program import build_mips_elf
from toolchain.unicorn_ref import run_elf

# Value i's region gets the 32-bit word 0x11111111 * (i + 1), and value 0 also gets node.
MARK_IR = r"""
define void @task(ptr %regions, i32 %node) {
entry:
  br label %loop
loop:
  %i = phi i32 [ 0, %entry ], [ %i.next, %loop ]
  %pp = getelementptr ptr, ptr %regions, i32 %i
  %p = load ptr, ptr %pp
  %i1 = add i32 %i, 1
  %v = mul i32 %i1, 286331153
  store volatile i32 %v, ptr %p
  %i.next = add i32 %i, 1
  %more = icmp ult i32 %i.next, N
  br i1 %more, label %loop, label %done
done:
  %p0 = load ptr, ptr %regions
  %q = getelementptr i32, ptr %p0, i32 1
  store i32 %node, ptr %q
  ret void
}
"""


def test_every_address_is_its_own_memory_location() -> None:
    # In unicorn's default kernel mode, 0x80000000+x, 0xA0000000+x and physical x are one
    # location, and 0xC0000000 and above fault: the runner must give the VM's flat space.
    addrs = [0x80000000, 0xA0000000, 0xC0000000, 0xE0000000, 0xFFFFFFE0, 0x80400000, 0x00001000]
    elf = build_mips_elf(MARK_IR.replace("N", str(len(addrs))))
    res = run_elf(elf, node=77, outputs=[(a, 4) for a in addrs] + [(addrs[0] + 4, 4)], table=addrs)
    assert res.exit_code == 0, res.panic
    words = [int.from_bytes(b, "big") for b in res.outputs]
    assert words == [0x11111111 * (i + 1) for i in range(len(addrs))] + [77]


def test_instruction_count_matches_a_per_instruction_count(monkeypatch: pytest.MonkeyPatch) -> None:
    counted = []
    original = unicorn_ref._Machine.__init__

    def init(self: unicorn_ref._Machine) -> None:
        original(self)
        counted.append(0)

        def hook(uc, address, size, data) -> None:  # noqa: ANN001
            counted[-1] += 1

        self.uc.hook_add(UC_HOOK_CODE, hook)

    monkeypatch.setattr(unicorn_ref._Machine, "__init__", init)
    elf = build_mips_elf(MARK_IR.replace("N", "3"))
    res = run_elf(elf, node=1, table=[0x80000000, 0x80001000, 0x80002000])
    assert res.exit_code == 0
    assert res.instructions == counted[-1]


def test_inputs_are_written_and_outputs_read_big_endian() -> None:
    ir = r"""
define void @task(ptr %regions, i32 %node) {
  %a = load ptr, ptr %regions
  %pb = getelementptr ptr, ptr %regions, i32 1
  %b = load ptr, ptr %pb
  %v = load i32, ptr %a
  %w = add i32 %v, 1
  store i32 %w, ptr %b
  ret void
}
"""
    elf = build_mips_elf(ir)
    x = np.array([0x01020304], dtype=np.int32)
    res = run_elf(elf, inputs=[(0x80000000, big_endian(x))], outputs=[(0x80000020, 4)],
                  table=[0x80000000, 0x80000020])
    assert res.outputs == [bytes.fromhex("01020305")]


def test_a_trap_is_reported_as_a_panic_without_exit_code() -> None:
    ir = r"""
declare void @llvm.trap()
define void @task(ptr %regions, i32 %node) {
  call void @llvm.trap()
  unreachable
}
"""
    res = run_elf(build_mips_elf(ir))
    assert res.exit_code is None
    assert res.panic is not None and "exception" in res.panic


def test_a_program_that_never_exits_stops_at_the_limit() -> None:
    ir = r"""
define void @task(ptr %regions, i32 %node) {
entry:
  br label %spin
spin:
  %i = phi i32 [ 0, %entry ], [ %j, %spin ]
  %j = add i32 %i, 1
  store volatile i32 %j, ptr %regions
  br label %spin
}
"""
    res = run_elf(build_mips_elf(ir), max_instructions=10_000)
    assert res.exit_code is None
    assert res.instructions == 10_000
    assert "no exit" in res.panic
