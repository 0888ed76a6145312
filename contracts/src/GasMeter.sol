// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

/// @title GasMeter
/// @notice Measures a call's execution gas inside the EVM, so that the figure is the same on
///         every chain (docs/DESIGN.md, "Execution gas"): the gas spent in the callee's frame,
///         which is what a transaction to it spends beyond its intrinsic gas (21,000 plus
///         calldata), without any chain's transaction pricing (EIP-7623's calldata floor under
///         Prague, say). Read with `eth_call`; nothing is stored.
/// @dev One loop body measures a call to an address without code (which spends nothing in its
///      frame) and then the call to `target`; both accounts are warmed first, so the difference
///      is the callee frame's gas alone. Refunds (none for a pure callee) are
///      not subtracted.
contract GasMeter {
    /// @notice An account with no code: the empty call the measurement subtracts.
    address public constant EMPTY = address(0xdead);
    /// @dev EMPTY as a number, for inline assembly.
    uint256 private constant EMPTY_ACCOUNT = 0xdead;

    /// @notice The measured call reverted; `data` is its revert data.
    error CallReverted(bytes data);

    /// @notice Calls `target` with `data` and returns the gas its frame spent and what it returned.
    /// @param target The contract to measure.
    /// @param data The calldata, exactly as a transaction to `target` would carry it.
    /// @return gasUsed The gas spent inside `target`'s frame.
    /// @return result The call's return data.
    function measure(address target, bytes calldata data) external returns (uint256 gasUsed, bytes memory result) {
        bool ok;
        assembly ("memory-safe") {
            let ptr := mload(0x40)
            calldatacopy(ptr, data.offset, data.length)
            // Warm both accounts outside the measurement: a transaction's `to` is warm too.
            pop(extcodesize(EMPTY_ACCOUNT))
            pop(extcodesize(target))
            // One loop body measures both calls, so both run the very same instructions: the
            // empty call first, the target last (its return data is the result).
            let spentEmpty := 0
            for { let i := 0 } lt(i, 2) { i := add(i, 1) } {
                let to := EMPTY_ACCOUNT
                if i { to := target }
                let before := gas()
                ok := call(gas(), to, 0, ptr, data.length, 0, 0)
                let spent := sub(before, gas())
                switch i
                case 0 { spentEmpty := spent }
                default { gasUsed := sub(spent, spentEmpty) }
            }
            result := add(ptr, and(add(data.length, 0x3f), not(0x1f)))
            mstore(result, returndatasize())
            returndatacopy(add(result, 0x20), 0, returndatasize())
            mstore(0x40, add(add(result, 0x20), and(add(returndatasize(), 0x1f), not(0x1f))))
        }
        if (!ok) revert CallReverted(result);
    }
}
