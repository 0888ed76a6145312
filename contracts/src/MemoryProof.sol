// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

/// @title MemoryProof
/// @notice Merkle proofs over the VM's 4 GiB memory, by the rules of vm/merkle.py (docs/DESIGN.md,
///         "Commitments"): 32-byte leaves taken as they are, inner node = keccak256(left ‖ right),
///         depth 27, empty subtrees by their zero hashes.
/// @dev A memory proof for a 4-aligned address is 28 × 32 bytes: the leaf, then the 27 siblings
///      from the bottom up; bit i of (address >> 5) says whether the node at level i is a right
///      child. A subtree proof (splicing a tensor root into a memory root) is the siblings only,
///      from the subtree's level up. Proofs are read from calldata: MIPS.step and the dispute game
///      receive them there, and copying them to memory would only cost gas.
library MemoryProof {
    /// @notice Levels of the memory tree: 2^32 bytes / 2^5 bytes per leaf = 2^27 leaves.
    uint256 internal constant MEMORY_DEPTH = 27;
    /// @notice log2 of the leaf size (32 bytes).
    uint256 internal constant LEAF_SHIFT = 5;
    /// @notice Bytes of a memory proof: the leaf and 27 siblings.
    uint256 internal constant PROOF_LENGTH = (MEMORY_DEPTH + 1) * 32;
    /// @notice The highest address of the 32-bit memory.
    uint256 internal constant MAX_ADDRESS = 0xFFFFFFFF;

    /// @notice The proof does not lead from its leaf to the expected root.
    error InvalidMemoryProof();
    /// @notice A memory proof is not 896 bytes, or a subtree proof not 32 × (27 − height) bytes.
    error InvalidProofLength(uint256 length, uint256 expected);
    /// @notice A word address is not 4-aligned or a subtree address not aligned to its size, or
    ///         the address does not fit in 32 bits.
    error MisalignedAddress(uint256 addr);
    /// @notice A subtree height above the tree's depth.
    error InvalidSubtreeHeight(uint256 height);

    /// @notice Reads the big-endian u32 at `addr` after checking `proof` against `root`.
    /// @param root The memory root the proof must lead to.
    /// @param addr A 4-aligned byte address.
    /// @param proof The 896-byte memory proof of the leaf holding `addr`.
    /// @return word The 32-bit word at `addr`.
    function readWord(bytes32 root, uint256 addr, bytes calldata proof) internal pure returns (uint256 word) {
        _checkWordProof(addr, proof);
        bytes32 leaf;
        assembly ("memory-safe") {
            leaf := calldataload(proof.offset)
        }
        if (_fold(leaf, addr >> LEAF_SHIFT, _calldataPtr(proof) + 32, MEMORY_DEPTH) != root) revert InvalidMemoryProof();
        word = _wordOfLeaf(leaf, addr);
    }

    /// @notice Writes the u32 `value` at `addr` and returns the new root, after checking `proof`
    ///         (the proof of the word's old leaf) against `root`.
    /// @dev One pass folds the old and the new leaf side by side, so a read-modify-write (a byte
    ///      store) can take the old word from `wordOfLeaf` and pay for one verification only.
    /// @param root The memory root before the write.
    /// @param addr A 4-aligned byte address.
    /// @param value The word to store (only its low 32 bits are used).
    /// @param proof The 896-byte memory proof of the leaf holding `addr`, against `root`.
    /// @return newRoot The memory root after the write.
    function writeWord(bytes32 root, uint256 addr, uint256 value, bytes calldata proof)
        internal
        pure
        returns (bytes32 newRoot)
    {
        _checkWordProof(addr, proof);
        bytes32 oldLeaf;
        assembly ("memory-safe") {
            oldLeaf := calldataload(proof.offset)
        }
        // The word's four bytes inside the leaf, as a mask and as the shifted new value.
        uint256 bitOffset = (addr & 31) << 3;
        bytes32 newLeaf = bytes32(
            (uint256(oldLeaf) & ~((uint256(0xFFFFFFFF) << 224) >> bitOffset))
                | (((value & 0xFFFFFFFF) << 224) >> bitOffset)
        );
        bytes32 oldRoot;
        (oldRoot, newRoot) = _foldPair(oldLeaf, newLeaf, addr >> LEAF_SHIFT, _calldataPtr(proof) + 32, MEMORY_DEPTH);
        if (oldRoot != root) revert InvalidMemoryProof();
    }

    /// @notice The word at `addr` inside the proof's leaf, NOT checked against any root.
    /// @dev Only for a read-modify-write followed by `writeWord` with the same proof, which checks
    ///      the very leaf this word came from.
    function wordOfLeaf(uint256 addr, bytes calldata proof) internal pure returns (uint256 word) {
        _checkWordProof(addr, proof);
        bytes32 leaf;
        assembly ("memory-safe") {
            leaf := calldataload(proof.offset)
        }
        word = _wordOfLeaf(leaf, addr);
    }

    /// @notice Whether `subRoot` is the root of the aligned 2^(height+5)-byte region at `addr`
    ///         in the tree of `root`.
    /// @param root The memory root.
    /// @param addr The region's first byte; a multiple of the region's size.
    /// @param height The region's height in the tree: 0 for one 32-byte leaf, 27 for all memory.
    /// @param subRoot The claimed root of the region (a tensor root, for a tensor's region).
    /// @param siblings The 27 − height siblings from the region's level up, 32 bytes each.
    /// @return True when the proof leads from `subRoot` to `root`.
    function verifySubtree(bytes32 root, uint256 addr, uint256 height, bytes32 subRoot, bytes calldata siblings)
        internal
        pure
        returns (bool)
    {
        _checkSubtreeProof(addr, height, siblings);
        return _fold(subRoot, addr >> (LEAF_SHIFT + height), _calldataPtr(siblings), MEMORY_DEPTH - height) == root;
    }

    /// @notice Replaces the region at `addr` (root `oldSubRoot`) by a region of root `newSubRoot`
    ///         and returns the new memory root; reverts unless the proof leads from `oldSubRoot`
    ///         to `root`.
    /// @dev The dispute game derives a node's initial memory root from its base root, where every
    ///      tensor region is still zero (`oldSubRoot = zeroHash(height)`), and the input tensor
    ///      roots, one splice per input.
    /// @param root The memory root before the splice.
    /// @param addr The region's first byte; a multiple of the region's size.
    /// @param height The region's height in the tree (log2(size) − 5).
    /// @param oldSubRoot The region's root in `root`.
    /// @param newSubRoot The region's root after the splice.
    /// @param siblings The 27 − height siblings from the region's level up, 32 bytes each.
    /// @return newRoot The memory root after the splice.
    function spliceSubtree(
        bytes32 root,
        uint256 addr,
        uint256 height,
        bytes32 oldSubRoot,
        bytes32 newSubRoot,
        bytes calldata siblings
    ) internal pure returns (bytes32 newRoot) {
        _checkSubtreeProof(addr, height, siblings);
        bytes32 oldRoot;
        (oldRoot, newRoot) =
            _foldPair(oldSubRoot, newSubRoot, addr >> (LEAF_SHIFT + height), _calldataPtr(siblings), MEMORY_DEPTH - height);
        if (oldRoot != root) revert InvalidMemoryProof();
    }

    /// @notice The root of an all-zero region of height `height` (2^(height+5) bytes).
    function zeroHash(uint256 height) internal pure returns (bytes32 node) {
        if (height > MEMORY_DEPTH) revert InvalidSubtreeHeight(height);
        assembly ("memory-safe") {
            node := 0
            for { let i := 0 } lt(i, height) { i := add(i, 1) } {
                mstore(0x00, node)
                mstore(0x20, node)
                node := keccak256(0x00, 0x40)
            }
        }
    }

    function _checkWordProof(uint256 addr, bytes calldata proof) private pure {
        if (addr & 3 != 0 || addr > MAX_ADDRESS) revert MisalignedAddress(addr);
        if (proof.length != PROOF_LENGTH) revert InvalidProofLength(proof.length, PROOF_LENGTH);
    }

    function _checkSubtreeProof(uint256 addr, uint256 height, bytes calldata siblings) private pure {
        if (height > MEMORY_DEPTH) revert InvalidSubtreeHeight(height);
        if (addr & ((uint256(1) << (LEAF_SHIFT + height)) - 1) != 0 || addr > MAX_ADDRESS) {
            revert MisalignedAddress(addr);
        }
        uint256 expected = (MEMORY_DEPTH - height) * 32;
        if (siblings.length != expected) revert InvalidProofLength(siblings.length, expected);
    }

    function _calldataPtr(bytes calldata b) private pure returns (uint256 p) {
        assembly ("memory-safe") {
            p := b.offset
        }
    }

    function _wordOfLeaf(bytes32 leaf, uint256 addr) private pure returns (uint256) {
        return (uint256(leaf) << ((addr & 31) << 3)) >> 224;
    }

    /// @dev Folds `node` up through `levels` siblings read from calldata at `siblingsPtr`. Bit i of
    ///      `index` puts the level-i node on the right; writing node and sibling at 0x00/0x20 in
    ///      the order the bit picks avoids a branch per level.
    function _fold(bytes32 node, uint256 index, uint256 siblingsPtr, uint256 levels)
        private
        pure
        returns (bytes32 result)
    {
        assembly ("memory-safe") {
            result := node
            let end := add(siblingsPtr, shl(5, levels))
            for { let p := siblingsPtr } lt(p, end) { p := add(p, 0x20) } {
                let nodeSlot := shl(5, and(index, 1))
                mstore(nodeSlot, result)
                mstore(xor(nodeSlot, 0x20), calldataload(p))
                result := keccak256(0x00, 0x40)
                index := shr(1, index)
            }
        }
    }

    /// @dev `_fold` for two leaves at the same position sharing one set of siblings: the old leaf
    ///      proves the siblings, the new one gives the root after a write.
    function _foldPair(bytes32 oldNode, bytes32 newNode, uint256 index, uint256 siblingsPtr, uint256 levels)
        private
        pure
        returns (bytes32 oldRoot, bytes32 newRoot)
    {
        assembly ("memory-safe") {
            oldRoot := oldNode
            newRoot := newNode
            let end := add(siblingsPtr, shl(5, levels))
            for { let p := siblingsPtr } lt(p, end) { p := add(p, 0x20) } {
                let sibling := calldataload(p)
                let nodeSlot := shl(5, and(index, 1))
                mstore(nodeSlot, oldRoot)
                mstore(xor(nodeSlot, 0x20), sibling)
                oldRoot := keccak256(0x00, 0x40)
                // The sibling is still in its slot: keccak256 leaves memory as it was.
                mstore(nodeSlot, newRoot)
                newRoot := keccak256(0x00, 0x40)
                index := shr(1, index)
            }
        }
    }
}
