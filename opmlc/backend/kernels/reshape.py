"""Kernel of opmlc/ir/ops/reshape.py: an element-by-element copy (row-major order is kept).

In the host module (the native build) the copy is skipped when the output is the input's own
memory: a NativeSession gives a reshape's output the buffer of its input (native.alias_of), so
the node costs nothing there; a caller with separate buffers (run_native, the kernel tests)
still gets its copy. The MIPS module's kernel is the plain copy, as before."""

from __future__ import annotations

from llvmlite import ir

from opmlc.backend.kernels import kernel
from opmlc.backend.kernels._host import host
from opmlc.backend.kernels._ir import ELEM, load, out_loop, store
from opmlc.ir.types import TensorType


@kernel("reshape")
def emit(b: ir.IRBuilder, out: ir.Value, args: list[ir.Value], types: list[TensorType], attrs: dict,
         out_type: TensorType) -> None:
    ty = ELEM[out_type.dtype]
    if host(b):
        copy = b.append_basic_block("copy")
        done = b.append_basic_block("done")
        b.cbranch(b.icmp_unsigned("!=", b.ptrtoint(out, ir.IntType(64)), b.ptrtoint(args[0], ir.IntType(64))),
                  copy, done)
        b.position_at_end(copy)
        with out_loop(b, out_type.numel) as i:
            store(b, load(b, args[0], i, ty), out, i)
        b.branch(done)
        b.position_at_end(done)
        return
    with out_loop(b, out_type.numel) as i:
        store(b, load(b, args[0], i, ty), out, i)
