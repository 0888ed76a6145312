"""Tensor-root hashing speed in MB/s: today's pure-Python path against the native kernels.

    python bench/commit_speed.py [--mib 256] [--python-mib 16] [--threads N]

Hashes a random buffer (the root of a dense tensor of that many MiB, as `opmlc.commit
.padded_root` does) with vm.merkle's Python reference (one safe-pysha3 call per tree node; timed
on a smaller buffer, its speed does not depend on size), then natively on 1 thread and on every
core (vm/native_hash.py), checking that all give the same root on the common buffer. Prints
MB/s of tensor bytes and the ratios; the target (issue 13) is ≥ 200 MB/s per core. A
half-empty buffer (a tensor just over a power of two, padded) is timed too, for the zero
shortcut. The JIT build is timed separately: it happens once per process.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from vm import merkle, native_hash  # noqa: E402

TARGET = 200.0  # MB/s per core (issue 13)


def rate(fn, nbytes: int, repeat: int = 1) -> tuple[float, bytes]:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return nbytes / best / 1e6, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=256, help="buffer for the native path (MiB)")
    parser.add_argument("--python-mib", type=int, default=16, help="buffer for the Python path")
    parser.add_argument("--threads", type=int, default=native_hash.default_threads(),
                        help="threads of the 'all cores' run (default: every CPU)")
    args = parser.parse_args()
    size = merkle.padded_size(args.mib << 20)
    py_size = min(size, merkle.padded_size(args.python_mib << 20))

    t0 = time.perf_counter()
    kernels = native_hash.kernels()
    jit_s = time.perf_counter() - t0
    print(f"hashing path : {native_hash.backend()}")
    if kernels is None:
        sys.exit("no native kernels in this process: nothing to compare")
    print(f"JIT build    : {jit_s * 1000:.0f} ms (once per process)")
    data = os.urandom(size)

    py_rate, py_root = rate(lambda: merkle.python_subtree_root(data[:py_size]), py_size)
    assert merkle.subtree_root(data[:py_size], 1) == py_root, "native and Python roots differ"
    one_rate, root1 = rate(lambda: merkle.subtree_root(data, 1), size, repeat=2)
    all_rate, root_n = rate(lambda: merkle.subtree_root(data, args.threads), size, repeat=2)
    assert root1 == root_n
    half = data[: size // 2 + 4096] + bytes(size // 2 - 4096)
    half_rate, _ = rate(lambda: merkle.subtree_root(half, args.threads), size, repeat=2)

    print(f"Python (today, {py_size >> 20} MiB)         : {py_rate:8.1f} MB/s")
    print(f"native, 1 thread ({size >> 20} MiB)        : {one_rate:8.1f} MB/s"
          f"   x{one_rate / py_rate:.0f} Python  (target {TARGET:.0f} per core: "
          f"{'met' if one_rate >= TARGET else 'MISSED'})")
    print(f"native, {args.threads} threads ({size >> 20} MiB)       : {all_rate:8.1f} MB/s"
          f"   x{all_rate / py_rate:.0f} Python, x{all_rate / one_rate:.2f} one thread")
    print(f"native, {args.threads} threads, half zero padding : {half_rate:8.1f} MB/s")


if __name__ == "__main__":
    main()
