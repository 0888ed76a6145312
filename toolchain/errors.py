"""Errors of opmlc's toolchain (solc driver, chain access), each meant to print as one line.

The CLI catches `ToolchainError` and prints its message without a traceback: these are problems of
the user's environment (no Node, an unreachable node URL), not bugs.
"""

from __future__ import annotations


class ToolchainError(Exception):
    """An environment problem the user can fix; its message is one line."""


class CompilerError(ToolchainError):
    """Node/npm is missing, `npm ci` failed, or solc rejected the contracts."""


class ChainError(ToolchainError):
    """A chain could not be reached, or it refused what we sent."""
