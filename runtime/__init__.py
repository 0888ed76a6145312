"""What every MIPS program links with (see runtime/mips.py): entry, exit, memory functions,
64-bit division helpers and the region table, generated as LLVM IR text."""

from runtime.mips import PROVIDED_SYMBOLS, build_runtime_ir

__all__ = ["PROVIDED_SYMBOLS", "build_runtime_ir"]
