"""MemoryProof.sol against vm.merkle / vm.memory: reading, writing and splicing agree with the
Python tree, and a proof that was tampered with reverts with a named error."""

from __future__ import annotations

import random

import pytest
from sol_assert import assert_reverts_with
from web3.contract import Contract

from vm.memory import Memory
from vm.merkle import MEMORY_DEPTH, ZERO_HASHES, keccak256, subtree_root

ADDRESSES = (0x0, 0x4, 0x1C, 0x00400000, 0x30000000, 0x7FFFEFFC, 0x80000000, 0xFFFFFFFC)


def sparse_node(leaves: dict[int, bytes], height: int, index: int) -> bytes:
    """Node (height, index) of the tree whose only non-zero leaves are `leaves`."""
    lo, hi = index << height, (index + 1) << height
    if not any(lo <= k < hi for k in leaves):
        return ZERO_HASHES[height]
    if height == 0:
        return leaves[index]
    return keccak256(
        sparse_node(leaves, height - 1, 2 * index) + sparse_node(leaves, height - 1, 2 * index + 1)
    )


def subtree_siblings(leaves: dict[int, bytes], addr: int, height: int) -> bytes:
    """The 27 − height siblings, bottom up, of the region of that height at `addr`."""
    index = addr >> (5 + height)
    return b"".join(
        sparse_node(leaves, h, (index >> (h - height)) ^ 1) for h in range(height, MEMORY_DEPTH)
    )


def memory_with_words(rng: random.Random, count: int = 12) -> Memory:
    mem = Memory()
    for addr in ADDRESSES:
        mem.write_u32(addr, rng.getrandbits(32))
    for _ in range(count):
        mem.write_u32(rng.getrandbits(32) & ~3, rng.getrandbits(32))
    return mem


def test_read_word_returns_the_proved_word(harness: Contract) -> None:
    rng = random.Random(1)
    mem = memory_with_words(rng)
    root = mem.root()
    for addr in ADDRESSES + tuple(rng.getrandbits(32) & ~3 for _ in range(8)):
        got = harness.functions.readWord(root, addr, mem.proof(addr)).call()
        assert got == mem.read_u32(addr), hex(addr)


def test_write_word_gives_the_root_after_the_write(harness: Contract) -> None:
    rng = random.Random(2)
    mem = memory_with_words(rng)
    for addr in ADDRESSES:
        root, proof = mem.root(), mem.proof(addr)
        value = rng.getrandbits(32)
        got = harness.functions.writeWord(root, addr, value, proof).call()
        mem.write_u32(addr, value)
        assert got == mem.root(), hex(addr)


def test_tampered_leaf_or_sibling_reverts(harness: Contract) -> None:
    rng = random.Random(3)
    mem = memory_with_words(rng)
    root = mem.root()
    addr = 0x00400000
    proof = bytearray(mem.proof(addr))
    for where in (0, 31, 32, 32 * 14 + 5, len(proof) - 1):  # leaf, siblings low and high
        bad = bytearray(proof)
        bad[where] ^= 0x01
        for fn in (
            harness.functions.readWord(root, addr, bytes(bad)),
            harness.functions.writeWord(root, addr, 7, bytes(bad)),
        ):
            assert_reverts_with("InvalidMemoryProof", fn)
    wrong_root = bytes([root[0] ^ 1]) + root[1:]
    assert_reverts_with(
        "InvalidMemoryProof",
        harness.functions.readWord(wrong_root, addr, bytes(proof)),
    )


def test_proof_of_another_address_reverts(harness: Contract) -> None:
    mem = memory_with_words(random.Random(4))
    root = mem.root()
    proof = mem.proof(0x80000000)
    assert_reverts_with("InvalidMemoryProof", harness.functions.readWord(root, 0x80000020, proof))


