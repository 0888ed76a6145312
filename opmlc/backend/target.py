"""The two machines one opmlc module is compiled for, and how it gets there.

Place in the pipeline: the codegen (opmlc/backend/codegen.py) produces one target-independent
LLVM IR module as text. This module turns that text into

- a MIPS32 big-endian relocatable object (`compile_mips_object`), which
  `opmlc/backend/mips_program.py` links with `runtime/` into `model.elf`;
- native code for the machine we run on (`load_native` / `NativeProgram`), called through ctypes.

Both go through the same steps: parse, set the target's triple and data layout, run LLVM's
default `O<OPT_LEVEL>` pipeline (new pass manager) with the same tuning options, then code
generation. The only differences are the target machine (hence TargetTransformInfo and the data
layout). The IR obeys docs/DESIGN.md "Determinism rules", so whatever each target's optimizer
does, the integer results are the same bits.

Why O2 for both: O3 only adds more aggressive unrolling and vectorisation heuristics. On MIPS32
(no vector unit) it changed nothing measurable on the dense kernels of tests/backend (37x5,
784x64: same image, same step count; 512x10: 0.2 % fewer steps for a 60 % larger .text), and
every byte of the image is part of the program root, so the smaller, better-trodden O2 wins. The
host gets its vectorisers at O2 too (the new pass manager runs the loop and SLP vectorisers at
O2), which is where native speed comes from. With O2, an i64 multiply-accumulate over int32
operands costs about 10 MIPS instructions per element (mult/madd, loads, address updates).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import tempfile
from collections.abc import Sequence
from functools import cache
from pathlib import Path

import llvmlite
import llvmlite.binding as llvm

MIPS_TRIPLE = "mips-unknown-linux-gnu"
MIPS_CPU = "mips32"
MIPS_FEATURES = "+soft-float,+noabicalls"

# Fixed forever for a given opmlc version: the MIPS image, hence the program root, depends on it.
OPT_LEVEL = 2

# Bump when anything that changes generated code changes without the IR text changing
# (options below, the pipeline): it is part of every cache key.
PIPELINE_VERSION = 1

# LLVM's MIPS backend can put small globals in .sdata/.sbss and address them relative to $gp
# (R_MIPS_GPREL16). Nothing sets $gp in our programs (the VM starts with every register but $sp
# at zero) and our linker does not implement GP-relative relocations, so pin the option off
# even though it is LLVM 22's default (checked: `-mgpopt` gives .sdata and GPREL16) and make the
# small-data threshold zero as a second guard. Both options exist only in the MIPS backend: they
# cannot change host code.
_MIPS_LLVM_OPTIONS = ("-mgpopt=false", "-mips-ssection-threshold=0")


@cache
def _init_llvm() -> None:
    llvm.initialize_all_targets()
    llvm.initialize_all_asmprinters()
    for opt in _MIPS_LLVM_OPTIONS:
        llvm.set_option("opmlc", opt)


@cache
def mips_target_machine() -> llvm.TargetMachine:
    """The pinned MIPS32 big-endian target machine (docs/DESIGN.md "The MIPS program")."""
    _init_llvm()
    target = llvm.Target.from_triple(MIPS_TRIPLE)
    return target.create_target_machine(
        cpu=MIPS_CPU,
        features=MIPS_FEATURES,
        opt=OPT_LEVEL,
        reloc="static",
        codemodel="default",
    )


def host_target_machine() -> llvm.TargetMachine:
    """A new target machine for the machine we run on, with all its CPU features.

    Vector code gives the same integers, so the host may use every feature it has. Not cached:
    an MCJIT engine takes ownership of its target machine and frees it with itself, so every
    NativeProgram needs its own (sharing one is a use-after-free once a program is collected).
    """
    _init_llvm()
    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()
    llvm.initialize_native_asmparser()  # host kernels' inline assembly (kernels/native/nonlinear.py)
    target = llvm.Target.from_triple(llvm.get_process_triple())
    return target.create_target_machine(
        cpu=llvm.get_host_cpu_name(),
        features=llvm.get_host_cpu_features().flatten(),
        opt=OPT_LEVEL,
        reloc="default",
        codemodel="jitdefault",
        jit=True,
    )


@cache
def host_description() -> str:
    """What native code compiled here depends on: CPU name and features, triple, data layout.

    Part of every native cache key, and recorded next to a build's native object, which is used
    only on a host with the same description (opmlc/backend/native_build.py)."""
    tm = host_target_machine()
    return f"{llvm.get_host_cpu_name()}|{llvm.get_host_cpu_features().flatten()}|{_describe(tm)}"




def _describe(tm: llvm.TargetMachine) -> str:
    return f"{tm.triple}|{tm.target_data}"


def parse_for_target(module_ir: str, tm: llvm.TargetMachine) -> llvm.ModuleRef:
    """Parse IR text and retarget it: the codegen's text names no triple or data layout."""
    _init_llvm()
    module = llvm.parse_assembly(module_ir)
    module.triple = tm.triple
    module.data_layout = str(tm.target_data)
    module.verify()
    return module


