"""Tensor commitments and the graph trace (DESIGN "Commitments").

A tensor is serialised big-endian in row-major order, zero-padded to its region size 2^k
(k ≥ 5), and hashed with the memory tree's rules (vm.merkle), so that its root is the memory
subtree root of its region. The graph trace state after i nodes is the list root over every
value's root, with not-yet-computed node outputs as zero leaves.
"""

from __future__ import annotations

import numpy as np

from opmlc import progress
from opmlc.ir.graph import Graph
from opmlc.ir.types import TensorType, decode, encode
from vm.merkle import ZERO_LEAF, chunk_roots, list_root, padded_size, subtree_root


def tensor_bytes(data: np.ndarray, t: TensorType) -> bytes:
    """The tensor's committed encoding, unpadded: big-endian elements in row-major order (an i4
    tensor packed two elements per byte, ir/types.py)."""
    return encode(data, t)


def region_size(t: TensorType) -> int:
    """Bytes of the tensor's memory region: its size padded to a power of two ≥ 32."""
    return padded_size(t.nbytes)


def padded_bytes(data: np.ndarray, t: TensorType) -> bytes:
    raw = tensor_bytes(data, t)
    return raw + bytes(region_size(t) - len(raw))


def padded_buffer(data: np.ndarray, t: TensorType) -> bytearray:
    """padded_bytes's bytes, encoded straight into one buffer: a large weight is copied once.
    (An encoding that is not one big-endian element per element goes through tensor_bytes.)"""
    arr = np.asarray(data)
    be = np.dtype(t.dtype.big_endian)
    buf = bytearray(region_size(t))
    # one big-endian element per element (not i4's packed pairs): two elements take two items
    plain = TensorType(t.dtype, (2,), t.frac).nbytes == 2 * be.itemsize
    if plain and arr.shape == t.shape:
        np.frombuffer(buf, dtype=be, count=arr.size).reshape(t.shape)[...] = arr
    else:
        raw = tensor_bytes(arr, t)
        buf[: len(raw)] = raw
    return buf


def tensor_root(data: np.ndarray, t: TensorType) -> bytes:
    """The tensor root: the Merkle root of the padded big-endian encoding."""
    return padded_root(padded_bytes(data, t))


LARGE_TENSOR = 1 << 26  # bytes from which hashing shows a progress bar
HASH_CHUNK = 1 << 25
PAGE = 4096  # the VM's page (vm/memory.py)
PAGED_TENSOR = 1 << 20  # bytes from which the store keeps a tensor's page roots


def paged_root(padded: bytes | memoryview, chunk: int = HASH_CHUNK,
               large: int = LARGE_TENSOR) -> tuple[bytes, bytes | None]:
    """The root of a padded encoding and, for one of PAGED_TENSOR bytes or more, the roots of
    its 4 KiB pages (concatenated), from which the VM materialises one page at a time.

    The same root as subtree_root: the tree over the page roots is the upper part of the whole
    tree. A large encoding is hashed chunk by chunk under a progress bar, each chunk by
    vm.merkle's native kernels on every core where the process has them (vm/native_hash.py).
    """
    if len(padded) < PAGED_TENSOR:
        return subtree_root(padded), None
    mv = memoryview(padded).cast("B")
    starts = range(0, len(mv), chunk)
    if len(mv) >= max(large, 2 * chunk):
        starts = progress.track(starts, f"hashing a {len(mv) >> 20} MiB tensor")
    pages = b"".join(chunk_roots(mv[i : i + chunk], PAGE) for i in starts)
    return subtree_root(pages), pages


def padded_root(padded: bytes | memoryview, chunk: int = HASH_CHUNK, large: int = LARGE_TENSOR) -> bytes:
    """subtree_root of a padded encoding (a large one chunk by chunk, with a progress bar)."""
    return paged_root(padded, chunk, large)[0]


def from_bytes(raw: bytes, t: TensorType) -> np.ndarray:
    """Decode a region's (or tensor's) big-endian bytes back into a native array."""
    return decode(raw, t)


def value_roots(graph: Graph, values: list[np.ndarray | None]) -> list[bytes]:
    """The root of every value that is known (None → a zero leaf, as in the graph trace)."""
    return [
        ZERO_LEAF if arr is None else tensor_root(arr, v.type)
        for v, arr in zip(graph.values, values, strict=True)
    ]


def trace_state(graph: Graph, roots: list[bytes], nodes_done: int) -> bytes:
    """Graph trace state after `nodes_done` nodes, from the full list of value roots."""
    cut = graph.first_node_value + nodes_done
    return list_root(roots[:cut] + [ZERO_LEAF] * (len(roots) - cut))
