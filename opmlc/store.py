"""A content-addressed tensor store: a directory of padded big-endian tensor encodings named
by their tensor roots. Builds keep their initializers here; the VM materialises a spliced
region's pages from it (lazy loading) and the dispute parties share tensors through it.

    DIR/<root hex>.bin     the padded encoding
    DIR/<root hex>.pages   for an encoding of 1 MiB or more: the roots of its 4 KiB pages

Files are read through memory maps, so serving one page of a multi-gigabyte tensor
(`read`, `page_roots`: the vm.memory.TensorStore protocol's paging) reads that page, and
`view` hands out the whole encoding without copying it.
"""

from __future__ import annotations

import mmap
import os
from pathlib import Path


class TensorStore:
    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)

    def _path(self, root: bytes, suffix: str = ".bin") -> Path:
        return self.directory / f"{root.hex()}{suffix}"

    def put(self, padded: bytes | memoryview) -> bytes:
        """Store a padded encoding (power-of-two length ≥ 32); returns its root."""
        from opmlc.commit import paged_root

        root, pages = paged_root(padded)  # a progress bar for a large one
        path = self._path(root)
        if not path.exists():
            self.directory.mkdir(parents=True, exist_ok=True)
            path.write_bytes(padded)
        # a page-roots file already there is compared, not trusted: the build's check-once record
        # (buildcheck.VerifiedFiles) remembers it as written by this compile
        if pages is not None and self.page_roots(root) != pages:
            self._path(root, ".pages").write_bytes(pages)
        return root

    def get(self, root: bytes) -> bytes:
        try:
            return self._path(root).read_bytes()
        except FileNotFoundError:
            raise KeyError(f"tensor 0x{root.hex()} is not in the store at {self.directory}") from None

    __getitem__ = get

    def view(self, root: bytes) -> memoryview:
        """The stored encoding, memory-mapped read-only (nothing is read until it is used)."""
        try:
            with open(self._path(root), "rb") as f:
                if os.fstat(f.fileno()).st_size == 0:
                    return memoryview(b"")
                return memoryview(mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ))
        except FileNotFoundError:
            raise KeyError(f"tensor 0x{root.hex()} is not in the store at {self.directory}") from None

    def read(self, root: bytes, offset: int, size: int) -> bytes:
        """`size` bytes of the stored encoding from `offset` (fewer past its end)."""
        try:
            with open(self._path(root), "rb") as f:
                return os.pread(f.fileno(), size, offset)
        except FileNotFoundError:
            raise KeyError(f"tensor 0x{root.hex()} is not in the store at {self.directory}") from None

    def page_roots(self, root: bytes) -> bytes | None:
        """The roots of the encoding's 4 KiB pages, if the store keeps them (large tensors)."""
        try:
            return self._path(root, ".pages").read_bytes()
        except FileNotFoundError:
            return None

    def __contains__(self, root: bytes) -> bool:
        return self._path(root).exists()

    def path(self, root: bytes) -> Path:
        """Where the encoding of `root` is (or would be) stored."""
        return self._path(root)

    def pages_path(self, root: bytes) -> Path:
        """Where the roots of its pages are (or would be) stored (encodings of PAGED_TENSOR bytes
        or more)."""
        return self._path(root, ".pages")
