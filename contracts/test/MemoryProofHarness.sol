// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {MemoryProof} from "../src/MemoryProof.sol";

/// @title MemoryProofHarness
/// @notice Exposes the internal MemoryProof library to tests (tests/contracts); not deployed
///         by opmlc itself.
contract MemoryProofHarness {
    /// @notice See MemoryProof.readWord.
    function readWord(bytes32 root, uint256 addr, bytes calldata proof) external pure returns (uint256) {
        return MemoryProof.readWord(root, addr, proof);
    }

    /// @notice See MemoryProof.writeWord.
    function writeWord(bytes32 root, uint256 addr, uint256 value, bytes calldata proof)
        external
        pure
        returns (bytes32)
    {
        return MemoryProof.writeWord(root, addr, value, proof);
    }

    /// @notice See MemoryProof.verifySubtree.
    function verifySubtree(bytes32 root, uint256 addr, uint256 height, bytes32 subRoot, bytes calldata siblings)
        external
        pure
        returns (bool)
    {
        return MemoryProof.verifySubtree(root, addr, height, subRoot, siblings);
    }

    /// @notice See MemoryProof.spliceSubtree.
    function spliceSubtree(
        bytes32 root,
        uint256 addr,
        uint256 height,
        bytes32 oldSubRoot,
        bytes32 newSubRoot,
        bytes calldata siblings
    ) external pure returns (bytes32) {
        return MemoryProof.spliceSubtree(root, addr, height, oldSubRoot, newSubRoot, siblings);
    }

    /// @notice See MemoryProof.zeroHash.
    function zeroHash(uint256 height) external pure returns (bytes32) {
        return MemoryProof.zeroHash(height);
    }
}
