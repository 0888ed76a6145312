"""Phase 1 of a generation's dispute from the native build: the unrolled generation's trace
(opmlc/dispute/generation.py) computed step by step by the *step* build's native program
(docs/DESIGN.md "Generation: phase 1 natively").

Where it sits: between native_trace.NativeTracer (one forward pass of a build, streaming,
every value hashed as produced and freed after its last reader) and a party's roles: the
generation graph has no native program of its own, but each of its decoding steps is one run
of the step build. Step s runs with the step's graph inputs bound as the generation binds them
(the token: a prompt id or step s − 1's `next_token`; step s's mask constant; step s − 1's
present cache, zeros at s = 0), and the step's node roots are the generation's node roots
s·K … s·K + K − 1. Between steps the party holds only what a later step reads (the present
cache and the token, copied as the step left them: the arrays `opmlc generate --backend
native` passes on), so a party holds the weights memory-mapped plus one step's live values.

A lie (`Tamper` on generation node s·K + k) is step s's node k lied about; propagated, the
lie flows into later steps through the carried cache and token exactly as the interpreter's
`compute_values` over the unrolled graph has it; not propagated, only its root is the lie's.
The interpreter (engine "interp") stays the golden model: the tests hold the two traces equal
root for root.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from opmlc.commit import tensor_root
from opmlc.dispute.graph_trace import Tamper
from opmlc.dispute.native_trace import NativeTracer, tracer


class GenerationTracer:
    """The step build's NativeTracer run once per decoding step of a GenerationBuild."""

    def __init__(self, gb) -> None:
        self.gb = gb
        self.step: NativeTracer = tracer(gb.step)
        g, sg = gb.graph, gb.step.graph
        self.first, self.step_first = g.first_node_value, sg.first_node_value
        self.roots = {r["value"]: bytes.fromhex(r["root"][2:]) for r in gb.manifest["initializers"]}
        # per step: the generation value bound to each of the step's graph inputs
        self.step_inputs = [[inv[sv] for sv in sg.inputs]
                            for inv in ({sv: gv for gv, sv in b.items()} for b in gb._bound)]
        # the step's node outputs a later step reads (the present cache, next_token): carried
        self.carried = frozenset(self.step_first + (gv - self.first) % gb.k for s in range(1, gb.n_steps)
                                 for gv in self.step_inputs[s] if gv >= self.first)
        self.next_token = self.step_first + (gb.generated_values[0] - self.first) % gb.k
        self.generated: list[int] = []  # the last run's generated ids, as traced (a lie's included)

    def gen_value(self, s: int, sv: int) -> int:
        """The generation value of step s's node output `sv` (a step value)."""
        return self.first + s * self.gb.k + (sv - self.step_first)

    def run(self, inputs: list[np.ndarray], tamper: Tamper | None = None, upto: int | None = None,
            keep: frozenset[int] = frozenset(), saturated: dict[int, int] | None = None,
            hash_values: bool = True) -> tuple[list[bytes | None], dict[int, np.ndarray]]:
        """Generation nodes 0..upto-1 (all by default), as NativeTracer.run over the unrolled
        graph: every value's root (None where not computed or not hashed) and copies of the
        values in `keep` (generation values; an initializer is the generation's own array)."""
        gb = self.gb
        g, k_nodes = gb.graph, gb.k
        n = len(g.nodes) if upto is None else upto
        roots: list[bytes | None] = [None] * len(g.values)
        kept: dict[int, np.ndarray] = {}
        prompt = dict(zip(g.inputs, inputs, strict=True))
        for v, arr in prompt.items():
            arr = np.asarray(arr, dtype=g.values[v].type.dtype.numpy).reshape(g.values[v].type.shape)
            prompt[v] = arr
            if hash_values:
                roots[v] = tensor_root(arr, g.values[v].type)
            if v in keep:
                kept[v] = arr.copy()
        for v in g.initializers:
            if hash_values:
                roots[v] = self.roots[v]
            if v in keep:
                kept[v] = g.initializers[v]
        # the values a later step reads, as the step that made them left them (one step's worth)
        carry: dict[int, np.ndarray] = {}
        self.generated = []
        for s in range(gb.n_steps):
            lo = s * k_nodes
            if lo >= n:
                break
            step_in = []
            for gv in self.step_inputs[s]:
                if gv in prompt:
                    step_in.append(prompt[gv])
                elif gv in g.initializers:
                    step_in.append(g.initializers[gv])
                else:
                    step_in.append(carry[gv])
            lie = None
            if tamper is not None and lo <= tamper.node < lo + k_nodes:
                lie = replace(tamper, node=tamper.node - lo)
            want = set(self.carried)
            want.update(self.step_first + (v - self.first - lo) for v in keep
                        if lo <= v - self.first < lo + k_nodes)
            sat: dict[int, int] | None = {} if saturated is not None else None
            step_roots, step_kept = self.step.run(step_in, lie, min(k_nodes, n - lo), frozenset(want), sat,
                                                  hash_values, hash_inputs=False)
            if hash_values:
                roots[self.first + lo : self.first + lo + k_nodes] = step_roots[self.step_first:]
            if sat:
                saturated.update({lo + k: c for k, c in sat.items()})
            carry = {self.gen_value(s, sv): step_kept[sv] for sv in self.carried if sv in step_kept}
            kept.update({self.gen_value(s, sv): a for sv, a in step_kept.items()
                         if sv >= self.step_first and self.gen_value(s, sv) in keep})
            if s >= gb.n_prompt - 1 and self.next_token in step_kept:
                tok = step_kept[self.next_token]
                if lie is not None and not lie.propagate and lie.node == self.next_token - self.step_first:
                    tok = lie.apply(tok)  # claimed, though later steps read the honest token
                self.generated.append(int(tok.reshape(-1)[0]))
        return roots, kept


def generation_tracer(gb) -> GenerationTracer:
    """One GenerationTracer per GenerationBuild (the step build's NativeTracer is shared by every
    generation view of it: its program loaded and its weights bound once)."""
    t = gb.__dict__.get("_generation_tracer")
    if t is None:
        t = gb.__dict__["_generation_tracer"] = GenerationTracer(gb)
    return t