def optimize(module: llvm.ModuleRef, tm: llvm.TargetMachine) -> None:
    """Run LLVM's default pipeline at OPT_LEVEL in place; the same options for every target."""
    pto = llvm.create_pipeline_tuning_options(speed_level=OPT_LEVEL)
    pto.loop_vectorization = True
    pto.slp_vectorization = True
    pto.loop_unrolling = True
    pb = llvm.create_pass_builder(tm, pto)
    mpm = pb.getModulePassManager()
    mpm.run(module, pb)


def cache_key(module_ir: str, target: str) -> str:
    """The hash under which compiled code for `module_ir` on `target` is cached."""
    h = hashlib.sha256()
    for part in (
        f"opmlc-pipeline-{PIPELINE_VERSION}",
        f"llvmlite-{llvmlite.__version__}",
        f"O{OPT_LEVEL}",
        target,
        module_ir,
    ):
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()


# In-process cache only: the MIPS object is linked into model.elf, which the compile command
# writes to the build directory, so nothing re-reads a MIPS object across processes.
_mips_objects: dict[str, bytes] = {}


def compile_mips_object(module_ir: str) -> bytes:
    """Compile IR text to a MIPS32 big-endian ELF relocatable object (REL relocations)."""
    tm = mips_target_machine()
    key = cache_key(module_ir, f"{MIPS_TRIPLE}|{MIPS_CPU}|{MIPS_FEATURES}|{_describe(tm)}")
    obj = _mips_objects.get(key)
    if obj is None:
        module = parse_for_target(module_ir, tm)
        optimize(module, tm)
        obj = tm.emit_object(module)
        _mips_objects[key] = obj
    return obj


def mips_assembly(module_ir: str) -> str:
    """The optimized MIPS assembly listing of `module_ir`, for reading and debugging only."""
    tm = mips_target_machine()
    module = parse_for_target(module_ir, tm)
    optimize(module, tm)
    return tm.emit_assembly(module)


def default_cache_dir() -> Path:
    """Where native objects are cached: $OPMLC_CACHE_DIR, else the XDG cache directory."""
    env = os.environ.get("OPMLC_CACHE_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "opmlc" / "native"


def emit_host_object(module_ir: str) -> bytes:
    """Compile IR text for this host ahead of time: the relocatable object that
    `NativeProgram.from_object` loads without running the optimizer or code generation."""
    tm = host_target_machine()
    module = parse_for_target(module_ir, tm)
    _check_has_task(module)
    optimize(module, tm)
    return tm.emit_object(module)


def _check_has_task(module: llvm.ModuleRef) -> None:
    if not any(f.name == TASK_FUNCTION and not f.is_declaration for f in module.functions):
        raise ValueError(f"module has no function @{TASK_FUNCTION}")


TASK_FUNCTION = "task"
SATURATION_MARKER = "opmlc.counts_saturation"  # opmlc.backend.codegen defines it
_TASK_CTYPE = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_uint32)
# The host module's entry points for threads (codegen.TASK_SPAN / TASK_PART); ctypes releases
# the GIL during each call, so parts called from Python threads run at once.
TASK_SPAN_FUNCTION, TASK_PART_FUNCTION = "task_span", "task_part"
_SPAN_CTYPE = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_uint32, ctypes.c_uint32)
_PART_CTYPE = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_uint32, ctypes.c_uint32, ctypes.c_uint32)
# The team's entry points (backend/team.py; x86-64 Linux host modules)
TASK_TEAM_WORKER, TASK_TEAM_LEAD, TASK_TEAM_STOP = "task_team_worker", "task_team_lead", "task_team_stop"
_WORKER_CTYPE = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_uint32)
_LEAD_CTYPE = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_uint32, ctypes.c_uint32,
                               ctypes.c_uint32)
