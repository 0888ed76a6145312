"""The three parties of opML as Python objects: Requester, Server, Challenger.

Each acts from its own account on a Deployment. A party keeps what it cannot re-derive (the
tasks it handles: their inputs and, for tests and demos, how it lies) in its own SQLite file,
and reads everything else from the chain (`getGame`), so a party that is stopped mid-game and
started again from the same file carries on where the game is. `act(game_id)` makes at most
one move: the one the game waits for, if it is this party's, or a `timeout` once the other
party's clock is spent.
"""

from __future__ import annotations

import io
import json
import sqlite3
from dataclasses import asdict
from pathlib import Path

import numpy as np
from web3.logs import DISCARD

from opmlc.api import quantize_inputs
from opmlc.artifact import Build
from opmlc.commit import tensor_root
from opmlc.dispute.commitment import input_proofs, model_commitment
from opmlc.dispute.graph_trace import Tamper
from opmlc.dispute.onchain import Deployment, GameView, Phase
from opmlc.dispute.roles import Claimant, Verifier
from toolchain.errors import ContractReverted


class PartyStore:
    """A party's own state: per task, its (quantized) inputs and its behaviour."""

    def __init__(self, path: str | Path | None) -> None:
        self.db = sqlite3.connect(":memory:" if path is None else str(path))
        self.db.execute("CREATE TABLE IF NOT EXISTS tasks (task_id INTEGER PRIMARY KEY, inputs BLOB, config TEXT)")
        self.db.commit()

    def put(self, task_id: int, inputs: list[np.ndarray], config: dict) -> None:
        buf = io.BytesIO()
        np.savez(buf, *inputs)
        self.db.execute("INSERT OR REPLACE INTO tasks VALUES (?, ?, ?)", (task_id, buf.getvalue(), json.dumps(config)))
        self.db.commit()

    def get(self, task_id: int) -> tuple[list[np.ndarray], dict] | None:
        row = self.db.execute("SELECT inputs, config FROM tasks WHERE task_id = ?", (task_id,)).fetchone()
        if row is None:
            return None
        arrays = np.load(io.BytesIO(row[0]))
        return [arrays[f"arr_{i}"] for i in range(len(arrays.files))], json.loads(row[1])


class Party:
    role = "party"

    def __init__(self, deployment: Deployment, account: str, build: Build, db: str | Path | None = None) -> None:
        self.d = deployment
        self.account = account
        self.build = build
        self.store = PartyStore(db)
        self.moves = 0

    def send(self, fn, value: int = 0) -> dict:
        receipt = self.d.send(self.role, self.account, fn, value)
        self.moves += 1
        return receipt

    @property
    def gas(self) -> int:
        return self.d.gas_by.get(self.role, 0)

    stop_after: int | None = None

    def act(self, game_id: int) -> bool:
        """Make at most one move in game `game_id`; whether one was made."""
        if self.stop_after is not None and self.moves >= self.stop_after:
            return False  # a stopped party (tests, demo): it must lose on time
        g = self.d.game(game_id)
        if self.timeout_if_due(game_id, g):
            return True
        if g.mover != self.role:
            return False
        return self.move(game_id, g)

    def move(self, game_id: int, g: GameView) -> bool:
        """This party's move in a game that waits for it."""
        raise NotImplementedError

    def timeout_if_due(self, game_id: int, g: GameView) -> bool:
        """Claim the game when the other party's clock has run out."""
        if g.mover in ("none", self.role):
            return False
        left = g.server_clock if g.mover == "server" else g.challenger_clock
        if self.d.now() - g.turn_started_at <= left:
            return False
        self.send(self.d.registry.functions.timeout(game_id))
        return True


class Requester(Party):
    role = "requester"

    def register(self) -> bytes:
        c = model_commitment(self.build)
        self.send(self.d.registry.functions.registerModel(c.as_tuple()))
        return c.model_id()

    def request(self, inputs: list[np.ndarray]) -> int:
        """Ask for inference on float inputs; returns the task id."""
        q = quantize_inputs(self.build, inputs)
        g = self.build.graph
        roots = [tensor_root(a, g.values[v].type) for v, a in zip(g.inputs, q, strict=True)]
        _, proofs = input_proofs(self.build, roots)
        receipt = self.send(self.d.registry.functions.requestInference(model_commitment(self.build).model_id(),
                                                                       roots, proofs))
        (event,) = self.d.registry.events.InferenceRequested().process_receipt(receipt, errors=DISCARD)
        return int(event["args"]["taskId"])


