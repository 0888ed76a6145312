"""A finished dispute game read back from the chain: every move with its gas and the clocks.

Where it sits: after opmlc/dispute/session.py has played a game (`opmlc demo --record FILE`),
this reads the game's events and their transactions' receipts and writes one JSON document that
`opmlc report` draws (opmlc/report.py). It is the only place that knows the events' names and
fields for that purpose, so that a change of the contract's events is adapted here alone.
"""

from __future__ import annotations

from typing import Any

from opmlc.dispute.onchain import Deployment

RECORD_KIND = "opmlc-game"

# The game's events, each with the move (the contract function) that emits it.
MOVE_EVENTS = {
    "GameStarted": "challenge",
    "TraceBisected": "bisectTrace",
    "TraceResponded": "respondTrace",
    "NodeStarted": "startNode",
    "NodeSplit": "splitNode",
    "PartBisected": "bisectPart",
    "PartResponded": "respondPart",
    "PartStarted": "startPart",
    "StepBisected": "bisectStep",
    "StepResponded": "respondStep",
    "StepProven": "proveStep",
    "GameEnded": "timeout",  # only when no other event of its transaction names the move
}
REASONS = {0: "none", 1: "step proven", 2: "timeout"}
# A move's phase: 1 bisects over nodes, PARTS descends a split node's output tree to one part,
# 2 bisects over VM steps, 3 settles (proveStep or a timeout).
PARTS = "parts"


def _game_state(d: Deployment, game_id: int, block: int) -> tuple[int, int]:
    """The parties' clocks (seconds left) as of the end of `block`."""
    raw = d.registry.functions.getGame(game_id).call(block_identifier=block)
    return int(raw[10]), int(raw[11])


def game_record(d: Deployment, game_id: int, n_nodes: int, **about: Any) -> dict:
    """The JSON record of game `game_id`: one entry per transaction that moved it, in order.

    Each move has the party that sent it, its name, its phase, the interval it left (phase 1
    over nodes, phase "parts" over a split node's parts, phase 2 over steps), the gas the
    transaction used, the block's timestamp and both clocks after it. `rounds` counts each
    phase's rounds. `about` (model, chain, …) is copied into the record.
    """
    final = d.game(game_id)
    logs = []
    for name in MOVE_EVENTS:
        for ev in d.events(name, gameId=game_id):
            logs.append((int(ev["blockNumber"]), int(ev["logIndex"]), name, ev))
    logs.sort(key=lambda x: (x[0], x[1]))

    moves: list[dict] = []
    by_tx: dict[bytes, dict] = {}
    lo, hi, log2_steps, parts_log2 = 0, n_nodes, None, None
    eth = d.chain.w3.eth
    for block, _, name, ev in logs:
        tx = bytes(ev["transactionHash"])
        args = ev["args"]
        move = by_tx.get(tx)
        if move is None:
            receipt = eth.get_transaction_receipt(tx)
            sender = receipt["from"]
            party = ("challenger" if sender == final.challenger else "server" if sender == final.server
                     else "anyone")
            server_clock, challenger_clock = _game_state(d, game_id, block)
            move = {"move": MOVE_EVENTS[name], "party": party, "phase": None, "gas": int(receipt["gasUsed"]),
                    "block": block, "timestamp": int(eth.get_block(block)["timestamp"]),
                    "server_clock": server_clock, "challenger_clock": challenger_clock}
            by_tx[tx] = move
            moves.append(move)
        if name == "GameStarted":
            move.update(phase=1, lo=lo, hi=hi)
        elif name == "TraceBisected":
            move.update(move="bisectTrace", phase=1, lo=lo, hi=hi, mid=int(args["mid"]))
        elif name == "TraceResponded":
            lo, hi = int(args["lo"]), int(args["hi"])
            move.update(move="respondTrace", phase=1, agree=bool(args["agree"]), lo=lo, hi=hi)
        elif name == "NodeStarted":
            log2_steps = int(args["log2Steps"])
            lo, hi = 0, 1 << log2_steps
            move.update(move="startNode", phase=2, node=int(args["node"]), lo=lo, hi=hi)
        elif name == "NodeSplit":
            # a split node's descent to one part, its own phase between nodes and steps
            # (DESIGN.md "Tasks: the step budget and node parts"): the interval is over parts
            parts_log2 = int(args["partsLog2"])
            lo, hi = 0, 1 << parts_log2
            move.update(move="splitNode", phase=PARTS, node=int(args["node"]), parts_log2=parts_log2, lo=lo, hi=hi)
        elif name == "PartBisected":
            move.update(move="bisectPart", phase=PARTS, depth=int(args["depth"]), lo=lo, hi=hi, mid=(lo + hi) // 2)
        elif name == "PartResponded":
            # after `depth` rounds the disputed subtree is `part` at that depth: parts [lo, hi)
            depth, part = int(args["depth"]), int(args["part"])
            shift = parts_log2 - depth
            lo, hi = part << shift, (part + 1) << shift
            move.update(move="respondPart", phase=PARTS, right=bool(args["right"]), depth=depth, part=part, lo=lo,
                        hi=hi)
        elif name == "PartStarted":
            log2_steps = int(args["log2Steps"])
            lo, hi = 0, 1 << log2_steps
            move.update(move="startPart", phase=2, node=int(args["node"]), part=int(args["part"]), lo=lo, hi=hi)
        elif name == "StepBisected":
            move.update(move="bisectStep", phase=2, lo=lo, hi=hi, mid=int(args["mid"]))
        elif name == "StepResponded":
            lo, hi = int(args["lo"]), int(args["hi"])
            move.update(move="respondStep", phase=2, agree=bool(args["agree"]), lo=lo, hi=hi)
        elif name == "StepProven":
            move.update(move="proveStep", phase=3, step=int(args["step"]), lo=lo, hi=hi)
        elif name == "GameEnded" and move["phase"] is None:
            move.update(phase=3, lo=lo, hi=hi)
    return {
        "kind": RECORD_KIND,
        **about,
        "game": game_id,
        "task": int(final.task_id),
        "n_nodes": n_nodes,
        "winner": final.winner,
        "reason": REASONS.get(int(final.reason), str(final.reason)),
        "node": int(final.node) if log2_steps is not None else None,
        "log2_steps": log2_steps,
        "step": int(final.lo) if log2_steps is not None else None,
        "part": final.task_part,
        "parts_log2": parts_log2,
        "rounds": {"nodes": sum(m["move"] == "respondTrace" for m in moves),
                   "parts": sum(m["move"] == "respondPart" for m in moves),
                   "steps": sum(m["move"] == "respondStep" for m in moves)},
        "gas_total": sum(m["gas"] for m in moves),
        "moves": moves,
    }
