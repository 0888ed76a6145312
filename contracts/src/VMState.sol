// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

/// @title VMState
/// @notice The VM state's 186-byte encoding and its hash, as vm/state.py defines them: the one
///         Solidity definition, used by MIPS.sol (which edits a state in place) and by the
///         dispute game (which builds a node's initial state and checks submitted states).
/// @dev Encoding, big-endian: memRoot (32) ‖ pc ‖ nextPC ‖ lo ‖ hi (u32) ‖ step (u64) ‖
///      exitCode (u8) ‖ exited (u8) ‖ 32 registers (u32). State hash = keccak256(encoding) with its
///      top byte replaced by the status.
library VMState {
    /// @notice Bytes of an encoded state.
    uint256 internal constant STATE_LENGTH = 186;
    uint256 internal constant OFFSET_MEM_ROOT = 0;
    uint256 internal constant OFFSET_PC = 32;
    uint256 internal constant OFFSET_NEXT_PC = 36;
    uint256 internal constant OFFSET_LO = 40;
    uint256 internal constant OFFSET_HI = 44;
    uint256 internal constant OFFSET_STEP = 48;
    uint256 internal constant OFFSET_EXIT_CODE = 56;
    uint256 internal constant OFFSET_EXITED = 57;
    uint256 internal constant OFFSET_REGISTERS = 58;
    /// @notice $sp of every initial state: the stack grows down from here.
    uint32 internal constant SP_INIT = 0x7FFFF000;
    /// @notice Registers $0 .. $28 precede $sp ($29); $fp and $ra follow it.
    uint256 internal constant REGISTERS_BEFORE_SP = 29;
    uint256 internal constant REGISTERS_AFTER_SP = 2;

    /// @notice Status byte of a state hash (its top byte), by outcome.
    uint256 internal constant STATUS_EXITED_ZERO = 0;
    uint256 internal constant STATUS_EXITED_ONE = 1;
    uint256 internal constant STATUS_EXITED_OTHER = 2;
    uint256 internal constant STATUS_RUNNING = 3;

    /// @notice An encoded state that is not 186 bytes.
    error InvalidStateLength(uint256 length);

    /// @notice The initial state of a task whose memory root is `root`: pc = entry,
    ///         nextPC = entry + 4, $sp = 0x7FFFF000, every other field 0 (vm.loader.initial_state).
    /// @param root The task's memory root: its base root with its inputs spliced in.
    /// @param entry The program's entry point.
    /// @return state The 186-byte encoding.
    function initialState(bytes32 root, uint32 entry) internal pure returns (bytes memory state) {
        uint32 nextPC;
        unchecked {
            nextPC = entry + 4; // wraps at 2^32 as the VM's does
        }
        state = abi.encodePacked(
            root,
            entry,
            nextPC,
            uint32(0), // lo
            uint32(0), // hi
            uint64(0), // step
            uint8(0), // exitCode
            uint8(0), // exited
            new bytes(REGISTERS_BEFORE_SP * 4),
            SP_INIT,
            new bytes(REGISTERS_AFTER_SP * 4)
        );
    }

    /// @notice The state hash: keccak256 of the encoding, its top byte replaced by the status
    ///         (0 exited with code 0, 1 exited with code 1, 2 exited otherwise, 3 running).
    /// @param state A 186-byte encoded state.
    function hash(bytes memory state) internal pure returns (bytes32) {
        if (state.length != STATE_LENGTH) revert InvalidStateLength(state.length);
        uint256 ptr;
        assembly ("memory-safe") {
            ptr := add(state, 32)
        }
        return hashAt(ptr);
    }

    /// @notice The state hash of the 186-byte encoding at memory address `ptr`.
    /// @dev MIPS.sol hashes its in-place buffer with this; `hash` checks a length first.
    function hashAt(uint256 ptr) internal pure returns (bytes32 h) {
        uint256 exitedFlag;
        uint256 code;
        assembly ("memory-safe") {
            exitedFlag := byte(0, mload(add(ptr, OFFSET_EXITED)))
            code := byte(0, mload(add(ptr, OFFSET_EXIT_CODE)))
        }
        uint256 status = STATUS_RUNNING;
        if (exitedFlag != 0) {
            status = code == 0 ? STATUS_EXITED_ZERO : code == 1 ? STATUS_EXITED_ONE : STATUS_EXITED_OTHER;
        }
        assembly ("memory-safe") {
            h := or(shr(8, shl(8, keccak256(ptr, STATE_LENGTH))), shl(248, status))
        }
    }

    function memRoot(bytes calldata state) internal pure returns (bytes32) {
        if (state.length != STATE_LENGTH) revert InvalidStateLength(state.length);
        return bytes32(state[0:32]);
    }

    /// @notice The `exited` byte of an encoded state.
    function exited(bytes calldata state) internal pure returns (uint8) {
        if (state.length != STATE_LENGTH) revert InvalidStateLength(state.length);
        return uint8(state[OFFSET_EXITED]);
    }

    /// @notice The `exitCode` byte of an encoded state.
    function exitCode(bytes calldata state) internal pure returns (uint8) {
        if (state.length != STATE_LENGTH) revert InvalidStateLength(state.length);
        return uint8(state[OFFSET_EXIT_CODE]);
    }
}
