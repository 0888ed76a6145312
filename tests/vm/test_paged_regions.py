"""Lazy regions from a paging store (vm/memory.py): touching a word of a large spliced tensor
reads and hashes that one page, and the memory is the same (roots, words, proofs) as one that
holds every byte of the tensor; bad page bytes or page roots are StoreErrors."""

from __future__ import annotations

import random

import pytest

from vm.errors import StoreError
from vm.memory import PAGE_SIZE, Memory
from vm.merkle import chunk_roots, subtree_root

ADDR, SIZE = 0x80000000, 1 << 22  # a 4 MiB region: 2 MiB of data, then padding


class PagingStore:
    """A store that serves slices and page roots, and counts what it reads."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.root = subtree_root(data)
        self.pages = chunk_roots(data, PAGE_SIZE)
        self.reads: list[tuple[int, int]] = []

    def get(self, root: bytes) -> bytes | None:
        raise AssertionError("a paging store is never asked for a whole tensor")

    def read(self, root: bytes, offset: int, size: int) -> bytes:
        assert root == self.root
        self.reads.append((offset, size))
        return self.data[offset : offset + size]

    def page_roots(self, root: bytes) -> bytes | None:
        return self.pages if root == self.root else None


@pytest.fixture(scope="module")
def tensor() -> bytes:
    rng = random.Random(5)
    data = bytearray(rng.randbytes(SIZE // 2)) + bytes(SIZE // 2)
    data[8 * PAGE_SIZE : 10 * PAGE_SIZE] = bytes(2 * PAGE_SIZE)  # zero pages inside the data too
    return bytes(data)


def both(tensor: bytes) -> tuple[Memory, Memory, PagingStore]:
    store = PagingStore(tensor)
    lazy, full = Memory(), Memory()
    lazy.splice(ADDR, SIZE, store.root, store)
    full.write_bytes(ADDR, tensor)
    return lazy, full, store


def test_a_touched_word_reads_one_page_and_everything_agrees(tensor):
    lazy, full, store = both(tensor)
    assert lazy.root() == full.root()
    assert store.reads == []
    for addr in (ADDR + 4, ADDR + 300 * PAGE_SIZE + 8, ADDR + 9 * PAGE_SIZE, ADDR + (SIZE - 4)):
        assert lazy.read_u32(addr) == full.read_u32(addr)
        assert lazy.proof(addr + 32) == full.proof(addr + 32)
    # pages 0 and 300 only: page 9 is a zero page of the data, the last word in the padding
    assert store.reads == [(0, PAGE_SIZE), (300 * PAGE_SIZE, PAGE_SIZE)]
    lazy.write_u32(ADDR + 77 * PAGE_SIZE, 0xDEADBEEF)
    full.write_u32(ADDR + 77 * PAGE_SIZE, 0xDEADBEEF)
    assert lazy.root() == full.root()
    assert lazy.region_root(ADDR, SIZE) == full.region_root(ADDR, SIZE)
    copy = lazy.copy()
    assert copy.read_u32(ADDR + 400 * PAGE_SIZE) == full.read_u32(ADDR + 400 * PAGE_SIZE)
    assert copy.root() == full.root()
    assert len(store.reads) == 4


def test_a_whole_read_of_a_split_region_gives_its_bytes(tensor):
    lazy, full, _ = both(tensor)
    lazy.read_u32(ADDR + 5 * PAGE_SIZE)
    assert lazy.read_region(ADDR, SIZE) == tensor
    assert lazy.root() == full.root()


def test_bad_page_bytes_or_page_roots_are_store_errors(tensor):
    lazy, _, store = both(tensor)
    store.data = tensor[:PAGE_SIZE] + bytes([tensor[PAGE_SIZE] ^ 1]) + tensor[PAGE_SIZE + 1 :]
    lazy.read_u32(ADDR)  # page 0 is intact
    with pytest.raises(StoreError, match="page"):
        lazy.read_u32(ADDR + PAGE_SIZE)
    lazy, _, store = both(tensor)
    store.pages = store.pages[:32] + bytes(32) + store.pages[64:]
    with pytest.raises(StoreError, match="page roots"):
        lazy.read_u32(ADDR)
