"""Claims: what a server posts about a task, and the record of the dispute a wrong one leads to.

A claim file holds the claimant's value roots (every value of the graph), from which its output
root, its final trace state and every trace state the game can ask for follow. `opmlc claim`
writes one (honest, or tampered for tests and demos); `opmlc prove --claim` checks it and, if
it is wrong, computes the whole dispute off chain.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from opmlc.artifact import Build
from opmlc.dispute.commitment import input_proofs, model_commitment
from opmlc.dispute.graph_trace import GraphTrace, Tamper
from opmlc.dispute.native_trace import party_roots
from opmlc.dispute.offchain import hx, play
from opmlc.dispute.roles import Claimant, Verifier
from opmlc.errors import OpmlcError


def make_claim(build: Build, inputs: list[np.ndarray], tamper: Tamper | None = None) -> dict:
    trace = GraphTrace(build, party_roots(build, inputs, tamper))
    g = build.graph
    claim = {
        "model_id": hx(model_commitment(build).model_id()),
        "input_roots": [hx(trace.roots[v]) for v in g.inputs],
        "output_root": hx(trace.output_root),
        "final_trace": hx(trace.final),
        "value_roots": [hx(r) for r in trace.roots],
    }
    if hasattr(build, "generated_values"):  # a generation (dispute/generation.py): its token ids, for people
        from opmlc.dispute.generation_trace import generation_tracer

        ids = generation_tracer(build).generated  # as the trace just made them
        claim["generation"] = {"prompt_ids": [int(np.asarray(a).reshape(-1)[0]) for a in inputs],
                               "generated_ids": ids, "max_new_tokens": build.limit,
                               "stop_at_eos": build.stop_at_eos, "stopped": build.stopped(ids),
                               "steps": build.n_steps, "nodes_per_step": build.k}
    return claim


def read_claim(path: str | Path, build: Build) -> dict:
    path = Path(path)
    try:
        claim = json.loads(path.read_text())
        roots = [bytes.fromhex(r[2:]) for r in claim["value_roots"]]
    except FileNotFoundError:
        raise OpmlcError(f"{path}: no such file; write a claim with `opmlc claim`") from None
    except (ValueError, KeyError, TypeError, AttributeError):
        raise OpmlcError(f"{path}: not a claim (a JSON object with 0x-hex 'value_roots'); write one with `opmlc claim`") from None
    if len(roots) != len(build.graph.values) or any(len(r) != 32 for r in roots):
        raise OpmlcError(f"{path}: a claim for this model has {len(build.graph.values)} 32-byte value roots")
    if claim.get("model_id") not in (None, hx(model_commitment(build).model_id())):
        raise OpmlcError(f"{path}: the claim is for another model (model_id {claim.get('model_id')})")
    claim["_roots"] = roots
    return claim


def dispute_record(build: Build, inputs: list[np.ndarray], claim: dict) -> dict:
    """The dispute an honest challenger plays against `claim`, every move, as JSON."""
    roots = claim["_roots"]
    g = build.graph
    honest = GraphTrace(build, party_roots(build, inputs))
    if [roots[v] for v in g.inputs] != [honest.roots[v] for v in g.inputs]:
        raise OpmlcError("the claim is about other inputs than --input (its input roots differ)")
    if roots == honest.roots:
        stop = None
        if hasattr(build, "generated_values"):  # a generation: the trace is right, but is its length?
            from opmlc.dispute.generation_trace import generation_tracer

            stop = build.stop_error(generation_tracer(build).generated)
        if stop is not None:
            raise OpmlcError(f"the claim's trace is right, but it is not the generation asked for: {stop}")
        raise OpmlcError("the claim is correct: every value root matches this computation; nothing to dispute")
    claimant = Claimant(build, inputs, roots=roots)
    verifier = Verifier(build, inputs, roots=honest.roots)
    rec = play(claimant, verifier)
    trace0, in_proofs = input_proofs(build, [roots[v] for v in g.inputs])
    out_v = g.outputs[0]
    doc = {
        "model_id": hx(model_commitment(build).model_id()),
        "commitment": {k: (hx(v) if isinstance(v, bytes) else v)
                       for k, v in model_commitment(build).__dict__.items()},
        "request": {"input_roots": [hx(roots[v]) for v in g.inputs],
                    "input_proofs": [[hx(x) for x in p] for p in in_proofs], "trace0": hx(trace0)},
        "claim": {"output_root": hx(claimant.trace.output_root), "final_trace": hx(claimant.trace.final),
                  "output_proof": [hx(x) for x in claimant.trace.proof(len(g.nodes), out_v)]},
        "challenge": {"output_root": hx(honest.output_root), "final_trace": hx(honest.final),
                      "output_proof": [hx(x) for x in honest.proof(len(g.nodes), out_v)]},
        **rec.to_json(),
        "vm_steps_challenger": verifier.vm_steps,
    }
    return doc
