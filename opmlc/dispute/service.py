"""`opmlc serve` and `opmlc watch`: a server and a challenger that run for days against a chain.

Where it sits: on top of the parties (opmlc/dispute/parties.py), which know how to make one move,
and a recorded deployment (opmlc/dispute/deployment.py). Modelled on op-challenger: one loop that

1. reads the registry's events from a persisted block cursor (never from block 0 again) into its
   own SQLite tables (tasks and games it cares about), then advances the cursor, in one commit;
2. acts on every open item, each action idempotent because it first reads the chain's state
   (a task already answered is not answered twice, a game makes only the move it waits for);
3. logs one line per event seen and per decision taken, and sleeps `poll` seconds.

A kill at any moment loses nothing: an item enters the database before the action on it, and an
action that was sent but not recorded shows up again as an event from the cursor on (our own
`ResultSubmitted` or `Challenged`), or as the chain's state the next action reads. The parties
keep their own per-task state (inputs, behaviour) in the same database file.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

from opmlc.artifact import Build
from opmlc.dispute.commitment import model_commitment
from opmlc.dispute.deployment import DeploymentFile, InputStore
from opmlc.dispute.graph_trace import Tamper
from opmlc.dispute.onchain import Deployment, GameView, Phase
from opmlc.dispute.parties import Challenger, Party, Server
from opmlc.errors import OpmlcError
from toolchain.errors import ChainError, ContractReverted

BLOCKS_PER_SCAN = 2000  # eth_getLogs ranges hosted nodes accept
MOVES_PER_PASS = 64  # moves in one game before the loop looks at other items again
REASONS = {1: "step proven", 2: "timeout"}
TASK_STATUS = {0: "none", 1: "requested", 2: "submitted", 3: "rejected", 4: "finalized"}

SCHEMA = """
CREATE TABLE IF NOT EXISTS service_meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS service_tasks (task_id INTEGER PRIMARY KEY, model_id TEXT, roots TEXT, state TEXT);
CREATE TABLE IF NOT EXISTS service_games (game_id INTEGER PRIMARY KEY, task_id INTEGER, state TEXT);
"""


def utc_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def describe_move(g: GameView) -> str:
    """The move a game waits for, as a log line says it."""
    return {
        Phase.BISECT_TRACE: f"phase 1 bisectTrace: trace state {g.mid} of [{g.lo}, {g.hi}]",
        Phase.RESPOND_TRACE: f"phase 1 respondTrace: trace state {g.mid} of [{g.lo}, {g.hi}]",
        Phase.START_NODE: f"hand-off startNode: node {g.lo}",
        Phase.BISECT_STEP: f"phase 2 bisectStep: node {g.node}, VM step {g.mid} of [{g.lo}, {g.hi}]",
        Phase.RESPOND_STEP: f"phase 2 respondStep: node {g.node}, VM step {g.mid} of [{g.lo}, {g.hi}]",
        Phase.PROVE_STEP: f"phase 3 proveStep: node {g.node}, VM step {g.lo} run by MIPS.sol",
    }.get(g.phase, g.phase.name)


def ether(wei: int) -> str:
    return f"{wei / 10**18:g} ETH"


class Service:
    """The loop shared by `serve` and `watch`; subclasses say which events and actions."""

    role = "service"
    party_class: type[Party] = Party

    def __init__(self, d: Deployment, info: DeploymentFile, builds: list[Build], account: str,
                 db: str | Path | None = None, store: InputStore | None = None,
                 say: Callable[[str], None] = print, poll: float = 2.0, **party_kwargs) -> None:
        if not builds:
            raise OpmlcError(f"{self.role}: name at least one build directory")
        self.d, self.info, self.account, self.poll = d, info, account, poll
        self.store = store or InputStore(info.store_dir())
        self._say = say
        try:
            self.db = sqlite3.connect(":memory:" if db is None else str(db), timeout=30)
            self.db.executescript(SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise OpmlcError(f"--db {db}: not a database this service can use ({exc})") from None
        self._check_owner(db)
        self.models: dict[bytes, Build] = {}
        self.parties: dict[bytes, Party] = {}
        for b in builds:
            mid = model_commitment(b).model_id()
            self.models[mid] = b
            self.parties[mid] = self.party_class(d, account, b, db=db, **party_kwargs)
        self._said: set[object] = set()  # conditions already logged (say_once)
        self.stopping = threading.Event()  # set (by a signal handler) to end `run` after the current action
        self.stop_reason: str | None = None

    # ---- bookkeeping ------------------------------------------------------------------------

    def say(self, msg: str) -> None:
        self._say(f"{utc_now()} {self.role} {msg}")

    def say_once(self, key: object, msg: str) -> None:
        """Log a condition that may last many passes only the first time."""
        if key not in self._said:
            self._said.add(key)
            self.say(msg)

    def _meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM service_meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def _check_owner(self, db) -> None:
        """One database belongs to one role, account and registry: refuse to mix them."""
        owner = json.dumps({"role": self.role, "account": self.account, "registry": self.d.registry.address,
                            "chain_id": self.info.chain_id})
        have = self._meta("owner")
        if have is None:
            self.db.execute("INSERT INTO service_meta VALUES ('owner', ?)", (owner,))
            self.db.commit()
        elif have != owner:
            raise OpmlcError(f"database {db} belongs to another service ({have}); pass another --db FILE")

    @property
    def cursor(self) -> int:
        """The last block whose events are in the database."""
        value = self._meta("cursor")
        return self.info.first_block - 1 if value is None else int(value)

    def model_name(self, mid: bytes) -> str:
        return Path(self.models[mid].manifest["model"]["file"]).name

    def tasks(self, state: str) -> list[tuple[int, bytes, list[bytes]]]:
        rows = self.db.execute("SELECT task_id, model_id, roots FROM service_tasks WHERE state = ? ORDER BY task_id",
                               (state,)).fetchall()
        return [(t, bytes.fromhex(m), [bytes.fromhex(r) for r in json.loads(roots)]) for t, m, roots in rows]

    def task_state(self, task_id: int) -> str | None:
        row = self.db.execute("SELECT state FROM service_tasks WHERE task_id = ?", (task_id,)).fetchone()
        return None if row is None else row[0]

    def set_task(self, task_id: int, state: str) -> None:
        self.db.execute("UPDATE service_tasks SET state = ? WHERE task_id = ?", (state, task_id))
        self.db.commit()

    def add_game(self, game_id: int, task_id: int) -> bool:
        cur = self.db.execute("INSERT OR IGNORE INTO service_games VALUES (?, ?, 'open')", (game_id, task_id))
        return cur.rowcount == 1

    def party_of(self, task_id: int) -> Party:
        row = self.db.execute("SELECT model_id FROM service_tasks WHERE task_id = ?", (task_id,)).fetchone()
        return self.parties[bytes.fromhex(row[0])]

    # ---- the loop ---------------------------------------------------------------------------

    def run(self) -> None:
        """Loop until `stopping` is set (SIGINT/SIGTERM in the CLI)."""
        models = ", ".join(f"{self.model_name(m)} (0x{m.hex()[:12]}…)" for m in self.models)
        self.say(f"started: account {self.account}, registry {self.d.registry.address} on chain "
                 f"{self.info.chain_id}, models {models}, from block {self.cursor + 1}")
        while not self.stopping.is_set():
            try:
                self.step()
            except (ChainError, OpmlcError) as exc:  # a node hiccup: say so and try again
                self.say(f"error: {exc}; retrying in {self.poll:g} s")
            self.stopping.wait(self.poll)
        self.say(f"stopped ({self.stop_reason})" if self.stop_reason else "stopped")

    def step(self) -> None:
        """One pass: new events into the database, then every open item acted on."""
        latest = int(self.d.chain.w3.eth.block_number)
        while self.cursor < latest and not self.stopping.is_set():
            lo = self.cursor + 1
            hi = min(latest, lo + BLOCKS_PER_SCAN - 1)
            self.scan(lo, hi)
            self.db.execute("INSERT OR REPLACE INTO service_meta VALUES ('cursor', ?)", (str(hi),))
            self.db.commit()  # the events of [lo, hi] and the cursor past them, together
        if not self.stopping.is_set():
            self.work()

    def logs(self, event: str, lo: int, hi: int) -> list:
        ev = getattr(self.d.registry.events, event)
        return sorted(ev.get_logs(from_block=lo, to_block=hi), key=lambda e: (e["blockNumber"], e["logIndex"]))

    def scan_requests(self, lo: int, hi: int) -> None:
        for ev in self.logs("InferenceRequested", lo, hi):
            a = ev["args"]
            mid = bytes(a["modelId"])
            if mid not in self.models:
                continue
            roots = json.dumps([bytes(r).hex() for r in a["inputRoots"]])
            cur = self.db.execute("INSERT OR IGNORE INTO service_tasks VALUES (?, ?, ?, 'requested')",
                                  (int(a["taskId"]), mid.hex(), roots))
            if cur.rowcount:
                self.say(f"task {a['taskId']}: requested by {a['requester']} for {self.model_name(mid)} "
                         f"(block {ev['blockNumber']})")

    def scan(self, lo: int, hi: int) -> None:
        raise NotImplementedError

    def work(self) -> None:
        raise NotImplementedError

    # ---- shared actions ---------------------------------------------------------------------

    def inputs_of(self, task_id: int, mid: bytes, roots: list[bytes]):
        inputs = self.store.get(self.models[mid], roots)
        if inputs is None:
            self.say_once(("inputs", task_id), f"task {task_id}: waiting for its inputs in {self.store.directory}")
        return inputs

    def play(self) -> None:
        """Every open game: the moves it waits for from us, or a timeout; its end when it ends."""
        for (game_id, task_id) in self.db.execute(
                "SELECT game_id, task_id FROM service_games WHERE state = 'open' ORDER BY game_id").fetchall():
            party = self.party_of(task_id)
            for _ in range(MOVES_PER_PASS):
                if self.stopping.is_set():
                    return
                g = self.d.game(game_id)
                if g.phase is Phase.ENDED:
                    self.ended(game_id, task_id, g)
                    break
                if g.mover != self.role:
                    # The other side's turn: only a timeout can be ours. (Left to `act` alone, a
                    # move the other side makes meanwhile would be answered but logged as this.)
                    left = g.server_clock if g.mover == "server" else g.challenger_clock
                    if self.d.now() - g.turn_started_at <= left:
                        break
                try:
                    moved = party.act(game_id)
                except ContractReverted as exc:  # e.g. the game ended under us: read it again next pass
                    self.say(f"game {game_id} (task {task_id}): {exc}")
                    break
                if not moved:
                    break
                what = describe_move(g) if g.mover == self.role else f"timeout: the {g.mover}'s clock ran out"
                self.say(f"game {game_id} (task {task_id}): {what}")

    def ended(self, game_id: int, task_id: int, g: GameView) -> None:
        self.db.execute("UPDATE service_games SET state = 'ended' WHERE game_id = ?", (game_id,))
        self.db.commit()
        verdict = "won" if g.winner == self.role else "lost"
        self.say(f"game {game_id} (task {task_id}): ended, the {g.winner} wins "
                 f"({REASONS.get(g.reason, g.reason)}): we {verdict}")

    def withdraw(self) -> None:
        credit = int(self.d.registry.functions.credit(self.account).call())
        if credit:
            self.d.send(self.role, self.account, self.d.registry.functions.withdraw())
            self.say(f"withdrew {ether(credit)} ({credit} wei) of bonds to {self.account}")


class ServerService(Service):
    """Answers every request for its models with a bonded result, defends every challenge,
    finalizes its results once their window has passed, and withdraws what it earns."""

    role = "server"
    party_class = Server

    def __init__(self, *args, lie_node: int | None = None, **kwargs) -> None:
        tamper = None if lie_node is None else Tamper(lie_node)
        super().__init__(*args, tamper=tamper, **kwargs)
        for b in self.models.values():
            n = len(b.graph.nodes)
            if lie_node is not None and not 0 <= lie_node < n:
                raise OpmlcError(f"--lie-node {lie_node}: model {b.directory} has nodes 0..{n - 1}")
        self.lie_node = lie_node

    def scan(self, lo: int, hi: int) -> None:
        self.scan_requests(lo, hi)
        for ev in self.logs("ResultSubmitted", lo, hi):
            a = ev["args"]
            state = self.task_state(int(a["taskId"]))
            if state == "requested":
                mine = a["server"] == self.account
                self.set_task(int(a["taskId"]), "submitted" if mine else "taken")
                if not mine:
                    self.say(f"task {a['taskId']}: answered by another server, {a['server']}")
        for ev in self.logs("Challenged", lo, hi):
            a = ev["args"]
            task_id, game_id = int(a["taskId"]), int(a["gameId"])
            if self.task_state(task_id) in ("submitted", "finalized", "rejected") and self.add_game(game_id, task_id):
                self.say(f"task {task_id}: challenged by {a['challenger']}: game {game_id}, defending")

    def work(self) -> None:
        for task_id, mid, roots in self.tasks("requested"):
            self.answer(task_id, mid, roots)
        self.play()
        for task_id, _, _ in self.tasks("submitted"):
            self.settle(task_id)
        self.withdraw()

    def answer(self, task_id: int, mid: bytes, roots: list[bytes]) -> None:
        t = self.d.task(task_id)
        if t["status"] != 1:  # answered already (by us before a restart, or by someone else)
            mine = t["server"] == self.account
            self.set_task(task_id, "submitted" if mine else "taken")
            return
        inputs = self.inputs_of(task_id, mid, roots)
        if inputs is None:
            return
        self.parties[mid].submit(task_id, inputs)
        self.set_task(task_id, "submitted")
        root = self.parties[mid].claimant(task_id).trace.output_root
        lie = f", lying about node {self.lie_node}" if self.lie_node is not None else ""
        self.say(f"task {task_id}: submitted output root 0x{root.hex()} with a bond of "
                 f"{ether(self.info.bond * self.info.backed_games)} of backing{lie}")

    def settle(self, task_id: int) -> None:
        t = self.d.task(task_id)
        status = TASK_STATUS[int(t["status"])]
        if status in ("rejected", "finalized"):
            self.set_task(task_id, status)
            self.say(f"task {task_id}: {status}")
            return
        if t["open_games"] or self.d.now() <= t["deadline"]:
            return
        try:
            self.d.send(self.role, self.account, self.d.registry.functions.finalize(task_id))
        except ContractReverted as exc:  # a challenge at the last second; the contract has the last word
            self.say_once(("finalize", task_id), f"task {task_id}: not final yet ({exc})")
            return
        self.set_task(task_id, "finalized")
        self.say(f"task {task_id}: finalized (window over, no game open): bond returned")


class ChallengerService(Service):
    """Recomputes every result submitted for its models, challenges the wrong ones, plays each
    game to its end, and withdraws what it wins."""

    role = "challenger"
    party_class = Challenger

    def scan(self, lo: int, hi: int) -> None:
        self.scan_requests(lo, hi)
        for ev in self.logs("ResultSubmitted", lo, hi):
            a = ev["args"]
            if self.task_state(int(a["taskId"])) == "requested":
                self.set_task(int(a["taskId"]), "submitted")
                self.say(f"task {a['taskId']}: result 0x{bytes(a['outputRoot']).hex()} from {a['server']}, "
                         f"challengeable until {a['deadline']}")
        for ev in self.logs("Challenged", lo, hi):
            a = ev["args"]
            task_id, game_id = int(a["taskId"]), int(a["gameId"])
            if a["challenger"] == self.account and self.task_state(task_id) is not None:
                self.set_task(task_id, "challenged")
                if self.add_game(game_id, task_id):
                    self.say(f"task {task_id}: our challenge is game {game_id}")

    def work(self) -> None:
        for task_id, mid, roots in self.tasks("submitted"):
            self.verify(task_id, mid, roots)
        self.play()
        self.withdraw()

    def verify(self, task_id: int, mid: bytes, roots: list[bytes]) -> None:
        t = self.d.task(task_id)
        if int(t["status"]) != 2:
            self.set_task(task_id, "closed")
            self.say(f"task {task_id}: {TASK_STATUS[int(t['status'])]} before we checked it")
            return
        inputs = self.inputs_of(task_id, mid, roots)
        if inputs is None:
            return
        party = self.parties[mid]
        try:  # whether the window is still open is the contract's to say (it may pause it)
            game_id = party.check(task_id, inputs)
        except ContractReverted as exc:
            if exc.error in ("ChallengeWindowClosed", "NoOpenResult"):
                self.set_task(task_id, "missed")
                self.say(f"task {task_id}: too late to challenge ({exc})")
            else:  # e.g. every stake of the result is in play: try again on the next pass
                self.say_once(("challenge", task_id), f"task {task_id}: cannot challenge yet ({exc})")
            return
        ours = party.verifier(task_id).trace.output_root
        if game_id is None:
            self.set_task(task_id, "agreed")
            self.say(f"task {task_id}: result verified, output root 0x{ours.hex()} matches ours")
            return
        self.add_game(game_id, task_id)
        self.set_task(task_id, "challenged")
        self.say(f"task {task_id}: result is wrong (ours is 0x{ours.hex()}): challenged with a stake of "
                 f"{ether(self.info.bond)}, game {game_id}")


def task_report(d: Deployment, info: DeploymentFile, task_id: int) -> dict:
    """`opmlc result`: a task's state (requested, submitted, challenged, finalized or rejected),
    its output root and its games."""
    try:
        t = d.task(task_id)
    except ContractReverted as exc:
        if exc.error == "UnknownTask":
            n = int(d.registry.functions.taskCount().call())
            raise OpmlcError(f"task {task_id}: no such task on the registry {d.registry.address} "
                             f"(it has {n} task{'s' if n != 1 else ''})") from None
        raise
    status = TASK_STATUS[int(t["status"])]
    if status == "submitted" and t["open_games"]:
        status = "challenged"
    games = []
    for ev in d.registry.events.Challenged.get_logs(from_block=info.first_block, argument_filters={"taskId": task_id}):
        game_id = int(ev["args"]["gameId"])
        g = d.game(game_id)
        games.append({"game_id": game_id, "challenger": ev["args"]["challenger"],
                      "output_root": "0x" + bytes(ev["args"]["outputRoot"]).hex(), "phase": g.phase.name.lower(),
                      "winner": g.winner if g.phase is Phase.ENDED else None,
                      "reason": REASONS.get(g.reason) if g.phase is Phase.ENDED else None})
    submitted = int(t["status"]) >= 2
    return {"task_id": task_id, "state": status, "model_id": "0x" + bytes(t["model_id"]).hex(),
            "requester": t["requester"],
            "output_root": "0x" + bytes(t["output_root"]).hex() if submitted else None,
            "server": t["server"] if submitted else None, "deadline": int(t["deadline"]) if submitted else None,
            "games": sorted(games, key=lambda g: g["game_id"])}
