"""The whole dispute computed off chain: a model of the game that mirrors DisputeGame.sol.

`play` runs the phases between a Claimant and a Verifier exactly as the contract sequences
them (same midpoints, same hand-off, same last step) and records every move, so that
`opmlc prove --claim` can show a user the dispute a wrong claim leads to, and the record can be
replayed on chain move for move.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from opmlc import progress
from opmlc.dispute.roles import Claimant, StartNode, Verifier
from vm.state import state_hash
from vm.step import step as vm_step  # noqa: F401  (kept for readers: proveStep runs this)
from vm.witness import StepWitness


def hx(b: bytes) -> str:
    return "0x" + b.hex()


@dataclass
class DisputeRecord:
    phase1: list[dict] = field(default_factory=list)
    node: int | None = None
    start_node: StartNode | None = None
    parts: list[dict] = field(default_factory=list)  # a split node's descent to one part
    phase2: list[dict] = field(default_factory=list)
    step: int | None = None
    pre_state: bytes = b""
    proof: bytes = b""
    post_hash: bytes = b""  # the step's true post-state hash (what MIPS.step returns)
    claimed_post_hash: bytes = b""
    winner: str = ""

    def to_json(self) -> dict:
        return {
            "winner": self.winner,
            "rounds_phase1": len(self.phase1),
            "rounds_phase2": len(self.phase2),
            "phase1": self.phase1,
            "node": self.node,
            "start_node": self.start_node.to_json() if self.start_node else None,
            **({"parts": self.parts} if self.parts else {}),
            "phase2": self.phase2,
            "step": self.step,
            "final_step": {"pre_state": hx(self.pre_state), "proof": hx(self.proof),
                           "post_hash": hx(self.post_hash), "claimed_post_hash": hx(self.claimed_post_hash)},
        }


def bisect(lo: int, hi: int, claim, agree, log: list[dict]) -> tuple[int, int]:
    """The game's bisection: the claimant posts at the midpoint, the verifier agrees or not."""
    with progress.task(f"bisecting {lo}–{hi}", total=(hi - lo - 1).bit_length()) as bar:
        while hi - lo > 1:
            mid = (lo + hi) // 2
            claimed = claim(mid)
            ok = agree(mid, claimed)
            log.append({"lo": lo, "hi": hi, "mid": mid, "claim": hx(claimed), "agree": ok})
            lo, hi = (mid, hi) if ok else (lo, mid)
            bar.update(completed=len(log), description=f"bisecting: {lo:,}–{hi:,} left")
    return lo, hi


def play(claimant: Claimant, verifier: Verifier) -> DisputeRecord:
    rec = DisputeRecord()
    n = claimant.trace.n_nodes
    lo, _ = bisect(0, n, claimant.trace_at, verifier.agree_trace, rec.phase1)
    rec.node = lo
    k = lo
    part = None
    p = claimant.infos[k].parts_log2
    if p:  # a split node: descend its output tree to the disputed part (splitNode … respondPart)
        part = 0
        for depth in range(p):
            left, right = claimant.bisect_part(k, depth, part)
            go_right = verifier.pick_part(k, depth, part, left, right)
            rec.parts.append({"depth": depth, "left": hx(left), "right": hx(right), "right_chosen": go_right})
            part = 2 * part + go_right
        rec.start_node = claimant.start_part(k, part)
    else:
        rec.start_node = claimant.start_node(lo)
    lo, hi = bisect(0, 1 << rec.start_node.log2_steps, lambda i: claimant.step_hash(k, i, part),
                    lambda i, h: verifier.agree_step(k, i, h, part), rec.phase2)
    rec.step = lo
    rec.pre_state, rec.proof = verifier.prove_step(k, lo, part)
    rec.claimed_post_hash = claimant.step_hash(k, hi, part)
    if state_hash(rec.pre_state) != claimant.step_hash(k, lo, part):
        rec.winner = "server"  # the challenger cannot show the agreed pre-state: it runs out of time
        return rec
    witness = StepWitness.from_json(verifier.node_run(k, part).witness(lo).to_json())
    rec.post_hash = witness.post_hash
    if verifier.moves == "bad-proof":
        rec.winner = "server"  # the contract rejects the proof; the challenger's clock runs out
    else:
        rec.winner = "challenger" if rec.post_hash != rec.claimed_post_hash else "server"
    return rec
