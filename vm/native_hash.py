"""Native keccak256 for the Merkle trees: the JIT-compiled kernels of vm/keccak_ir.py, via ctypes.

Place: vm/merkle.py asks `kernels()` once per process and, when it gets them, hands every
batch of 64-byte blocks (a tree level, whole subtrees) to native code instead of hashing node by
node in Python; the pure-Python path in vm/merkle.py stays the reference and the fallback.

Chosen once per process: native unless $OPMLC_PURE_PYTHON_HASH is set (tests, debugging), or
the JIT cannot be built here, or the built kernel fails a known-answer check (never a wrong
root). The vector width follows the host's features: 8 blocks per <8 x i64> with AVX-512, 4
with AVX2, 2 with SSE2 or NEON, else plain scalar code.

Threads: ctypes releases the GIL during a foreign call, so a large buffer is cut into parts of
whole chunks that a thread pool hashes concurrently (each worker with its own scratch); the
`threads` knob defaults to $OPMLC_HASH_THREADS, else the CPUs this process may run on.
"""

from __future__ import annotations

import ctypes
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from functools import cache

ENV_PURE_PYTHON = "OPMLC_PURE_PYTHON_HASH"
ENV_THREADS = "OPMLC_HASH_THREADS"

PART_BYTES = 1 << 22  # work item of the thread pool: small enough to balance zero padding

_BLOCKS = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_uint64)
_CHUNKS = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_uint64, ctypes.c_uint64,
                           ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p)

# keccak256 of 64 bytes 0, 1, ..., 63: checked against the built kernel before it is used.
_KNOWN_INPUT = bytes(range(64))


def default_threads() -> int:
    env = os.environ.get(ENV_THREADS)
    if env:
        return max(1, int(env))
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def vector_width(features: dict[str, bool]) -> int:
    """Blocks per vector for a host with these LLVM feature flags."""
    if features.get("avx512f"):
        return 8
    if features.get("avx2"):
        return 4
    if features.get("sse2") or features.get("neon"):
        return 2
    return 1


def _address(buf) -> tuple[int, object]:
    """The address of any contiguous buffer (read-only too) and an object keeping it alive."""
    import numpy as np  # only to read a buffer's address; numpy is a dependency anyway

    arr = np.frombuffer(buf, dtype=np.uint8)
    return arr.ctypes.data, arr


class Kernels:
    """The compiled module and typed entry points; one per process (see `kernels()`)."""

    def __init__(self, width: int | None = None, big_endian: bool | None = None) -> None:
        from vm import jit, keccak_ir

        self.width = vector_width(jit.host_features()) if width is None else width
        self._module = jit.JitModule(keccak_ir.module_ir(self.width, big_endian))
        self._blocks = _BLOCKS(self._module.address("keccak_blocks"))
        self._chunks = _CHUNKS(self._module.address("chunk_roots"))
        self._local = threading.local()
        self._pools: dict[int, ThreadPoolExecutor] = {}
        self._lock = threading.Lock()
        self.description = f"native keccak, {self.width} block(s) per vector, {jit.host_description()}"

    def keccak_blocks(self, data) -> bytes:
        """keccak256 of each consecutive 64-byte block of `data`, digests concatenated."""
        n = len(memoryview(data).cast("B"))
        if n % 64:
            raise ValueError(f"blocks of 64 bytes, not {n} bytes")
        src, keep = _address(data)
        out = ctypes.create_string_buffer(n // 2)
        self._blocks(src, ctypes.addressof(out), n // 64)
        del keep
        return out.raw

    def _scratch(self, size: int) -> ctypes.Array:
        s = getattr(self._local, "scratch", None)
        if s is None or len(s) < size:
            s = ctypes.create_string_buffer(size)
            self._local.scratch = s
        return s

    def forget_pools(self) -> None:
        """After a fork: the parent's worker threads do not exist in the child."""
        self._pools = {}
        self._lock = threading.Lock()

    def _pool(self, threads: int) -> ThreadPoolExecutor:
        with self._lock:
            pool = self._pools.get(threads)
            if pool is None:
                pool = ThreadPoolExecutor(threads, thread_name_prefix="opmlc-keccak")
                self._pools[threads] = pool
            return pool

    def chunk_roots(self, data, chunk: int, zero_root: bytes, threads: int | None = None) -> bytes:
        """Roots of the consecutive `chunk`-byte subtrees of `data` (chunk a power of two ≥ 64),
        all-zero ones given `zero_root`; their 32-byte roots concatenated."""
        n = len(memoryview(data).cast("B"))
        if chunk < 64 or chunk & (chunk - 1) or n % chunk:
            raise ValueError(f"{n} bytes do not split into subtrees of {chunk} bytes")
        if len(zero_root) != 32:
            raise ValueError("a zero root has 32 bytes")
        nchunks = n // chunk
        src, keep = _address(data)
        out = ctypes.create_string_buffer(32 * nchunks)
        base = ctypes.addressof(out)
        zr = ctypes.create_string_buffer(zero_root, 32)

        def work(first: int, count: int) -> None:
            scratch = self._scratch(chunk // 2)
            self._chunks(src + first * chunk, count, chunk, base + 32 * first,
                         ctypes.addressof(scratch), ctypes.addressof(zr))

        threads = default_threads() if threads is None else max(1, int(threads))
        per_part = max(1, PART_BYTES // chunk)
        if threads == 1 or nchunks <= per_part:
            work(0, nchunks)
        else:
            pool = self._pool(threads)
            futures = [pool.submit(work, i, min(per_part, nchunks - i))
                       for i in range(0, nchunks, per_part)]
            for f in futures:
                f.result()
        del keep
        return out.raw

    def check(self) -> bool:
        from vm.merkle import python_keccak256

        want = python_keccak256(_KNOWN_INPUT)
        blocks = _KNOWN_INPUT * 11  # a full vector group and a remainder, for any width ≤ 8
        return self.keccak_blocks(blocks) == want * 11


_build_lock = threading.Lock()


def kernels() -> Kernels | None:
    """The native kernels, or None where the pure-Python path must be used (see the module doc)."""
    with _build_lock:  # two threads hashing at once build it once
        return _kernels()


@cache
def _kernels() -> Kernels | None:
    if os.environ.get(ENV_PURE_PYTHON, "").strip() not in ("", "0"):
        return None
    try:
        k = Kernels()
    except Exception:  # no usable JIT on this host: the Python path gives the same roots
        return None
    if not k.check():
        return None
    if hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=k.forget_pools)
    return k


def backend() -> str:
    """Which path hashes in this process, in words."""
    k = kernels()
    return k.description if k is not None else "pure Python (safe-pysha3, one call per node)"
