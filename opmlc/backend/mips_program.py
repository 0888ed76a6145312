"""The MIPS build: a model module's IR in, `model.elf` bytes out.

Place in the pipeline: the codegen produces the model's module (one `task(ptr regions, i32
node)` function and its kernels); this module compiles it and the runtime (runtime/mips.py)
for MIPS with the pinned target machine (opmlc/backend/target.py) and links the two objects with our linker (opmlc/backend/link.py).

The runtime object goes first, so `_start` is at 0x00400000 in every program. The result is a
pure function of (module IR, opmlc and llvmlite versions): no paths, times, host properties or
region addresses enter it (a task's regions come with its descriptor).
"""

from __future__ import annotations

from opmlc.backend.link import link
from opmlc.backend.target import compile_mips_object
from runtime.mips import build_runtime_ir


def build_mips_elf(module_ir: str) -> bytes:
    """Compile `module_ir` for MIPS and link it with the runtime into an ELF executable.

    `_start` passes `task` the region table of the task descriptor (vm/loader.py writes it).
    Raises `opmlc.backend.link.LinkError` if the module needs a symbol or relocation
    that neither the runtime nor the linker provides.
    """
    runtime_obj = compile_mips_object(build_runtime_ir())
    model_obj = compile_mips_object(module_ir)
    return link([runtime_obj, model_obj])
