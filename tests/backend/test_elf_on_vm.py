"""Our ELF runs the same on the project's VM as under unicorn: same output bytes, same steps.

The VM (vm/) is the executor whose states are committed on chain; unicorn is the independent
reference. Agreement on the step count also checks the runner's block-based counting.
"""

from __future__ import annotations

import numpy as np
from backend_harness import big_endian, region_addresses
from test_mips_vs_native import DENSE_IR, _i64_ir

from opmlc.backend.mips_program import build_mips_elf
from toolchain.unicorn_ref import run_elf
from vm.loader import initial_state
from vm.run import run


def _both(ir: str, values: list[np.ndarray], out: int) -> None:
    addrs = region_addresses(len(values))
    elf = build_mips_elf(ir)
    inputs = [(addrs[i], big_endian(v)) for i, v in enumerate(values) if i != out]
    size = values[out].nbytes
    ref = run_elf(elf, inputs=inputs, outputs=[(addrs[out], size)], table=addrs)
    state = initial_state(elf, table=addrs)
    for addr, data in inputs:
        state.memory.write_bytes(addr, data)
    steps = run(state, 10 * ref.instructions)
    assert (state.exited, state.exit_code, ref.exit_code) == (True, 0, 0)
    assert steps == ref.instructions
    assert state.memory.read_bytes(addrs[out], size) == ref.outputs[0]


def test_dense_kernel_runs_identically_on_vm_and_unicorn() -> None:
    rng = np.random.default_rng(3)
    k, n = 37, 5
    x = rng.integers(-(2**31), 2**31 - 1, size=k).astype(np.int32)
    w = rng.integers(-(2**20), 2**20, size=(n, k)).astype(np.int32)
    ir = DENSE_IR.replace("K", str(k)).replace("N", str(n))
    _both(ir, [x, w, np.zeros(n, np.int32)], out=2)


def test_i64_division_helpers_run_identically_on_vm_and_unicorn() -> None:
    rng = np.random.default_rng(4)
    m = 12
    a = rng.integers(-(2**62), 2**62, size=m)
    b = rng.integers(-(2**40), 2**40, size=m)
    s = (np.arange(m) * 13 % 64).astype(np.int32)
    _both(_i64_ir(m), [a, b, s, np.zeros(9 * m, np.int64)], out=3)
