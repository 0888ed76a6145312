"""A content-addressed tensor store: a directory of padded big-endian tensor encodings named
by their tensor roots. Builds keep their initializers here; the VM materialises a spliced
region's pages from it (lazy loading) and the dispute parties share tensors through it."""

from __future__ import annotations

from pathlib import Path


class TensorStore:
    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)

    def _path(self, root: bytes) -> Path:
        return self.directory / f"{root.hex()}.bin"

    def put(self, padded: bytes) -> bytes:
        """Store a padded encoding (power-of-two length ≥ 32); returns its root."""
        from opmlc.commit import padded_root

        root = padded_root(padded)  # a progress bar for a large one
        path = self._path(root)
        if not path.exists():
            self.directory.mkdir(parents=True, exist_ok=True)
            path.write_bytes(padded)
        return root

    def get(self, root: bytes) -> bytes:
        try:
            return self._path(root).read_bytes()
        except FileNotFoundError:
            raise KeyError(f"tensor 0x{root.hex()} is not in the store at {self.directory}") from None

    __getitem__ = get

    def __contains__(self, root: bytes) -> bool:
        return self._path(root).exists()

    def path(self, root: bytes) -> Path:
        """Where the encoding of `root` is (or would be) stored."""
        return self._path(root)
