"""The Python MIPS VM: executes model.elf one instruction at a time over Merkle-committed memory.

vm/ knows nothing of ONNX or the IR: it sees an ELF, a memory map and tensors as bytes.
Modules: memory (Merkle memory), state (encoding, hash), step (reference semantics), witness
(step proofs), run (fast path), loader (ELF → initial state), checkpoint (state at step k).
See vm/README.md for the public API.
"""