_STOP_CTYPE = ctypes.CFUNCTYPE(None, ctypes.c_void_p)
# The host module's edge functions (opmlc/backend/edge.py emits them under these names): an
# input quantized or narrowed into its buffer by one call; absent from an object written before.
QUANTIZE_F32, QUANTIZE_F64, NARROW_I64 = "opmlc.quantize_f32", "opmlc.quantize_f64", "opmlc.narrow_i64"
_QUANTIZE_CTYPE = ctypes.CFUNCTYPE(ctypes.c_int64, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64)
_NARROW_CTYPE = ctypes.CFUNCTYPE(ctypes.c_int64, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64)


class NativeProgram:
    """A module compiled for the host by MCJIT, exposing `task(regions, node)` via ctypes.

    The compiled object is cached on disk under its `cache_key` (MCJIT's object cache), so a second
    process running the same model skips the optimizer and code generation entirely.
    `from_object` loads an object compiled ahead of time (a build's native/ directory) without
    the IR at all.
    """

    from_object_file = False  # set by from_object

    def __init__(self, module_ir: str, cache_dir: Path | None = None) -> None:
        tm = host_target_machine()
        self.key = cache_key(module_ir, host_description())
        self._cache_path: Path | None = None
        if cache_dir is not None:
            self._cache_path = Path(cache_dir) / f"{self.key}.o"
        cached = self._read_cache()
        self.from_cache = cached is not None
        module = parse_for_target(module_ir, tm)
        _check_has_task(module)
        if cached is None:
            optimize(module, tm)
        self._engine = llvm.create_mcjit_compiler(module, tm)
        self._engine.set_object_cache(
            notify_func=lambda _m, buf: self._write_cache(buf),
            getbuffer_func=lambda _m: cached,
        )
        self._engine.finalize_object()
        self._bind()

    @classmethod
    def from_object(cls, obj: bytes, key: str) -> NativeProgram:
        """Load an object from `emit_host_object` (compiled on a host of the same description:
        the caller checks that; LLVM does not). No IR is parsed, optimized or compiled."""
        self = cls.__new__(cls)
        self.key, self._cache_path, self.from_cache, self.from_object_file = key, None, True, True
        tm = host_target_machine()
        empty = llvm.parse_assembly("")
        empty.triple = tm.triple
        empty.data_layout = str(tm.target_data)
        self._engine = llvm.create_mcjit_compiler(empty, tm)
        self._engine.add_object_file(llvm.ObjectFileRef.from_data(obj))
        self._engine.finalize_object()
        self._bind()
        return self

    def _bind(self) -> None:
        address = self._engine.get_function_address(TASK_FUNCTION)
        if not address:
            raise ValueError(f"native code has no function @{TASK_FUNCTION}")
        self._task = _TASK_CTYPE(address)
        span = self._engine.get_function_address(TASK_SPAN_FUNCTION)
        part = self._engine.get_function_address(TASK_PART_FUNCTION)
        # both or neither (a host module has both; the MIPS module's text run natively has none)
        self.task_span = _SPAN_CTYPE(span) if span and part else None
        self.task_part = _PART_CTYPE(part) if span and part else None
        team = [self._engine.get_function_address(name) for name in (TASK_TEAM_WORKER, TASK_TEAM_LEAD, TASK_TEAM_STOP)]
        # all three, or none (the session then hands each split node's parts to its thread pool)
        self.task_team_worker, self.task_team_lead, self.task_team_stop = (
            (_WORKER_CTYPE(team[0]), _LEAD_CTYPE(team[1]), _STOP_CTYPE(team[2]))
            if self.task_part is not None and all(team) else (None, None, None))
        # the edge functions, each None when the module has none (the MIPS text, an older object)
        self.quantize_f32, self.quantize_f64, self.narrow_i64 = (
            ctype(address) if (address := self._engine.get_function_address(name)) else None
            for name, ctype in ((QUANTIZE_F32, _QUANTIZE_CTYPE), (QUANTIZE_F64, _QUANTIZE_CTYPE),
                                (NARROW_I64, _NARROW_CTYPE)))
        # built with saturation counters (codegen.SATURATION_MARKER, an i32 holding the number
        # of nodes): the region table then carries one more pointer, to an i64 count per node
        self.saturation_nodes: int | None = None
        marker = self._engine.get_global_value_address(SATURATION_MARKER)
        if marker:
            self.saturation_nodes = ctypes.c_int32.from_address(marker).value

    @property
    def counts_saturation(self) -> bool:
        """Whether the program counts saturated elements (its table takes a counts array)."""
        return self.saturation_nodes is not None

    def _read_cache(self) -> bytes | None:
        if self._cache_path is None or not self._cache_path.is_file():
            return None
        return self._cache_path.read_bytes()

    def _write_cache(self, obj: bytes) -> None:
        if self._cache_path is None:
            return
        # Write then rename, so a concurrent reader sees a whole object or none.
        self._cache_path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self._cache_path.parent, suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            f.write(obj)
        os.replace(tmp, self._cache_path)

    def task(self, regions: ctypes.Array | int, node: int) -> None:
        """Run `task(regions, node)`: `regions` is a ctypes array of pointers, or its address."""
        if not isinstance(regions, int):
            regions = ctypes.addressof(regions)
        self._task(regions, node & 0xFFFFFFFF)

    def run(self, buffers: Sequence[object], node: int = 0xFFFFFFFF) -> list[int] | None:
        """Run a task on writable buffers (numpy arrays, bytearrays), one per value, in place.

        Returns the saturated elements per node if the program counts them, else None."""
        counts = None
        if self.saturation_nodes is not None:
            counts = (ctypes.c_int64 * max(1, self.saturation_nodes))()
            buffers = [*buffers, counts]
        table = region_table(buffers)
        self.task(table, node)
        return None if counts is None else list(counts)[: self.saturation_nodes]


