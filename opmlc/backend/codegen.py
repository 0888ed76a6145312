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

With `host_kernels` (the native build only), a node whose op has a host kernel
(opmlc/backend/kernels/native/) that accepts it gets that kernel instead of the portable one
(its function takes two more i32 arguments: `part`, `parts`; a node function passes 0, 1), and
the portable kernels divide through the FPU, exactly (kernels/_host.py), and
the module exports two more entry points for the native session's threads:

- `void task_span(ptr regions, i32 first, i32 end)`: nodes first..end-1 in order, one call;
- `void task_part(ptr regions, i32 node, i32 part, i32 parts)`: part `part` of `parts` of a
  node that `split_worth` splits (its saturation count added atomically: parts run at once);
  any other node runs whole as part 0, and its other parts do nothing;
- on x86-64 Linux, `task_team_worker`, `task_team_lead` and `task_team_stop`: a whole-graph run
  on the session's standing workers, which take parts of each split node as the calling thread
  opens it (backend/team.py);

and the edge functions that quantize the inputs into their buffers (opmlc/backend/edge.py).
The MIPS module is generated without them, so its text is what it was.

With `parted` (the MIPS program only; never with `host_kernels`), the nodes split into parts by
the step budget (opmlc/backend/parts.py) get ranged kernels: two more i32 arguments `lo`, `hi`,
the flat output elements the part computes (kernels/_ir.py `part_range`).
"""

from __future__ import annotations

import json
from contextlib import nullcontext

from llvmlite import ir

from opmlc import progress
from opmlc.backend import team
from opmlc.backend.edge import emit_edge
from opmlc.backend.kernels import KERNELS
from opmlc.backend.kernels._host import host_arithmetic
from opmlc.backend.kernels._ir import (
    ELEM,
    I32,
    I64,
    PTR,
    RANGE_ATTR,
    VOID,
    c32,
    counted_slot,
    counting_module,
    loop,
)
from opmlc.backend.kernels.native import host_kernel_for, node_facts, split_worth
from opmlc.ir.graph import Graph

TASK = "task"
WHOLE_GRAPH = 0xFFFFFFFF
SATURATION_MARKER = "opmlc.counts_saturation"  # opmlc.backend.target reads it by this name
TASK_SPAN = "task_span"  # host module only (module docstring)
TASK_PART = "task_part"


def _signature(graph: Graph, index: int, ranged: bool, facts: dict) -> str:
    node = graph.nodes[index]
    return json.dumps(
        [node.op, [str(t) for t in graph.input_types(node)], node.attrs, str(graph.values[node.output].type),
         ranged, facts],
        sort_keys=True,
    )


def generate_module(graph: Graph, count_saturation: bool = False, host_kernels: bool = False,
                    parted: frozenset[int] = frozenset()) -> str:
    """The LLVM IR text of `graph`'s program (no triple: opmlc/backend/target.py sets it).

    `count_saturation` adds the saturation counters of the native build, `host_kernels` its
    host-only kernels (module docstring).
    `parted`: the nodes split into parts (opmlc/backend/parts.py; the MIPS program only): their
    node functions read the part's flat output range [lo, hi) from the region table's entries
    n_values and n_values + 1 (hi = 0: the whole output) and call a ranged kernel.
    """
    assert not (parted and (count_saturation or host_kernels)), "the native build runs whole nodes"
    module = ir.Module(name=graph.name)
    with host_arithmetic(module) if host_kernels else nullcontext():
        if not count_saturation:
            return _generate(graph, module, False, host_kernels, parted)
        marker = ir.GlobalVariable(module, I32, SATURATION_MARKER)
        marker.global_constant = True
        marker.initializer = c32(len(graph.nodes))
        with counting_module(module):
            return _generate(graph, module, True, host_kernels, parted)


def _generate(graph: Graph, module: ir.Module, counts: bool, host_kernels: bool, parted: frozenset[int]) -> str:
    kernels: dict[str, tuple[ir.Function, bool]] = {}  # signature → (function, takes part/parts)
    node_fns, part_fns = [], {}
    ret = I64 if counts else VOID
    n_derived = 0  # derived buffers so far: regions[n_values + 1 + d] (kernels/native/__init__.py)
    for index, node in progress.track(enumerate(graph.nodes), "generating LLVM IR per node", len(graph.nodes)):
        ranged = index in parted
        host = host_kernel_for(graph, index) if host_kernels else None
        facts = node_facts(graph, index) if host is not None else {}
        derived = None
        if facts.get("derived"):
            derived, n_derived = len(graph.values) + 1 + n_derived, n_derived + 1
        sig = _signature(graph, index, ranged, facts)
        if sig not in kernels:
            n_args = 1 + len(node.inputs) + (derived is not None)
            # host kernels take [part, parts), ranged kernels [lo, hi): never both (generate_module)
            extra = [I32, I32] * (host is not None or ranged)
            fn = ir.Function(module, ir.FunctionType(ret, [PTR] * n_args + extra),
                             f"k{len(kernels)}.{node.op}")
            fn.linkage = "internal"
            fn.attributes.add("nounwind")
            if ranged:
                setattr(fn, RANGE_ATTR, (fn.args[-2], fn.args[-1]))
            b = ir.IRBuilder(fn.append_basic_block("entry"))
            kargs = (b, fn.args[0], list(fn.args[1:n_args]), graph.input_types(node), node.attrs,
                     graph.values[node.output].type)
            if host is not None:
                host.emit(*kargs, fn.args[n_args], fn.args[n_args + 1], **({"facts": facts} if host.facts else {}))
            else:
                KERNELS[node.op](*kargs)
            if counts:  # the kernel's count of saturated elements (0 if it has no counter)
                slot = counted_slot(fn)
                b.ret(b.zext(b.load(slot, typ=I32), I64) if slot is not None else ir.Constant(I64, 0))
            else:
                b.ret_void()
            kernels[sig] = (fn, host is not None)
        kernel_fn, takes_parts = kernels[sig]

        call = (module, graph, index, kernel_fn, takes_parts, counts, derived)
        node_fns.append(_node_function(*call, f"node{index}", with_parts=False, ranged=ranged))
        if host is not None and split_worth(graph, index):
            part_fns[index] = _node_function(*call, f"node{index}.part", with_parts=True, ranged=False)

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
    if host_kernels:
        _thread_entries(module, task, part_fns)
        emit_edge(module)
    text = str(module)
    # The codegen's text names no target; target.py sets the triple and data layout per target.
    return "\n".join(line for line in text.splitlines() if not line.startswith(("target triple", "target datalayout"))) + "\n"


def _node_function(module: ir.Module, graph: Graph, index: int, kernel_fn: ir.Function, takes_parts: bool,
                   counts: bool, derived: int | None, name: str, with_parts: bool, ranged: bool) -> ir.Function:
    """`void nodeK(ptr regions)`, or with_parts `void nodeK.part(ptr regions, i32 part, i32 parts)`
    (its count added atomically: a node's parts run at once); `ranged`: a split node of the MIPS
    program, whose part range [lo, hi) the region table holds (generate_module); `derived`: the
    region table entry of the node's derived buffer, passed after its operands."""
    node = graph.nodes[index]
    nf = ir.Function(module, ir.FunctionType(VOID, [PTR] + [I32, I32] * with_parts), name)
    nf.linkage = "internal"
    nf.attributes.add("nounwind")
    b = ir.IRBuilder(nf.append_basic_block("entry"))
    table = nf.args[0]
    ptrs = [b.load(b.gep(table, [c32(v)], source_etype=PTR), typ=PTR)
            for v in [node.output, *node.inputs, *([derived] if derived is not None else [])]]
    if takes_parts:
        ptrs += list(nf.args[1:3]) if with_parts else [c32(0), c32(1)]
    if ranged:  # the part's output region holds elements [lo, hi): the kernel indexes from 0
        n_values = len(graph.values)
        lo = b.load(b.gep(table, [c32(n_values)], source_etype=PTR), typ=I32)
        hi = b.load(b.gep(table, [c32(n_values + 1)], source_etype=PTR), typ=I32)
        hi = b.select(b.icmp_unsigned("==", hi, c32(0)), c32(graph.values[node.output].type.numel), hi)
        ptrs[0] = b.gep(ptrs[0], [b.sub(c32(0), lo)], source_etype=ELEM[graph.values[node.output].type.dtype])
        ptrs += [lo, hi]
    n_sat = b.call(kernel_fn, ptrs)
    if counts:  # counts[index] += n_sat, counts = regions[n_values]
        counts_ptr = b.load(b.gep(table, [c32(len(graph.values))], source_etype=PTR), typ=PTR)
        cell = b.gep(counts_ptr, [c32(index)], source_etype=I64)
        if with_parts:
            b.atomic_rmw("add", cell, n_sat, "monotonic")
        else:
            b.store(b.add(b.load(cell, typ=I64), n_sat), cell)
    b.ret_void()
    return nf


def _thread_entries(module: ir.Module, task: ir.Function, part_fns: dict[int, ir.Function]) -> None:
    """task_span and task_part (module docstring): what the native session's threads call."""
    span = ir.Function(module, ir.FunctionType(VOID, [PTR, I32, I32]), TASK_SPAN)
    span.attributes.add("nounwind")
    regions, first, end = span.args
    b = ir.IRBuilder(span.append_basic_block("entry"))
    with loop(b, b.sub(end, first), "span") as i:
        b.call(task, [regions, b.add(first, i)])
    b.ret_void()

    fn = ir.Function(module, ir.FunctionType(VOID, [PTR, I32, I32, I32]), TASK_PART)
    fn.attributes.add("nounwind")
    regions, which, part, parts = fn.args
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    whole = fn.append_basic_block("whole")
    done = fn.append_basic_block("done")
    switch = b.switch(which, whole)
    for index, pf in part_fns.items():
        blk = fn.append_basic_block(f"part{index}")
        switch.add_case(c32(index), blk)
        b.position_at_end(blk)
        b.call(pf, [regions, part, parts])
        b.ret_void()
    b.position_at_end(whole)  # not split: part 0 is the whole node
    first = fn.append_basic_block("first")
    b.cbranch(b.icmp_unsigned("==", part, c32(0)), first, done)
    b.position_at_end(first)
    b.call(task, [regions, which])
    b.ret_void()
    b.position_at_end(done)
    b.ret_void()
    if team.available():
        team.emit_team(module, task, fn, sorted(part_fns))
