"""Errors of the VM's environment (not of the program it runs).

A program's misbehaviour is never an exception: it is a panic state (vm/step.py). These errors
are for what surrounds the program: an ELF that cannot be loaded, a tensor store that lacks or
contradicts a root spliced into memory, a region that is not an aligned power of two.
"""

from __future__ import annotations


class VMError(Exception):
    """Base class of the VM's environment errors."""


class ElfError(VMError, ValueError):
    """The file is not a loadable MIPS32 big-endian executable; the message says why."""


class RegionError(VMError, ValueError):
    """A memory region is not a power of two ≥ 32 bytes aligned to its size."""


class StoreError(VMError, LookupError):
    """A spliced root is missing from the tensor store, or its bytes hash to another root."""
