"""Errors of opmlc's toolchain (solc driver, chain access), each meant to print as one line.

The CLI catches `ToolchainError` and prints its message without a traceback: these are problems of
the user's environment (no Node, an unreachable node URL), not bugs.
"""

from __future__ import annotations

from typing import Any


class ToolchainError(Exception):
    """An environment problem the user can fix; its message is one line."""


class CompilerError(ToolchainError):
    """Node/npm is missing, `npm install` failed, or solc rejected the contracts."""


class ChainError(ToolchainError):
    """A chain could not be reached, or it refused what we sent."""


class ContractReverted(ChainError):
    """A contract call reverted; `error` names the custom error when the ABI knows it."""

    def __init__(self, function: str, error: str | None, args: tuple[Any, ...], data: bytes):
        self.function = function
        self.error = error
        self.error_args = args
        self.data = data
        what = f"{error}{args}" if error else f"0x{data.hex()}" if data else "no reason"
        super().__init__(f"{function} reverted: {what}")
