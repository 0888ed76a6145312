"""Binary Merkle trees over byte memory: the one commitment scheme of opmlc.

Everything that is committed to — the VM's 4 GiB memory, a tensor placed in its region, the
graph trace — is hashed by the rules here (DESIGN "Commitments"): 32-byte leaves taken as they
are, inner node = keccak256(left ‖ right), empty subtrees by precomputed zero hashes. Because a
tensor padded to 2^k bytes is hashed exactly like an aligned 2^k-byte slice of memory, its root
can be spliced into the memory tree as a subtree. `contracts/` mirrors these rules in Solidity.
"""

from __future__ import annotations

try:  # safe-pysha3's C keccak is ~5x faster per call than pycryptodome's, and this is hot.
    from sha3 import keccak_256 as _keccak_256

    def keccak256(data: bytes) -> bytes:
        """keccak256 (Ethereum's, not SHA3-256) of `data`."""
        return _keccak_256(data).digest()

except ImportError:  # pragma: no cover - exercised only where safe-pysha3 has no wheel
    from eth_hash.auto import keccak as keccak256  # type: ignore[assignment]

LEAF_BYTES = 32
LEAF_SHIFT = 5
MEMORY_DEPTH = 27  # 2^32 bytes / 2^5 bytes per leaf = 2^27 leaves
ZERO_LEAF = bytes(LEAF_BYTES)


def _zero_hashes(levels: int) -> tuple[bytes, ...]:
    out = [ZERO_LEAF]
    for _ in range(levels):
        out.append(keccak256(out[-1] + out[-1]))
    return tuple(out)


# ZERO_HASHES[h] is the root of an all-zero subtree of height h (2^h leaves, 2^(h+5) bytes).
ZERO_HASHES: tuple[bytes, ...] = _zero_hashes(MEMORY_DEPTH)
EMPTY_MEMORY_ROOT: bytes = ZERO_HASHES[MEMORY_DEPTH]


def hash_pair(left: bytes, right: bytes) -> bytes:
    """Inner node of the tree."""
    return keccak256(left + right)


def height_of(size: int) -> int:
    """Tree height of a power-of-two byte size ≥ 32 (32 bytes → 0)."""
    if size < LEAF_BYTES or size & (size - 1):
        raise ValueError(f"a Merkle subtree covers a power of two ≥ 32 bytes, not {size}")
    return size.bit_length() - 1 - LEAF_SHIFT


def padded_size(nbytes: int) -> int:
    """The smallest power of two ≥ max(nbytes, 32): a tensor's region size."""
    return max(LEAF_BYTES, 1 << max(0, nbytes - 1).bit_length())


def tree_levels(data: bytes | bytearray | memoryview) -> list[list[bytes]]:
    """Every level of the tree over `data` (a power of two ≥ 32 bytes), leaves first.

    All-zero stretches are recognised and take their precomputed zero hash, so a large, mostly
    empty region costs little.
    """
    height_of(len(data))
    mv = memoryview(data).cast("B")
    level = [bytes(mv[i : i + LEAF_BYTES]) for i in range(0, len(mv), LEAF_BYTES)]
    out = [level]
    h = 0
    while len(level) > 1:
        zero = ZERO_HASHES[h]
        level = [
            ZERO_HASHES[h + 1]
            if level[i] == zero and level[i + 1] == zero
            else keccak256(level[i] + level[i + 1])
            for i in range(0, len(level), 2)
        ]
        out.append(level)
        h += 1
    return out


def subtree_root(data: bytes | bytearray | memoryview) -> bytes:
    """Root of `data`, whose length is a power of two ≥ 32 bytes."""
    return tree_levels(data)[-1][0]


def chunk_roots(data: bytes | bytearray | memoryview, chunk: int) -> list[bytes]:
    """The root of each `chunk`-byte piece of `data` (chunk a power of two ≥ 32 dividing its
    length): a tensor's page roots with chunk = 4096, the tree's nodes of that height."""
    mv = memoryview(data).cast("B")
    zero = ZERO_HASHES[height_of(chunk)]
    empty = bytes(chunk)
    return [zero if mv[i : i + chunk] == empty else subtree_root(mv[i : i + chunk])
            for i in range(0, len(mv), chunk)]


def _padded_list(leaves: list[bytes]) -> bytes:
    size = 1 << max(0, len(leaves) - 1).bit_length()
    return b"".join(leaves) + ZERO_LEAF * (size - len(leaves))


def list_root(leaves: list[bytes]) -> bytes:
    """Root over a list of 32-byte leaves, padded with zero leaves to a power of two.

    Used for the graph trace (a list of tensor roots) and the model commitment.
    """
    if not leaves:
        return ZERO_LEAF
    return subtree_root(_padded_list(leaves))


def list_proof(leaves: list[bytes], index: int) -> list[bytes]:
    """Siblings, bottom up, proving leaves[index] against list_root(leaves)."""
    levels = tree_levels(_padded_list(leaves))
    return [levels[h][(index >> h) ^ 1] for h in range(len(levels) - 1)]


def root_from_proof(leaf: bytes, index: int, siblings: list[bytes]) -> bytes:
    """Fold a leaf (or subtree root) up through its siblings; bit i of index = right child."""
    node = leaf
    for i, sib in enumerate(siblings):
        node = keccak256(sib + node) if (index >> i) & 1 else keccak256(node + sib)
    return node
