// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

/// @notice What a TaskRegistry knows of a compiled model (docs/DESIGN.md, "The dispute protocol").
/// @dev modelId = keccak256(abi.encode(commitment)); in Python, eth_abi's
///      encode(["(bytes32,bytes32,uint32,uint32,uint32,uint32,uint32,uint32,uint8)"], [fields]).
struct ModelCommitment {
    /// @dev list_root of the node leaves, one per node (`Commitments.nodeLeaf`).
    bytes32 nodesRoot;
    /// @dev list_root over nValues leaves: initializer roots, zero leaves elsewhere.
    bytes32 traceTemplate;
    uint32 nNodes;
    uint32 nValues;
    /// @dev Graph inputs are values 0 .. nInputs − 1.
    uint32 nInputs;
    /// @dev Node k's output is value firstNodeValue + k.
    uint32 firstNodeValue;
    /// @dev The value whose root is a result's outputRoot (graph output 0).
    uint32 outputValue;
    /// @dev The ELF entry point: pc of every task's initial state.
    uint32 entry;
    /// @dev The build's step budget: every task exits within 2^log2StepBudget steps, so a
    ///      hand-off's log2Steps is at most this (docs/DESIGN.md "Tasks: the step budget").
    uint8 log2StepBudget;
}

/// @notice One node of a model: its task's base root and the regions of its operands and output.
/// @dev Node leaf = keccak256(abi.encode(info)); in Python, eth_abi's
///      encode(["(bytes32,uint32[],uint32[],uint8[],uint32,uint32,uint8,uint8)"], [fields]), which
///      like Solidity starts with the tuple's offset (0x20) since the struct is dynamic.
struct NodeInfo {
    /// @dev Memory root of node k's task: program image and task descriptor, regions empty; for a
    ///      node split into 2^partsLog2 parts, the list root of its parts' base roots.
    bytes32 baseRoot;
    /// @dev The node's distinct operand values, ascending.
    uint32[] inputValues;
    /// @dev Their regions, as (address, tree height = log2(size) − 5).
    uint32[] inputAddrs;
    uint8[] inputHeights;
    uint32 outputValue;
    /// @dev The output region (of a part, for a split node: each part's map puts its slice there).
    uint32 outputAddr;
    uint8 outputHeight;
    /// @dev 0: one task; else the node's tasks are 2^partsLog2 parts, part j computing the j-th
    ///      aligned subtree of height (output tree height − partsLog2) of the output tensor.
    uint8 partsLog2;
}

/// @notice A part's task base root and its list proof in its node's part list (startPart).
struct PartBase {
    bytes32 root;
    bytes32[] proof;
}

/// @title Commitments
/// @notice The hashes that name a model and its nodes, as opmlc's Python side computes them.
library Commitments {
    /// @notice The id under which a model is registered: keccak256(abi.encode(commitment)).
    function modelId(ModelCommitment memory commitment) internal pure returns (bytes32) {
        return keccak256(abi.encode(commitment));
    }

    /// @notice The leaf of a node in its model's node list: keccak256(abi.encode(info)).
    function nodeLeaf(NodeInfo calldata info) internal pure returns (bytes32) {
        return keccak256(abi.encode(info));
    }
}
