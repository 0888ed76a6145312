"""Which activations of a native session may share memory (backend/native.py NativeSession).

A whole-graph run writes every value once, in node order, and a value is read only by nodes
after the one that writes it; once its last reader has run, its memory may hold a later value.
Giving each value its own buffer made tiny_gpt2's activations ~1 MB, as much again as its
weights: a run streamed them through the caches, while onnxruntime reuses a small arena. Here
two values share a slot when their lifetimes [writer, last reader] do not overlap, so a run
touches a few slots that stay in the first cache levels.

Not shared (each keeps a buffer of its own): the graph's inputs and outputs (a caller copies
them in and out around a run; a later node must not overwrite an output) and initializers. A
reshape's output is its input's memory (native.alias_of), so such a chain is one group whose
lifetime runs to its last member's last reader. Only a whole-graph run (or a span of it, in
node order) relies on this: a one-node run is given each operand's value before it runs
(NativeSession.run with `values`), and a node's operands and output are all live at that node,
so they never share a slot.
"""

from __future__ import annotations

from opmlc.ir.graph import Graph


def shared_slots(graph: Graph, aliases: dict[int, int], nbytes: list[int | None]
                 ) -> tuple[dict[int, int], list[int]]:
    """({value: slot} for the values that share memory, [bytes of each slot]). `aliases`:
    {reshape output: its input} (native.alias_of); `nbytes`: each value's buffer size, None for
    one that keeps its own buffer (e.g. a packed layout)."""
    def root(v: int) -> int:
        while v in aliases:
            v = aliases[v]
        return v

    fixed = set(graph.inputs) | set(graph.outputs) | set(graph.initializers)
    fixed |= {v for v, n in enumerate(nbytes) if n is None}
    writer: dict[int, int] = {}
    for i, node in enumerate(graph.nodes):
        writer.setdefault(node.output, i)
    members: dict[int, list[int]] = {}
    for v in range(len(graph.values)):
        members.setdefault(root(v), []).append(v)
    last: dict[int, int] = {}  # group root → index of the last node reading any member
    for i, node in enumerate(graph.nodes):
        for v in node.inputs:
            last[root(v)] = i
    groups = {r: vs for r, vs in members.items()
              if r in writer and not any(v in fixed for v in vs)}

    slot_of: dict[int, int] = {}
    sizes: list[int] = []
    free_after: list[int] = []  # slot → the last node reading its current group
    for i, node in enumerate(graph.nodes):
        r = node.output
        if r not in groups or writer[r] != i:
            continue
        need = max(nbytes[v] for v in groups[r])
        end = max(last.get(r, i), i)
        # a slot whose group's last reader ran before this node; the closest size first
        free = [s for s in range(len(sizes)) if free_after[s] < i]
        if free:
            s = min(free, key=lambda s: (sizes[s] < need, abs(sizes[s] - need)))
            sizes[s] = max(sizes[s], need)
        else:
            s = len(sizes)
            sizes.append(need)
            free_after.append(end)
        free_after[s] = end
        for v in groups[r]:
            slot_of[v] = s
    return slot_of, sizes


__all__ = ["shared_slots"]
