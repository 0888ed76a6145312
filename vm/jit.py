"""A tiny host JIT for vm/'s own native kernels (today: keccak, vm/keccak_ir.py).

Place: below vm/native_hash.py, which asks for a compiled module once per process and calls its
functions through ctypes. vm/ imports nothing from opmlc, so this is a separate, smaller twin
of opmlc/backend/target.py's host path: parse the IR text, retarget it to the host (its CPU
name and every feature it has), run LLVM's default O2 pipeline, and let MCJIT finalise it. No
disk cache: the kernels are small and compile in a fraction of a second.
"""

from __future__ import annotations

import platform
from functools import cache

import llvmlite.binding as llvm

OPT_LEVEL = 2


@cache
def _init() -> None:
    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()


def host_features() -> dict[str, bool]:
    """The host CPU's features as LLVM names them (e.g. 'avx512f': True)."""
    _init()
    return dict(llvm.get_host_cpu_features())


def host_machine() -> llvm.TargetMachine:
    """A new JIT target machine for this host (MCJIT owns and frees the one it is given)."""
    _init()
    target = llvm.Target.from_triple(llvm.get_process_triple())
    return target.create_target_machine(
        cpu=llvm.get_host_cpu_name(),
        features=llvm.get_host_cpu_features().flatten(),
        opt=OPT_LEVEL,
        reloc="default",
        codemodel="jitdefault",
        jit=True,
    )


def host_description() -> str:
    """Machine, CPU name and triple, for reports (bench/commit_speed.py)."""
    _init()
    return f"{platform.machine()} {llvm.get_host_cpu_name()} ({llvm.get_process_triple()})"


class JitModule:
    """IR text compiled for the host; `address(name)` of each defined function.

    Keep the object alive as long as any function pointer taken from it is used.
    """

    def __init__(self, module_ir: str) -> None:
        tm = host_machine()
        module = llvm.parse_assembly(module_ir)
        module.triple = tm.triple
        module.data_layout = str(tm.target_data)
        module.verify()
        pto = llvm.create_pipeline_tuning_options(speed_level=OPT_LEVEL)
        pto.loop_vectorization = True
        pto.slp_vectorization = True
        pto.loop_unrolling = True
        pb = llvm.create_pass_builder(tm, pto)
        pb.getModulePassManager().run(module, pb)
        self._engine = llvm.create_mcjit_compiler(module, tm)
        self._engine.finalize_object()
        self._tm = tm
        self._module = module

    def address(self, name: str) -> int:
        addr = self._engine.get_function_address(name)
        if not addr:
            raise LookupError(f"the JIT module defines no function @{name}")
        return addr

    def assembly(self) -> str:
        """The module's host assembly, for reading (e.g. checking the rotates are vprolq)."""
        return self._tm.emit_assembly(self._module)