def buffer_address(buf: object) -> int:
    """The address of a writable, C-contiguous buffer (numpy array, bytearray, ctypes array)."""
    iface = getattr(buf, "__array_interface__", None)
    if iface is not None:
        return int(iface["data"][0])
    c = (ctypes.c_char * len(memoryview(buf).cast("B"))).from_buffer(buf)
    return ctypes.addressof(c)


def region_table(buffers: Sequence[object]) -> ctypes.Array:
    """A ctypes array of pointers to `buffers`, the native twin of runtime's region table.

    The caller keeps `buffers` alive for as long as the table is used.
    """
    table = (ctypes.c_void_p * max(1, len(buffers)))()
    for i, buf in enumerate(buffers):
        table[i] = buffer_address(buf)
    return table


_native_programs: dict[str, NativeProgram] = {}


def load_native(module_ir: str, cache_dir: Path | None | str = "default") -> NativeProgram:
    """The NativeProgram for `module_ir`, compiled at most once per process (and per cache dir).

    `cache_dir="default"` uses `default_cache_dir()`; None disables the on-disk cache.
    """
    if cache_dir == "default":
        cache_dir = default_cache_dir()
    resolved = None if cache_dir is None else Path(cache_dir)
    key = cache_key(module_ir, host_description())
    prog = _native_programs.get(key)
    if prog is None:
        prog = NativeProgram(module_ir, cache_dir=resolved)
        _native_programs[key] = prog
    return prog
