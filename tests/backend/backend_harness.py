"""Run one hand-written `task` module both ways: MIPS ELF under unicorn, and natively.

Tensors are numpy arrays. On MIPS a region holds the big-endian bytes; natively the buffer is
the native-endian array itself. `run_both` returns, per output, the bytes each side produced,
both in the big-endian (tensor-root) encoding, so that tests compare them directly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from opmlc.backend.mips_program import build_mips_elf
from opmlc.backend.target import load_native
from toolchain.unicorn_ref import run_elf

REGION_BASE = 0x80000000
REGION_STRIDE = 0x00100000


def big_endian(a: np.ndarray) -> bytes:
    return np.ascontiguousarray(a).astype(a.dtype.newbyteorder(">")).tobytes()


@dataclass
class Both:
    mips: list[bytes]
    native: list[bytes]
    instructions: int
    elf: bytes

    def as_arrays(self, dtypes: Sequence[np.dtype]) -> tuple[list[np.ndarray], list[np.ndarray]]:
        m = [
            np.frombuffer(b, dtype=np.dtype(d).newbyteorder(">"))
            for b, d in zip(self.mips, dtypes, strict=True)
        ]
        n = [
            np.frombuffer(b, dtype=np.dtype(d).newbyteorder(">"))
            for b, d in zip(self.native, dtypes, strict=True)
        ]
        return m, n


def region_addresses(n: int, base: int = REGION_BASE, stride: int = REGION_STRIDE) -> list[int]:
    return [base + i * stride for i in range(n)]


def run_both(
    module_ir: str,
    values: Sequence[np.ndarray],
    outputs: Sequence[int],
    node: int = 0xFFFFFFFF,
    addresses: Sequence[int] | None = None,
) -> Both:
    """Run `task(regions, node)`: `values[i]` is value i's initial content (outputs too, usually
    zeros); `outputs` are the value indices whose final bytes are returned."""
    addrs = list(addresses) if addresses is not None else region_addresses(len(values))
    elf = build_mips_elf(module_ir)
    res = run_elf(
        elf,
        node=node,
        table=addrs,
        inputs=[(addrs[i], big_endian(v)) for i, v in enumerate(values)],
        outputs=[(addrs[i], values[i].nbytes) for i in outputs],
    )
    assert res.panic is None, res.panic
    assert res.exit_code == 0

    bufs = [np.ascontiguousarray(v).copy() for v in values]
    load_native(module_ir, cache_dir=None).run(bufs, node)
    return Both(
        mips=res.outputs,
        native=[big_endian(bufs[i]) for i in outputs],
        instructions=res.instructions,
        elf=elf,
    )