def test_bad_proof_length_and_misaligned_address_revert(harness: Contract) -> None:
    mem = memory_with_words(random.Random(5))
    root, proof = mem.root(), mem.proof(0x40)
    for bad in (proof[:-32], proof + bytes(32), b""):
        revert = assert_reverts_with(
            "InvalidProofLength", harness.functions.readWord(root, 0x40, bad)
        )
        assert revert.error_args == (len(bad), 896)
    for addr in (0x41, 0x42, 0x43, 1 << 32):
        assert_reverts_with("MisalignedAddress", harness.functions.readWord(root, addr, proof))


def test_zero_hash_matches_vm_merkle(harness: Contract) -> None:
    for h in range(MEMORY_DEPTH + 1):
        assert harness.functions.zeroHash(h).call() == ZERO_HASHES[h]
    assert_reverts_with("InvalidSubtreeHeight", harness.functions.zeroHash(MEMORY_DEPTH + 1))


def leaves_of(words: dict[int, int]) -> dict[int, bytes]:
    """Leaf index → leaf bytes of a memory holding `words` (address → u32)."""
    leaves: dict[int, bytearray] = {}
    for addr, value in words.items():
        leaf = leaves.setdefault(addr >> 5, bytearray(32))
        leaf[addr & 31 : (addr & 31) + 4] = value.to_bytes(4, "big")
    return {k: bytes(v) for k, v in leaves.items()}


@pytest.mark.parametrize("size", [32, 64, 4096, 1 << 16])
def test_splice_tensor_root_into_base_root(harness: Contract, size: int) -> None:
    rng = random.Random(size)
    program = {0x00400000 + 4 * i: rng.getrandbits(32) for i in range(16)}
    program[0x30000000] = 3  # the task descriptor
    region = 0x80000000 + size * rng.randrange(4)
    leaves = leaves_of(program)
    base_root = sparse_node(leaves, MEMORY_DEPTH, 0)
    mem = Memory()
    for addr, value in program.items():
        mem.write_u32(addr, value)
    assert mem.root() == base_root  # the sparse helper is the VM's tree

    tensor = bytes(rng.getrandbits(8) for _ in range(min(size, 256))).ljust(size, b"\0")
    tensor_root = subtree_root(tensor)
    height = size.bit_length() - 6
    siblings = subtree_siblings(leaves, region, height)
    assert harness.functions.verifySubtree(
        base_root, region, height, ZERO_HASHES[height], siblings
    ).call()

    got = harness.functions.spliceSubtree(
        base_root, region, height, ZERO_HASHES[height], tensor_root, siblings
    ).call()
    mem.write_bytes(region, tensor)
    assert got == mem.root()
    assert harness.functions.verifySubtree(got, region, height, tensor_root, siblings).call()
    assert not harness.functions.verifySubtree(
        got, region, height, ZERO_HASHES[height], siblings
    ).call()


def test_splice_with_wrong_old_root_or_bad_region_reverts(harness: Contract) -> None:
    leaves = leaves_of({0x00400000: 0x12345678})
    root = sparse_node(leaves, MEMORY_DEPTH, 0)
    height, region = 7, 0x80001000
    siblings = subtree_siblings(leaves, region, height)
    new = keccak256(b"tensor")
    assert_reverts_with(
        "InvalidMemoryProof",
        harness.functions.spliceSubtree(root, region, height, new, new, siblings),
    )
    assert_reverts_with(
        "MisalignedAddress",
        harness.functions.spliceSubtree(
            root, region + 32, height, ZERO_HASHES[height], new, siblings
        ),
    )
    assert_reverts_with(
        "InvalidProofLength",
        harness.functions.spliceSubtree(
            root, region, height, ZERO_HASHES[height], new, siblings[:-32]
        ),
    )
    assert_reverts_with(
        "InvalidSubtreeHeight",
        harness.functions.spliceSubtree(root, 0, 28, ZERO_HASHES[27], new, b""),
    )
    # The whole memory as one region: no siblings, the root itself is replaced.
    assert harness.functions.spliceSubtree(root, 0, MEMORY_DEPTH, root, new, b"").call() == new
