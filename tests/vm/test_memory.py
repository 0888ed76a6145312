"""vm.memory: roots match vm.merkle on flat copies, proofs verify, lazy splices keep the root."""

from __future__ import annotations

import random

import pytest

from vm.errors import RegionError, StoreError
from vm.memory import PAGE_SIZE, PROOF_BYTES, Memory
from vm.merkle import EMPTY_MEMORY_ROOT, ZERO_HASHES, root_from_proof, subtree_root

LOW = 1 << 16  # the tests write into [0, 64 KiB): the rest of memory is zero


def root_of_low(flat: bytes) -> bytes:
    """The memory root when only [0, len(flat)) is non-zero, from vm.merkle alone."""
    h = (len(flat) >> 5).bit_length() - 1
    return root_from_proof(subtree_root(flat), 0, list(ZERO_HASHES[h:27]))


def verify(mem_root: bytes, addr: int, proof: bytes) -> bytes:
    assert len(proof) == PROOF_BYTES
    leaf = proof[:32]
    siblings = [proof[32 * i : 32 * i + 32] for i in range(1, 28)]
    assert root_from_proof(leaf, addr >> 5, siblings) == mem_root
    return leaf


def test_empty_memory_has_the_empty_root():
    assert Memory().root() == EMPTY_MEMORY_ROOT


def test_root_equals_subtree_root_of_a_flat_copy():
    rng = random.Random(1)
    mem, flat = Memory(), bytearray(LOW)
    for _ in range(200):
        addr = rng.randrange(0, LOW - 4) & ~3
        value = rng.getrandbits(32)
        mem.write_u32(addr, value)
        flat[addr : addr + 4] = value.to_bytes(4, "big")
    assert mem.root() == root_of_low(bytes(flat))
    assert mem.read_bytes(0, LOW) == bytes(flat)


def test_incremental_rehash_equals_a_root_from_scratch():
    rng = random.Random(2)
    mem = Memory()
    for _round in range(20):
        for _ in range(rng.randrange(1, 30)):
            addr = rng.choice([rng.randrange(0, LOW), rng.getrandbits(32)])
            mem.write_bytes(addr & ~3 & 0xFFFFFFFF, rng.randbytes(4))
        fresh = Memory()
        for pi, page in mem.pages.items():
            fresh.write_bytes(pi * PAGE_SIZE, bytes(page))
        assert mem.root() == fresh.root()


def test_proofs_verify_against_the_root():
    rng = random.Random(3)
    mem = Memory()
    addrs = [rng.getrandbits(32) & ~3 for _ in range(20)] + [0, 0xFFFFFFFC, 0x7FFFF000]
    for addr in addrs:
        mem.write_u32(addr, rng.getrandbits(32))
    root = mem.root()
    for addr in addrs + [0x12345678 & ~3]:  # an untouched address proves a zero leaf
        leaf = verify(root, addr, mem.proof(addr))
        o = addr & 31
        assert int.from_bytes(leaf[o : o + 4], "big") == mem.read_u32(addr)


def test_writing_bytes_at_odd_addresses_across_pages():
    mem = Memory()
    data = bytes(range(256)) * 40
    mem.write_bytes(PAGE_SIZE - 3, data)
    assert mem.read_bytes(PAGE_SIZE - 3, len(data)) == data


def tensor(rng: random.Random, nbytes: int, size: int) -> tuple[bytes, bytes]:
    """Tensor bytes (unpadded) and its tensor root over `size` padded bytes."""
    data = rng.randbytes(nbytes)
    return data, subtree_root(data + bytes(size - nbytes))


@pytest.mark.parametrize("size", [32, 1024, PAGE_SIZE, 4 * PAGE_SIZE, 1 << 20])
def test_splice_keeps_the_root_right_before_and_after_materialisation(size):
    rng = random.Random(size)
    addr = 0x80000000 + 3 * size if size < (1 << 20) else 0xC0000000
    data, root = tensor(rng, size - size // 4, size)
    store = {root: data}

    lazy = Memory()
    lazy.write_u32(0x00400000, 0x12345678)  # some program bytes elsewhere
    eager = Memory()
    eager.write_u32(0x00400000, 0x12345678)
    eager.write_bytes(addr, data)

    lazy.splice(addr, size, root, store)
    if size >= PAGE_SIZE:
        assert not any(addr >> 12 <= pi < (addr + size) >> 12 for pi in lazy.pages)  # not fetched
    assert lazy.root() == eager.root()
    assert lazy.region_root(addr, size) == root

    word_at = addr + (rng.randrange(size) & ~3)
    assert lazy.read_u32(word_at) == eager.read_u32(word_at)  # materialises
    assert lazy.root() == eager.root()
    verify(lazy.root(), word_at, lazy.proof(word_at))

    lazy.write_u32(word_at, 0xDEADBEEF)
    eager.write_u32(word_at, 0xDEADBEEF)
    assert lazy.root() == eager.root()
    assert lazy.read_region(addr, size) == eager.read_region(addr, size)


def test_splice_replaces_what_the_region_held():
    rng = random.Random(5)
    mem = Memory()
    mem.write_bytes(0x80000000, rng.randbytes(3 * PAGE_SIZE))
    data, root = tensor(rng, 100, 4 * PAGE_SIZE)
    mem.splice(0x80000000, 4 * PAGE_SIZE, root, {root: data})
    expect = Memory()
    expect.write_bytes(0x80000000, data)
    assert mem.root() == expect.root()
    assert mem.read_bytes(0x80000000 + 2 * PAGE_SIZE, 8) == bytes(8)
    assert mem.root() == expect.root()


def test_proof_inside_a_lazy_region_is_against_the_spliced_root():
    rng = random.Random(6)
    data, root = tensor(rng, 8 * PAGE_SIZE, 8 * PAGE_SIZE)
    mem = Memory()
    mem.splice(0x90000000, 8 * PAGE_SIZE, root, {root: data})
    before = mem.root()
    verify(before, 0x90000000 + 5 * PAGE_SIZE + 12, mem.proof(0x90000000 + 5 * PAGE_SIZE + 12))
    assert mem.root() == before


def test_a_missing_or_wrong_tensor_is_a_store_error_on_first_touch():
    rng = random.Random(7)
    data, root = tensor(rng, PAGE_SIZE, PAGE_SIZE)
    mem = Memory()
    mem.splice(0x80000000, PAGE_SIZE, root, {})
    with pytest.raises(StoreError, match="not in the tensor store"):
        mem.read_u32(0x80000000)
    mem = Memory()
    mem.splice(0x80000000, PAGE_SIZE, root, {root: rng.randbytes(PAGE_SIZE)})
    with pytest.raises(StoreError, match="another root"):
        mem.read_u32(0x80000000)
    with pytest.raises(StoreError):
        Memory().splice(0x80000000, 64, root, {root: data[:64]})  # sub-page: fetched at once


@pytest.mark.parametrize("addr,size", [(0x80000010, 32), (0x80000000, 48), (0x80000000, 16)])
def test_bad_regions_are_rejected(addr, size):
    with pytest.raises(RegionError):
        Memory().splice(addr, size, bytes(32), {})


def test_copy_is_independent():
    mem = Memory()
    mem.write_u32(0x1000, 1)
    other = mem.copy()
    other.write_u32(0x1000, 2)
    assert mem.read_u32(0x1000) == 1 and other.read_u32(0x1000) == 2
    assert mem.root() != other.root()
