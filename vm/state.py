"""The VM state and its 186-byte encoding (DESIGN "VM state"), mirrored by `MIPS.sol`.

Pipeline: vm/loader.py builds the initial State of a task, vm/step.py and vm/run.py advance
it, and the state hashes computed here are what the dispute game bisects over (phase 2) and
what `MIPS.step` returns.

Encoding, big-endian: memRoot (32) ‖ pc ‖ nextPC ‖ lo ‖ hi (u32) ‖ step (u64) ‖ exitCode (u8) ‖
exited (u8) ‖ 32 registers (u32). State hash = keccak256(encoding) with its top byte replaced
by the status: 0 exited with code 0, 1 exited with code 1, 2 exited otherwise, 3 running.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from vm.memory import Memory
from vm.merkle import keccak256

STATE_BYTES = 186
SP_INIT = 0x7FFFF000  # DESIGN: the stack grows down from here

STATUS_EXITED_OK = 0
STATUS_EXITED_ONE = 1
STATUS_PANICKED = 2  # exited with any other code, including a panic's 0xFF
STATUS_RUNNING = 3

_HEAD = struct.Struct(">IIIIQBB")  # pc, nextPC, lo, hi, step, exitCode, exited
_REGS = struct.Struct(">32I")
_EXIT_CODE_AT = 32 + 16 + 8
_EXITED_AT = _EXIT_CODE_AT + 1


@dataclass
class State:
    """Everything a step reads and writes. `step()` and `run()` mutate it in place."""

    memory: Memory = field(default_factory=Memory)
    pc: int = 0
    next_pc: int = 4
    lo: int = 0
    hi: int = 0
    step: int = 0
    exit_code: int = 0
    exited: bool = False
    regs: list[int] = field(default_factory=lambda: [0] * 32)

    def encode(self) -> bytes:
        """The 186-byte encoding (rehashes dirty memory pages)."""
        return encode(self)

    def hash(self) -> bytes:
        """The state hash, status byte on top."""
        return state_hash(encode(self))

    def copy(self) -> State:
        """An independent copy, memory included."""
        return State(
            self.memory.copy(),
            self.pc,
            self.next_pc,
            self.lo,
            self.hi,
            self.step,
            self.exit_code,
            self.exited,
            list(self.regs),
        )


def encode(state: State) -> bytes:
    """The state's 186-byte encoding (DESIGN "VM state")."""
    return (
        state.memory.root()
        + _HEAD.pack(
            state.pc,
            state.next_pc,
            state.lo,
            state.hi,
            state.step,
            state.exit_code,
            1 if state.exited else 0,
        )
        + _REGS.pack(*state.regs)
    )


def status(encoded: bytes) -> int:
    """Status of an encoded state: 0/1 exited with that code, 2 exited otherwise, 3 running."""
    if not encoded[_EXITED_AT]:
        return STATUS_RUNNING
    code = encoded[_EXIT_CODE_AT]
    return code if code in (0, 1) else STATUS_PANICKED


def state_hash(encoded: bytes) -> bytes:
    """keccak256 of the encoding with its top byte replaced by the status."""
    if len(encoded) != STATE_BYTES:
        raise ValueError(f"an encoded VM state has {STATE_BYTES} bytes, not {len(encoded)}")
    return bytes([status(encoded)]) + keccak256(encoded)[1:]


@dataclass(frozen=True)
class DecodedState:
    """The fields of an encoded state, memory given only by its root (tests, witnesses)."""

    mem_root: bytes
    pc: int
    next_pc: int
    lo: int
    hi: int
    step: int
    exit_code: int
    exited: bool
    regs: tuple[int, ...]


def decode(encoded: bytes) -> DecodedState:
    """Inverse of `encode`, memory left as its root."""
    if len(encoded) != STATE_BYTES:
        raise ValueError(f"an encoded VM state has {STATE_BYTES} bytes, not {len(encoded)}")
    pc, next_pc, lo, hi, step, exit_code, exited = _HEAD.unpack_from(encoded, 32)
    if exited > 1:
        raise ValueError(f"exited byte is {exited}, not 0 or 1")
    regs = _REGS.unpack_from(encoded, 32 + _HEAD.size)
    return DecodedState(
        bytes(encoded[:32]), pc, next_pc, lo, hi, step, exit_code, bool(exited), regs
    )
