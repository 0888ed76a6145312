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
from vm.merkle import ZERO_LEAF, list_root, padded_size, subtree_root


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


def tensor_root(data: np.ndarray, t: TensorType) -> bytes:
    """The tensor root: the Merkle root of the padded big-endian encoding."""
    return padded_root(padded_bytes(data, t))


LARGE_TENSOR = 1 << 26  # bytes from which hashing shows a progress bar
HASH_CHUNK = 1 << 25


def padded_root(padded: bytes, chunk: int = HASH_CHUNK, large: int = LARGE_TENSOR) -> bytes:
    """subtree_root of a padded encoding; a large one is hashed chunk by chunk with a progress bar.

    The same root: the tree over the chunks' subtree roots is the upper part of the whole tree.
    Each chunk is hashed by vm.merkle's native kernels on every core where the process has them
    (vm/native_hash.py); a chunk is a few tens of milliseconds there.
    """
    if len(padded) < max(large, 2 * chunk):
        return subtree_root(padded)
    mv = memoryview(padded)
    starts = range(0, len(padded), chunk)
    tops = [subtree_root(mv[i : i + chunk])
            for i in progress.track(starts, f"hashing a {len(padded) >> 20} MiB tensor")]
    return subtree_root(b"".join(tops))


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
