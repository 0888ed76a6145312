"""A native session's shared activation memory (backend/buffer_plan.py): values share a slot only
when their lifetimes [writer, last reader] are disjoint (a reshape chain counted as one value);
inputs, outputs and initializers keep their own buffers; whole-graph runs, repeated runs and
one-node runs give the interpreter's bits."""

from __future__ import annotations

import numpy as np

from opmlc.backend.buffer_plan import shared_slots
from opmlc.backend.native import NativeSession, alias_of, native_program
from opmlc.ir.graph import GraphBuilder
from opmlc.ir.interpreter import run_graph
from opmlc.ir.types import DType, TensorType

FX = 20


def chain_graph():
    """Values of long and short lifetimes, reshape chains, an output in the middle, a weight."""
    b = GraphBuilder("chain")
    x = b.add_input("x", TensorType(DType.FX32, (4, 40), FX))
    w = b.add_initializer("w", np.arange(40, dtype=np.int32) << 12, TensorType(DType.FX32, (40,), FX))

    def add(p, q):
        return b.add_node("binary", [p, q], {"kind": "add", "frac": FX})

    def neg(p):
        return b.add_node("unary", [p], {"kind": "neg", "frac": FX})

    a = neg(x)  # read again at the end: a long lifetime
    s = add(a, x)
    c = b.add_node("reshape", [s], {"shape": [160]})  # s lives as long as c
    d = neg(c)
    e = add(d, d)
    b.mark_output(e)  # an output written in the middle: never overwritten
    f = b.add_node("reshape", [e], {"shape": [4, 40]})
    g = add(f, w)
    h = neg(add(g, a))
    k = neg(neg(h))
    r = b.add_node("reshape", [c], {"shape": [4, 40]})
    b.mark_output(add(k, r))
    return b.build()


def lifetimes(graph):
    aliases = alias_of(graph)

    def root(v):
        while v in aliases:
            v = aliases[v]
        return v

    first, last = {}, {}
    for i, node in enumerate(graph.nodes):
        first.setdefault(root(node.output), i)
        for v in node.inputs:
            last[root(v)] = i
    return root, first, last


def test_slots_hold_values_of_disjoint_lifetimes():
    g = chain_graph()
    slot_of, sizes = shared_slots(g, alias_of(g), [v.type.nbytes for v in g.values])
    fixed = set(g.inputs) | set(g.outputs) | set(g.initializers)
    assert not fixed & set(slot_of)
    assert len(sizes) < len({v for v in slot_of})  # something is shared
    root, first, last = lifetimes(g)
    by_slot = {}
    for v, s in slot_of.items():
        by_slot.setdefault(s, set()).add(root(v))
        assert g.values[v].type.nbytes <= sizes[s]
    for roots in by_slot.values():
        spans = sorted((first[r], max(last.get(r, first[r]), first[r])) for r in roots)
        assert all(a[1] < b[0] for a, b in zip(spans, spans[1:], strict=False)), spans
    # a reshape's output shares its input's slot (or, for an output's chain, no slot)
    for out, src in alias_of(g).items():
        assert slot_of.get(out) == slot_of.get(src)


def test_shared_buffers_give_the_interpreters_bits():
    g = chain_graph()
    session = NativeSession(native_program(g), g, threads=1)
    assert len({b.ctypes.data for v, b in enumerate(session.bufs) if v not in g.initializers}) < len(g.values) - 1
    rng = np.random.default_rng(3)
    xs = [rng.integers(-(2**26), 2**26, (4, 40)).astype(np.int32) for _ in range(3)]
    for x in xs + xs[::-1]:  # repeated runs over the same memory
        got = session.run([x])
        want = run_graph(g, [x])
        for v, o in zip(g.outputs, got, strict=True):
            np.testing.assert_array_equal(o, want[v])
    # one node at a time, its operands given (as the API's node runs give them)
    want = run_graph(g, [xs[0]])
    for k, node in enumerate(g.nodes):
        (o,) = session.run([xs[0]], node=k, values=want)
        np.testing.assert_array_equal(o, want[node.output])
