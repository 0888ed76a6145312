"""The Python MIPS VM: executes model.elf one instruction at a time over Merkle-committed memory.

vm/ knows nothing of ONNX or the IR: it sees an ELF, a memory map and tensors as bytes.
"""
