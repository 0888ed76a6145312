"""IR graph → one target-independent LLVM module (text), built natively and for MIPS alike.

The module defines `void task(ptr regions, i32 node)` (docs/DESIGN.md, the task ABI):
`regions[v]` points at value v's data; `node` is a node index, or 0xFFFFFFFF for the whole
graph; any other index traps (a panic in the VM). Each node is a small function that loads its
operands' pointers from the table and calls its kernel; nodes with the same op, types and
attributes share one kernel function.

With `count_saturation` (the native build only; never the MIPS program), each kernel returns the
number of elements it saturated (opmlc/backend/kernels/_ir.py), and each node function adds it
to `counts[node]`, an i64 array whose address is one more entry of the region table,
`regions[n_values]`. The module then also defines the marker `@opmlc.counts_saturation`.
"""

from __future__ import annotations

import json

from llvmlite import ir

from opmlc import progress
from opmlc.backend.kernels import KERNELS
from opmlc.backend.kernels._ir import (
    I32,
    I64,
    PTR,
    RANGE_ATTR,
    VOID,
    c32,
    counted_slot,
    counting_module,
)
from opmlc.ir.graph import Graph

TASK = "task"
WHOLE_GRAPH = 0xFFFFFFFF
SATURATION_MARKER = "opmlc.counts_saturation"  # opmlc.backend.target reads it by this name


def _signature(graph: Graph, index: int, ranged: bool) -> str:
    node = graph.nodes[index]
    return json.dumps(
        [node.op, [str(t) for t in graph.input_types(node)], node.attrs, str(graph.values[node.output].type),
         ranged],
        sort_keys=True,
    )


def generate_module(graph: Graph, count_saturation: bool = False, parted: frozenset[int] = frozenset()) -> str:
    """The LLVM IR text of `graph`'s program (no triple: opmlc/backend/target.py sets it).

    `count_saturation` adds the saturation counters of the native build (module docstring).
    `parted`: the nodes split into parts (opmlc/backend/parts.py; the MIPS program only): their
    node functions read the part's flat output range [lo, hi) from the region table's entries
    n_values and n_values + 1 (hi = 0: the whole output) and call a ranged kernel.
    """
    module = ir.Module(name=graph.name)
    if not count_saturation:
        return _generate(graph, module, False, parted)
    assert not parted, "the native build runs whole nodes"
    marker = ir.GlobalVariable(module, I32, SATURATION_MARKER)
    marker.global_constant = True
    marker.initializer = c32(len(graph.nodes))
    with counting_module(module):
        return _generate(graph, module, True, parted)


def _generate(graph: Graph, module: ir.Module, counts: bool, parted: frozenset[int]) -> str:
    kernels: dict[str, ir.Function] = {}
    node_fns = []
    for index, node in progress.track(enumerate(graph.nodes), "generating LLVM IR per node", len(graph.nodes)):
        ranged = index in parted
        sig = _signature(graph, index, ranged)
        if sig not in kernels:
            n_args = 1 + len(node.inputs)
            fn = ir.Function(module, ir.FunctionType(I64 if counts else VOID, [PTR] * n_args + [I32, I32] * ranged),
                             f"k{len(kernels)}.{node.op}")
            fn.linkage = "internal"
            fn.attributes.add("nounwind")
            if ranged:
                setattr(fn, RANGE_ATTR, (fn.args[-2], fn.args[-1]))
            b = ir.IRBuilder(fn.append_basic_block("entry"))
            KERNELS[node.op](b, fn.args[0], list(fn.args[1:n_args]), graph.input_types(node), node.attrs,
                             graph.values[node.output].type)
            if counts:  # the kernel's count of saturated elements (0 if it has no counter)
                slot = counted_slot(fn)
                b.ret(b.zext(b.load(slot, typ=I32), I64) if slot is not None else ir.Constant(I64, 0))
            else:
                b.ret_void()
            kernels[sig] = fn
        nf = ir.Function(module, ir.FunctionType(VOID, [PTR]), f"node{index}")
        nf.linkage = "internal"
        nf.attributes.add("nounwind")
        b = ir.IRBuilder(nf.append_basic_block("entry"))
        table = nf.args[0]
        ptrs = [b.load(b.gep(table, [c32(v)], source_etype=PTR), typ=PTR) for v in [node.output, *node.inputs]]
        if ranged:  # the part's output region holds elements [lo, hi): the kernel indexes from 0
            n_values = len(graph.values)
            lo = b.load(b.gep(table, [c32(n_values)], source_etype=PTR), typ=I32)
            hi = b.load(b.gep(table, [c32(n_values + 1)], source_etype=PTR), typ=I32)
            hi = b.select(b.icmp_unsigned("==", hi, c32(0)), c32(graph.values[node.output].type.numel), hi)
            ptrs[0] = b.gep(ptrs[0], [b.sub(c32(0), lo)], source_etype=I32)
            ptrs += [lo, hi]
        n_sat = b.call(kernels[sig], ptrs)
        if counts:  # counts[index] += n_sat, counts = regions[n_values]
            counts_ptr = b.load(b.gep(table, [c32(len(graph.values))], source_etype=PTR), typ=PTR)
            cell = b.gep(counts_ptr, [c32(index)], source_etype=I64)
            b.store(b.add(b.load(cell, typ=I64), n_sat), cell)
        b.ret_void()
        node_fns.append(nf)

    task = ir.Function(module, ir.FunctionType(VOID, [PTR, I32]), TASK)
    task.attributes.add("nounwind")
    regions, which = task.args
    entry = task.append_basic_block("entry")
    whole = task.append_basic_block("whole")
    bad = task.append_basic_block("bad")
    b = ir.IRBuilder(entry)
    switch = b.switch(which, bad)
    switch.add_case(ir.Constant(I32, WHOLE_GRAPH), whole)
    for index, nf in enumerate(node_fns):
        blk = task.append_basic_block(f"node{index}")
        switch.add_case(c32(index), blk)
        b.position_at_end(blk)
        b.call(nf, [regions])
        b.ret_void()
    b.position_at_end(whole)
    for nf in node_fns:
        b.call(nf, [regions])
    b.ret_void()
    b.position_at_end(bad)
    trap = ir.Function(module, ir.FunctionType(VOID, []), "llvm.trap")
    b.call(trap, [])
    b.unreachable()
    text = str(module)
    # The codegen's text names no target; target.py sets the triple and data layout per target.
    return "\n".join(line for line in text.splitlines() if not line.startswith(("target triple", "target datalayout"))) + "\n"
