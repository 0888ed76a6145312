"""Binary Merkle trees over byte memory: the one commitment scheme of opmlc.

Everything that is committed to — the VM's 4 GiB memory, a tensor placed in its region, the
graph trace — is hashed by the rules here (DESIGN "Commitments"): 32-byte leaves taken as they
are, inner node = keccak256(left ‖ right), empty subtrees by precomputed zero hashes. Because a
tensor padded to 2^k bytes is hashed exactly like an aligned 2^k-byte slice of memory, its root
can be spliced into the memory tree as a subtree. `contracts/` mirrors these rules in Solidity.

Speed: whatever hashes many nodes at once (a subtree, a tree level, a batch of pairs) goes to the
native kernels of vm/native_hash.py when this process has them, the `python_*` functions here
otherwise; both give the same bytes (the Python ones are the reference the tests hold the native
path to).
"""

from __future__ import annotations

from vm import native_hash

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

# Below this many bytes a subtree is hashed in Python: a ctypes call costs about what a few
# Python keccak calls do (and small trees then never build the JIT).
NATIVE_MIN_BYTES = 256
# Subtrees hashed by one native call (and recognised as all-zero at once): big enough that the
# vector lanes stay full up to near the top, small enough to stay in cache and to skip the zero
# padding of a tensor's region finely.
NATIVE_CHUNK = 1 << 16

python_keccak256 = keccak256


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
    """Every level of the tree over `data` (a power of two ≥ 32 bytes), leaves first."""
    height_of(len(data))
    k = native_hash.kernels() if len(data) >= NATIVE_MIN_BYTES else None
    if k is None:
        return python_tree_levels(data)
    level = bytes(memoryview(data).cast("B"))
    out = []
    while True:
        out.append([level[i : i + LEAF_BYTES] for i in range(0, len(level), LEAF_BYTES)])
        if len(level) == LEAF_BYTES:
            return out
        level = k.keccak_blocks(level)


def python_tree_levels(data: bytes | bytearray | memoryview) -> list[list[bytes]]:
    """tree_levels in Python, one keccak call per node (the reference).

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


def subtree_root(data: bytes | bytearray | memoryview, threads: int | None = None) -> bytes:
    """Root of `data`, whose length is a power of two ≥ 32 bytes.

    Native where available: all-zero subtrees of NATIVE_CHUNK bytes are recognised, the rest
    hashed on `threads` threads (default: every CPU, vm.native_hash.default_threads()).
    """
    size = len(memoryview(data).cast("B"))
    height_of(size)
    k = native_hash.kernels() if size >= NATIVE_MIN_BYTES else None
    if k is None:
        return python_subtree_root(data)
    chunk = min(size, NATIVE_CHUNK)
    roots = k.chunk_roots(data, chunk, ZERO_HASHES[height_of(chunk)], threads)
    while len(roots) > LEAF_BYTES:
        roots = k.keccak_blocks(roots)
    return roots


def python_subtree_root(data: bytes | bytearray | memoryview) -> bytes:
    """subtree_root in Python (the reference)."""
    return python_tree_levels(data)[-1][0]


def chunk_roots(data: bytes | bytearray | memoryview, chunk: int,
                threads: int | None = None) -> bytes:
    """The roots of the consecutive aligned `chunk`-byte subtrees of `data`, concatenated.

    `chunk` is a power of two ≥ 32 dividing len(data); e.g. the page roots of a memory region.
    """
    size = len(memoryview(data).cast("B"))
    h = height_of(chunk)
    if size % chunk:
        raise ValueError(f"{size} bytes do not split into subtrees of {chunk} bytes")
    if chunk == LEAF_BYTES:
        return bytes(memoryview(data).cast("B"))
    k = native_hash.kernels() if size >= NATIVE_MIN_BYTES else None
    if k is None:
        mv = memoryview(data).cast("B")
        return b"".join(python_subtree_root(mv[i : i + chunk]) for i in range(0, size, chunk))
    if chunk > NATIVE_CHUNK:  # keep each native call's scratch in cache
        per = chunk // NATIVE_CHUNK
        sub = k.chunk_roots(data, NATIVE_CHUNK, ZERO_HASHES[height_of(NATIVE_CHUNK)], threads)
        while per > 1:
            sub, per = k.keccak_blocks(sub), per // 2
        return sub
    return k.chunk_roots(data, chunk, ZERO_HASHES[h], threads)


def hash_pairs(pairs: bytes | bytearray | memoryview, height: int | None = None) -> bytes:
    """keccak256 of each consecutive 64-byte (left ‖ right) block: one tree level, or a batch
    of inner nodes from anywhere in a tree; the 32-byte digests concatenated.

    `height`, when every pair's children have that height, lets the Python path give a pair of
    zero hashes its parent's zero hash without hashing (the same bytes either way).
    """
    mv = memoryview(pairs).cast("B")
    if len(mv) % 64:
        raise ValueError(f"pairs of 64 bytes, not {len(mv)} bytes")
    k = native_hash.kernels() if len(mv) >= NATIVE_MIN_BYTES else None
    if k is not None:
        return k.keccak_blocks(mv)
    zero = None if height is None else ZERO_HASHES[height] * 2
    return b"".join(
        ZERO_HASHES[height + 1] if zero is not None and mv[i : i + 64] == zero
        else keccak256(bytes(mv[i : i + 64]))
        for i in range(0, len(mv), 64)
    )


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
