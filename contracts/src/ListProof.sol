// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

/// @title ListProof
/// @notice Merkle proofs over a list of 32-byte leaves padded with zero leaves to a power of two,
///         by the rules of vm.merkle (`list_root`, `list_proof`, `root_from_proof`): inner node =
///         keccak256(left ‖ right), siblings bottom-up, bit i of the index = right child at level i.
///         The graph trace (one leaf per value) and a model's node list (one leaf per node) are
///         such lists (docs/DESIGN.md, "Commitments" and "The dispute protocol").
/// @dev A proof must have exactly as many siblings as the padded list has levels: a shorter one
///      would let an inner node pass for a leaf, a longer one a leaf of another list for the root.
///      Proofs are read from calldata, where the dispute game receives them.
library ListProof {
    /// @notice A proof does not have the list's depth in siblings.
    error InvalidListProofLength(uint256 length, uint256 expected);
    /// @notice A leaf index at or past the end of the (unpadded) list.
    error ListIndexOutOfRange(uint256 index, uint256 length);

    /// @notice Levels of the tree over a list of `length` leaves: log2 of its padded length.
    /// @param length The number of leaves before padding (at least 1).
    /// @return levels The smallest d with 2^d ≥ length (0 for a single leaf: its root is the leaf).
    function depth(uint256 length) internal pure returns (uint256 levels) {
        while ((uint256(1) << levels) < length) {
            unchecked {
                ++levels;
            }
        }
    }

    /// @notice The list root that `siblings` give `leaf` at position `index`.
    /// @param leaf The leaf (a tensor root, a node leaf, or a zero leaf).
    /// @param index The leaf's position in the list.
    /// @param length The number of leaves in the list (before padding).
    /// @param siblings The `depth(length)` siblings from the bottom up.
    /// @return root The root of the list with `leaf` at `index`.
    function rootOf(bytes32 leaf, uint256 index, uint256 length, bytes32[] calldata siblings)
        internal
        pure
        returns (bytes32 root)
    {
        _check(index, length, siblings);
        root = _fold(leaf, index, siblings);
    }

    /// @notice The roots of two lists that differ only in the leaf at `index`, one proof for both:
    ///         what shows that one leaf changed and every other stayed.
    /// @param oldLeaf The leaf in the first list.
    /// @param newLeaf The leaf in the second list.
    /// @param index The position of the changed leaf.
    /// @param length The number of leaves in the list (before padding).
    /// @param siblings The `depth(length)` siblings from the bottom up, shared by both lists.
    /// @return oldRoot The first list's root.
    /// @return newRoot The second list's root.
    function rootsOf(bytes32 oldLeaf, bytes32 newLeaf, uint256 index, uint256 length, bytes32[] calldata siblings)
        internal
        pure
        returns (bytes32 oldRoot, bytes32 newRoot)
    {
        _check(index, length, siblings);
        oldRoot = _fold(oldLeaf, index, siblings);
        newRoot = _fold(newLeaf, index, siblings);
    }

    function _check(uint256 index, uint256 length, bytes32[] calldata siblings) private pure {
        if (index >= length) revert ListIndexOutOfRange(index, length);
        uint256 expected = depth(length);
        if (siblings.length != expected) revert InvalidListProofLength(siblings.length, expected);
    }

    /// @dev As MemoryProof's fold: the bit of `index` picks the node's slot, the sibling takes the
    ///      other one, so there is no branch per level.
    function _fold(bytes32 node, uint256 index, bytes32[] calldata siblings) private pure returns (bytes32 result) {
        assembly ("memory-safe") {
            result := node
            let end := add(siblings.offset, shl(5, siblings.length))
            for { let p := siblings.offset } lt(p, end) { p := add(p, 0x20) } {
                let nodeSlot := shl(5, and(index, 1))
                mstore(nodeSlot, result)
                mstore(xor(nodeSlot, 0x20), calldataload(p))
                result := keccak256(0x00, 0x40)
                index := shr(1, index)
            }
        }
    }
}
