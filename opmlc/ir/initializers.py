"""A loaded build's initializers: some held as their packed bytes, unpacked only when read.

Place in the pipeline: `buildcheck.load_initializers` (called by `Build.load`) makes the graph's
`initializers` one of these; the interpreter and everything else read it as the usual mapping of
value id → the interpreter's array; the native session (opmlc/backend/native.py) takes an i4
weight's packed bytes as they are held (`held`), so that a native run never unpacks it.

An i4 weight is held as `PackedI4`: its packed bytes (a read-only map of the tensor store's file,
docs/DESIGN.md "The native build ahead of time"), which are both its committed encoding and its
native buffer. Reading it (`inits[v]`) unpacks it (one int8 per element, `ir.types.unpack_i4`,
the interpreter's one definition of the layout). The unpacked arrays are cached weakly: while a
caller holds one (e.g. an interpreter run's value list), reading the entry again gives the same
array, so identity checks against the build's own weights (dispute/graph_trace.py, tasks.py)
hold; once nobody holds it, its memory is freed — a native run's process never keeps a second,
twice as large copy of the 4-bit weights.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from math import prod

import numpy as np

from opmlc.ir.types import unpack_i4


@dataclass(frozen=True, eq=False)
class PackedI4:
    """An i4 tensor held as its packed bytes; `shape` and `dtype` are those of its unpacked
    array (what Graph.verify checks), `packed` the ceil(numel / 2) bytes."""

    packed: np.ndarray  # uint8, C-contiguous
    shape: tuple[int, ...]
    dtype = np.dtype(np.int8)

    def unpack(self) -> np.ndarray:
        arr = unpack_i4(self.packed, prod(self.shape)).reshape(self.shape)
        arr.flags.writeable = False  # as a mapped weight: no caller may change the build's weights
        return arr


class Initializers(Mapping):
    """Value id → the interpreter's array, in value order; PackedI4 entries unpacked on access."""

    def __init__(self, entries: dict[int, np.ndarray | PackedI4]) -> None:
        self._entries = entries
        self._unpacked: weakref.WeakValueDictionary[int, np.ndarray] = weakref.WeakValueDictionary()

    def __getitem__(self, v: int) -> np.ndarray:
        e = self._entries[v]
        if not isinstance(e, PackedI4):
            return e
        arr = self._unpacked.get(v)
        if arr is None:
            arr = e.unpack()
            self._unpacked[v] = arr
        return arr

    def __contains__(self, v: object) -> bool:  # Mapping's would read (unpack) the entry
        return v in self._entries

    def __iter__(self) -> Iterator[int]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def held(self, v: int) -> np.ndarray | PackedI4:
        """The entry as held: an array, or a PackedI4 (not unpacked)."""
        return self._entries[v]


def held(inits: Mapping[int, np.ndarray], v: int) -> np.ndarray | PackedI4:
    """`inits[v]` as held, without unpacking (any mapping; a plain dict holds arrays)."""
    return inits.held(v) if isinstance(inits, Initializers) else inits[v]