class Server(Party):
    """Computes results, submits them with their backing (the stakes of the games it may have to
    play), and defends them.

    `tamper` makes it post a wrong result (for tests and the demo); `stop_after` makes it stop
    moving after that many moves (a crashed server, which must lose on time).
    """

    role = "server"

    def __init__(self, *args, tamper: Tamper | None = None, stop_after: int | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.tamper = tamper
        self.stop_after = stop_after
        self._claimants: dict[int, Claimant] = {}

    def claimant(self, task_id: int) -> Claimant:
        if task_id not in self._claimants:
            inputs, config = self.store.get(task_id)
            tamper = Tamper(**config["tamper"]) if config.get("tamper") else None
            self._claimants[task_id] = Claimant(self.build, inputs, tamper)
        return self._claimants[task_id]

    def submit(self, task_id: int, inputs: list[np.ndarray]) -> None:
        q = quantize_inputs(self.build, inputs)
        self.store.put(task_id, q, {"tamper": asdict(self.tamper) if self.tamper else None})
        c = self.claimant(task_id)
        proof = c.trace.proof(c.trace.n_nodes, self.build.graph.outputs[0])
        self.send(self.d.registry.functions.submitResult(task_id, c.trace.output_root, c.trace.final, proof),
                  self.d.backing)

    def move(self, game_id: int, g: GameView) -> bool:
        c = self.claimant(g.task_id)
        f = self.d.registry.functions
        if g.phase is Phase.BISECT_TRACE:
            self.send(f.bisectTrace(game_id, c.trace_at(g.mid)))
        elif g.phase is Phase.START_NODE and c.infos[g.lo].parts_log2:  # a split node: descend to a part
            self.send(f.splitNode(game_id, *c.split_node(g.lo)))
        elif g.phase is Phase.BISECT_PART:
            self.send(f.bisectPart(game_id, *c.bisect_part(g.node, g.part_depth, g.part)))
        elif g.phase is Phase.START_PART:
            sp = c.start_part(g.node, g.part)
            self.send(f.startPart(game_id, sp.info.as_tuple(), sp.node_proof, (sp.part_base, sp.out_proof),
                                  sp.input_roots, sp.input_proofs, sp.splice_proofs, sp.final_state,
                                  sp.out_region_proof, sp.log2_steps))
        elif g.phase is Phase.START_NODE:
            sn = c.start_node(g.lo)
            self.send(f.startNode(game_id, sn.info.as_tuple(), sn.node_proof, sn.out_root, sn.out_proof,
                                  sn.input_roots, sn.input_proofs, sn.splice_proofs, sn.final_state,
                                  sn.out_region_proof, sn.log2_steps))
        elif g.phase is Phase.BISECT_STEP:
            self.send(f.bisectStep(game_id, c.step_hash(g.node, g.mid, g.task_part)))
        return True


class Challenger(Party):
    """Recomputes every result it is shown, disputes those that differ, and plays to the end.

    For tests and the demo it can lie: `tamper` makes it believe (and dispute with) a wrong
    value, `moves` "random" answers bisections at random, "bad-proof" corrupts the last proof;
    `stop_after` makes it stop moving.
    """

    role = "challenger"

    def __init__(self, *args, tamper: Tamper | None = None, moves: str = "honest",
                 stop_after: int | None = None, seed: int = 0, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.tamper, self.move_style, self.stop_after, self.seed = tamper, moves, stop_after, seed
        self._verifiers: dict[int, Verifier] = {}

    def verifier(self, task_id: int) -> Verifier:
        if task_id not in self._verifiers:
            inputs, config = self.store.get(task_id)
            tamper = Tamper(**config["tamper"]) if config.get("tamper") else None
            self._verifiers[task_id] = Verifier(self.build, inputs, tamper, moves=config["moves"], seed=config["seed"])
        return self._verifiers[task_id]

    def check(self, task_id: int, inputs: list[np.ndarray]) -> int | None:
        """Recompute task `task_id`'s result; challenge it, with one stake, if it differs.
        Returns the game id (None when the result is right). While every backed game of the
        result is open the contract refuses the challenge (ContractReverted `NoBackingLeft`):
        the window is paused meanwhile, so calling again once a game ends is in time."""
        q = quantize_inputs(self.build, inputs)
        self.store.put(task_id, q, {"tamper": asdict(self.tamper) if self.tamper else None,
                                    "moves": self.move_style, "seed": self.seed})
        v = self.verifier(task_id)
        task = self.d.task(task_id)
        if bytes(task["final_trace"]) == v.trace.final:
            return None
        proof = v.trace.proof(v.trace.n_nodes, self.build.graph.outputs[0])
        receipt = self.send(self.d.registry.functions.challenge(task_id, v.trace.output_root, v.trace.final, proof),
                            self.d.stake)
        (event,) = self.d.registry.events.Challenged().process_receipt(receipt, errors=DISCARD)
        return int(event["args"]["gameId"])

    def move(self, game_id: int, g: GameView) -> bool:
        v = self.verifier(g.task_id)
        f = self.d.registry.functions
        if g.phase is Phase.RESPOND_TRACE:
            self.send(f.respondTrace(game_id, v.agree_trace(g.mid, bytes(g.mid_hash))))
        elif g.phase is Phase.RESPOND_PART:
            self.send(f.respondPart(game_id, v.pick_part(g.node, g.part_depth, g.part, bytes(g.mid_hash),
                                                         bytes(g.right_hash))))
        elif g.phase is Phase.RESPOND_STEP:
            self.send(f.respondStep(game_id, v.agree_step(g.node, g.mid, bytes(g.mid_hash), g.task_part)))
        elif g.phase is Phase.PROVE_STEP:
            pre, proof = v.prove_step(g.node, g.lo, g.task_part)
            try:
                self.send(f.proveStep(game_id, pre, proof))
            except ContractReverted:
                return False  # a proof the contract rejects is no move: the clock keeps running
        return True
