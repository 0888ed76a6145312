"""A tiny three-node "model" and the parties that dispute it, for the TaskRegistry/DisputeGame
tests (test support only; the real parties live in opmlc/dispute).

Where it sits: the contracts' end of the dispute protocol (docs/DESIGN.md, "The dispute
protocol"), checked with genuine VM states and witnesses from vm/ rather than with opmlc's
compiler. The "model" is a hand-assembled MIPS program (vm.asm) with one ELF for every task:
`_start` reads the node index from the task descriptor and runs that node's kernel over
16-word tensors in their regions, then exits with code 0.

    value 0  x    graph input             region 0x80000000
    value 1  w    initializer             region 0x80000040
    value 2  y = x + w       (node 0)     region 0x80000080
    value 3  z = y << 1      (node 1)     region 0x800000C0
    value 4  out = z ^ x     (node 2)     region 0x80000100   (the graph output)

A `Side` is one party's view of a task: the value roots it believes (optionally with one
node's output tampered, the change propagating downstream), the graph trace they give, and,
per node, the VM run from the agreed inputs with the final state that shows its believed
output (the honest final state with the output region replaced, the only way to claim it).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from functools import cached_property

from eth_abi import encode as abi_encode
from eth_utils import to_checksum_address
from web3.contract import Contract
from web3.contract.contract import ContractFunction
from web3.logs import DISCARD

from opmlc.dispute.commitment import MODEL_COMMITMENT_TYPE, NodeInfo
from toolchain.chain import Chain, decode_revert, revert_data
from vm.asm import NOP, Asm, elf32_mips
from vm.checkpoint import Trace
from vm.loader import initial_state, load_task, parse_elf
from vm.merkle import (
    LEAF_BYTES,
    LEAF_SHIFT,
    MEMORY_DEPTH,
    ZERO_LEAF,
    keccak256,
    list_proof,
    list_root,
    root_from_proof,
    subtree_root,
)
from vm.state import State, state_hash
from vm.witness import StepWitness, step_with_proof

MASK = 0xFFFFFFFF
ENTRY = 0x00400000
N_WORDS = 16
REGION_BYTES = 4 * N_WORDS  # 64 bytes: tree height 1
REGION_HEIGHT = 1
REGION_BASE = 0x80000000
ADDR = [REGION_BASE + REGION_BYTES * v for v in range(5)]  # region of value v
N_INPUTS = 1
FIRST_NODE_VALUE = 2
N_NODES = 3
LOG2_STEP_BUDGET = 20  # the commitment's step budget: every tiny node runs far fewer steps
N_VALUES = FIRST_NODE_VALUE + N_NODES
OUTPUT_VALUE = 4
NODE_INPUTS = ((0, 1), (2,), (0, 3))  # node k's operand values, ascending


# Phase enum of DisputeGame, as the ABI's uint8.
BISECT_TRACE, RESPOND_TRACE, START_NODE, BISECT_STEP, RESPOND_STEP, PROVE_STEP, ENDED = range(1, 8)
SERVER, CHALLENGER = 1, 2
STEP_PROVEN, TIMEOUT = 1, 2
REQUESTED, SUBMITTED, REJECTED, FINALIZED = 1, 2, 3, 4


# ------------------------------------------------------------------------------- the program


def _li(a: Asm, r: int, value: int) -> None:
    a.li(r, value)


def _elementwise(a: Asm, label: str, src1: int, src2: int | None, dst: int, op: str) -> None:
    """A leaf function: dst[i] = op(src1[i], src2[i]) for i < N_WORDS, then `jr $ra`."""
    _li(a, 4, src1)
    _li(a, 5, src2 if src2 is not None else src1)
    _li(a, 6, dst)
    a("addiu", 7, 0, N_WORDS)
    a.label(label)
    a("lw", 8, 0, 4)
    a("lw", 9, 0, 5)
    if op == "add":
        a("addu", 10, 8, 9)
    elif op == "shl1":
        a("sll", 10, 8, 1)
    else:
        a("xor", 10, 8, 9)
    a("sw", 10, 0, 6)
    a("addiu", 4, 4, 4)
    a("addiu", 5, 5, 4)
    a("addiu", 7, 7, -1)
    a.branch("bne", label, rs=7, rt=0)
    a("addiu", 6, 6, 4)  # delay slot
    a("jr", 31)
    a.word(NOP)


def tiny_program() -> bytes:
    """The model's ELF: dispatch on the task descriptor's node index, run, exit 0."""
    a = Asm(ENTRY)
    _li(a, 8, 0x30000000)
    a("lw", 16, 0, 8)  # $s0 = node index (0xFFFFFFFF: the whole graph)
    a("addiu", 9, 0, -1)
    a.branch("beq", "all", rs=16, rt=9)
    a.word(NOP)
    a.branch("beq", "do0", rs=16, rt=0)
    a.word(NOP)
    a("addiu", 9, 0, 1)
    a.branch("beq", "do1", rs=16, rt=9)
    a.word(NOP)
    a("addiu", 9, 0, 2)
    a.branch("beq", "do2", rs=16, rt=9)
    a.word(NOP)
    a.jump("j", "exit")
    a.word(NOP)
    for k in range(3):
        a.label(f"do{k}")
        a.jump("jal", f"node{k}")
        a.word(NOP)
        a.jump("j", "exit")
        a.word(NOP)
    a.label("all")
    for k in range(3):
        a.jump("jal", f"node{k}")
        a.word(NOP)
    a.label("exit")
    a("addiu", 2, 0, 4001)
    a("addiu", 4, 0, 0)
    a("syscall")
    a.label("node0")
    _elementwise(a, "loop0", ADDR[0], ADDR[1], ADDR[2], "add")
    a.label("node1")
    _elementwise(a, "loop1", ADDR[2], None, ADDR[3], "shl1")
    a.label("node2")
    _elementwise(a, "loop2", ADDR[3], ADDR[0], ADDR[4], "xor")
    code = a.assemble()
    return elf32_mips([(ENTRY, code, len(code))], ENTRY)


ELF = tiny_program()
PROGRAM = parse_elf(ELF)


def words_bytes(words: list[int]) -> bytes:
    return b"".join((w & MASK).to_bytes(4, "big") for w in words)


def compute_values(x: list[int], w: list[int], tamper: int | None = None) -> list[list[int]]:
    """Every value of the graph; `tamper = k` flips a bit of node k's output (and what follows)."""
    values = [list(x), list(w)]
    kernels = (
        lambda v: [(a + b) & MASK for a, b in zip(v[0], v[1], strict=True)],
        lambda v: [(a << 1) & MASK for a in v[2]],
        lambda v: [a ^ b for a, b in zip(v[3], v[0], strict=True)],
    )
    for k, kernel in enumerate(kernels):
        out = kernel(values)
        if tamper == k:
            out[0] ^= 1
        values.append(out)
    return values


# ------------------------------------------------------------------------------ commitments


# NodeInfo and its leaf encoding are opmlc's (opmlc/dispute/commitment.py): these tests check
# that the Python encoding and Commitments.sol's agree.


def node_infos() -> list[NodeInfo]:
    return [
        NodeInfo(
            base_root=initial_state(PROGRAM, k).memory.root(),
            input_values=NODE_INPUTS[k],
            input_addrs=tuple(ADDR[v] for v in NODE_INPUTS[k]),
            input_heights=(REGION_HEIGHT,) * len(NODE_INPUTS[k]),
            output_value=FIRST_NODE_VALUE + k,
            output_addr=ADDR[FIRST_NODE_VALUE + k],
            output_height=REGION_HEIGHT,
        )
        for k in range(N_NODES)
    ]


NODE_INFOS = node_infos()


@dataclass(frozen=True)
class Model:
    """The tiny model with its initializer `w`: what registerModel takes."""

    w: tuple[int, ...]

    @cached_property
    def template_leaves(self) -> list[bytes]:
        leaves = [ZERO_LEAF] * N_VALUES
        leaves[1] = subtree_root(words_bytes(list(self.w)))
        return leaves

    @cached_property
    def commitment(self) -> tuple:
        return (
            list_root([n.leaf() for n in NODE_INFOS]),
            list_root(self.template_leaves),
            N_NODES,
            N_VALUES,
            N_INPUTS,
            FIRST_NODE_VALUE,
            OUTPUT_VALUE,
            ENTRY,
            LOG2_STEP_BUDGET,
        )

    @property
    def model_id(self) -> bytes:
        return keccak256(abi_encode([MODEL_COMMITMENT_TYPE], [self.commitment]))

    def input_proofs(self, input_roots: list[bytes]) -> tuple[bytes, list[list[bytes]]]:
        """Trace state 0 and requestInference's proofs: input i's zero leaf replaced in order."""
        leaves = list(self.template_leaves)
        proofs = []
        for i, root in enumerate(input_roots):
            proofs.append(list_proof(leaves, i))
            leaves[i] = root
        return list_root(leaves), proofs


def region_siblings(state: State, addr: int, height: int) -> bytes:
    """The 27 − height siblings of the region at `addr`, from its level up."""
    return state.memory.proof(addr)[LEAF_BYTES * (1 + height) : LEAF_BYTES * (1 + MEMORY_DEPTH)]


# ---------------------------------------------------------------------------------- parties


class NodeRun:
    """One node's task from the agreed inputs, and the final state a party shows for it."""

    def __init__(self, k: int, value_bytes: list[bytes], claimed_output: bytes) -> None:
        info = NODE_INFOS[k]
        self.info = info
        store = {subtree_root(value_bytes[v]): value_bytes[v] for v in info.input_values}
        inputs = [(ADDR[v], REGION_BYTES, subtree_root(value_bytes[v])) for v in info.input_values]
        self.start = load_task(PROGRAM, k, inputs, store)
        self.initial_hash = self.start.hash()
        self.trace = Trace(self.start, interval=32)
        honest = self.trace.run(1 << 20)
        assert honest.exited and honest.exit_code == 0
        self.steps = honest.step
        self.log2_steps = max(1, math.ceil(math.log2(self.steps)))
        self.out_siblings = region_siblings(honest, info.output_addr, info.output_height)
        final = honest.encode()
        if honest.memory.region_root(info.output_addr, REGION_BYTES) != claimed_output:
            index = info.output_addr >> (LEAF_SHIFT + info.output_height)
            sibs = [self.out_siblings[i : i + 32] for i in range(0, len(self.out_siblings), 32)]
            final = root_from_proof(claimed_output, index, sibs) + final[32:]
        self.final_state = final
        self.final_hash = state_hash(final)
        # splice proofs: each region's siblings with the previous inputs spliced in
        state = initial_state(PROGRAM, k)
        self.splice_proofs = []
        for v in info.input_values:
            self.splice_proofs.append(region_siblings(state, ADDR[v], REGION_HEIGHT))
            state.memory.splice(ADDR[v], REGION_BYTES, subtree_root(value_bytes[v]), store)
        assert state.memory.root() == self.start.memory.root()

    def hash_at(self, i: int) -> bytes:
        return self.final_hash if i >= self.steps else self.trace.hash_at(i)

    def witness(self, i: int) -> StepWitness:
        return step_with_proof(self.trace.state_at(i))


class Side:
    """One party's view of a task on inputs `x` (tampered at node `tamper` if given)."""

    def __init__(self, model: Model, x: list[int], tamper: int | None = None) -> None:
        self.model = model
        self.values = compute_values(x, list(model.w), tamper)
        self.value_bytes = [words_bytes(v) for v in self.values]
        self.roots = [subtree_root(b) for b in self.value_bytes]
        self._runs: dict[int, NodeRun] = {}

    def trace_leaves(self, i: int) -> list[bytes]:
        cut = FIRST_NODE_VALUE + i
        return self.roots[:cut] + [ZERO_LEAF] * (N_VALUES - cut)

    def trace(self, i: int) -> bytes:
        return list_root(self.trace_leaves(i))

    @property
    def output_root(self) -> bytes:
        return self.roots[OUTPUT_VALUE]

    def output_proof(self) -> list[bytes]:
        return list_proof(self.trace_leaves(N_NODES), OUTPUT_VALUE)

    def node_run(self, k: int) -> NodeRun:
        if k not in self._runs:
            self._runs[k] = NodeRun(k, self.value_bytes, self.roots[FIRST_NODE_VALUE + k])
        return self._runs[k]

    def start_node_args(self, k: int) -> list:
        """startNode's arguments after the game id, for node k."""
        info = NODE_INFOS[k]
        run = self.node_run(k)
        leaves = self.trace_leaves(k)
        return [
            info.as_tuple(),
            list_proof([n.leaf() for n in NODE_INFOS], k),
            self.roots[info.output_value],
            list_proof(leaves, info.output_value),
            [self.roots[v] for v in info.input_values],
            [list_proof(leaves, v) for v in info.input_values],
            run.splice_proofs,
            run.final_state,
            run.out_siblings,
            run.log2_steps,
        ]


# ------------------------------------------------------------------------------- chain calls


class Reverted(Exception):
    def __init__(self, error: str | None, args: tuple) -> None:
        super().__init__(f"{error}{args}")
        self.error, self.args_ = error, args


TX_GAS = 10_000_000  # an explicit limit skips gas estimation, which re-runs a call ~16 times


def _call_error(fn: ContractFunction, sender: str, value: int) -> Reverted | None:
    """The decoded custom error `fn` reverts with when called from `sender`, None if it does not."""
    try:
        fn.call({"from": sender, "value": value, "gas": TX_GAS})
    except Exception as exc:
        data = revert_data(exc)
        if data is None:
            raise
        name, args = decode_revert(fn.contract_abi, data) or (None, ())
        args = tuple(
            to_checksum_address(a)
            if isinstance(a, str) and len(a) == 42 and a.startswith("0x")
            else a
            for a in args
        )
        return Reverted(name, args)
    return None


def send(chain: Chain, fn: ContractFunction, sender: str, value: int = 0) -> dict:
    """Sends `fn` from `sender`; raises Reverted (with the decoded custom error) on a revert."""
    tx = fn.transact({"from": sender, "value": value, "gas": TX_GAS})
    receipt = chain.w3.eth.wait_for_transaction_receipt(tx)
    if receipt["status"] != 1:
        raise _call_error(fn, sender, value) or Reverted(None, ())
    return receipt


def reverts(chain: Chain, error: str, fn: ContractFunction, sender: str, value: int = 0) -> tuple:
    """`fn` from `sender` must revert with the custom error `error`; returns its arguments."""
    r = _call_error(fn, sender, value)
    assert r is not None, f"expected a revert with {error}"
    assert r.error == error, f"expected {error}, got {r.error}{r.args_}"
    return r.args_


def now(chain: Chain) -> int:
    """The timestamp calls see (the latest block's); a transaction's block comes after it."""
    return chain.w3.eth.get_block("latest")["timestamp"]


def advance(chain: Chain, seconds: int) -> None:
    """Moves the embedded chain's clock at least `seconds` ahead, for calls and transactions."""
    tester = chain.w3.provider.ethereum_tester
    target = chain.w3.eth.get_block("pending")["timestamp"] + seconds
    tester.time_travel(target)
    tester.mine_blocks(1)
    assert now(chain) >= target


def event(contract: Contract, name: str, receipt: dict) -> dict:
    """The arguments of the one `name` event in `receipt`."""
    (log,) = getattr(contract.events, name)().process_receipt(receipt, errors=DISCARD)
    return log["args"]


def events(contract: Contract, name: str, receipt: dict) -> list[dict]:
    return [
        log["args"]
        for log in getattr(contract.events, name)().process_receipt(receipt, errors=DISCARD)
    ]


# ------------------------------------------------------------------------------- the players


@dataclass
class GameLog:
    """What happened in one game: the end, the rounds and the gas of each move type."""

    winner: int
    reason: int
    node: int | None
    rounds_trace: int
    rounds_step: int
    gas: dict[str, list[int]]


def play(
    chain: Chain,
    registry: Contract,
    game_id: int,
    server: Side,
    server_addr: str,
    challenger: Side,
    challenger_addr: str,
    challenger_moves: str = "honest",
    seed: int = 0,
) -> GameLog:
    """Plays game `game_id` to its end: the server claims from its view; the challenger
    answers from its own ("honest": by comparing with its view), at random ("random"), or
    honestly but with a corrupted final proof ("bad-proof", after which the server proves the
    step itself)."""
    rng = random.Random(seed)
    gas: dict[str, list[int]] = {}
    rounds_trace = rounds_step = 0
    node = None

    def move(name: str, sender: str, *args) -> dict:
        receipt = send(chain, getattr(registry.functions, name)(game_id, *args), sender)
        gas.setdefault(name, []).append(receipt["gasUsed"])
        return receipt

    while True:
        g = registry.functions.getGame(game_id).call()
        phase, lo, hi, mid_hash = g[2], g[8], g[9], g[14]
        mid = (lo + hi) // 2
        if phase == BISECT_TRACE:
            move("bisectTrace", server_addr, server.trace(mid))
        elif phase == RESPOND_TRACE:
            rounds_trace += 1
            agree = (
                rng.random() < 0.5
                if challenger_moves == "random"
                else challenger.trace(mid) == mid_hash
            )
            move("respondTrace", challenger_addr, agree)
        elif phase == START_NODE:
            node = lo
            move("startNode", server_addr, *server.start_node_args(lo))
        elif phase == BISECT_STEP:
            move("bisectStep", server_addr, server.node_run(node).hash_at(mid))
        elif phase == RESPOND_STEP:
            rounds_step += 1
            agree = (
                rng.random() < 0.5
                if challenger_moves == "random"
                else challenger.node_run(node).hash_at(mid) == mid_hash
            )
            move("respondStep", challenger_addr, agree)
        elif phase == PROVE_STEP:
            w = challenger.node_run(node).witness(lo)
            if challenger_moves == "bad-proof":
                bad = bytes([w.proof[0] ^ 1]) + w.proof[1:]
                try:
                    move("proveStep", challenger_addr, w.pre_state, bad)
                    continue  # an exited pre-state reads no proof: the step is settled anyway
                except Reverted as r:
                    assert r.error == "InvalidMemoryProof", r
                # the server, whose claims are true, ends the game itself
                w = server.node_run(node).witness(lo)
                move("proveStep", server_addr, w.pre_state, w.proof)
            else:
                move("proveStep", challenger_addr, w.pre_state, w.proof)
        else:
            assert phase == ENDED
            return GameLog(g[3], g[4], node, rounds_trace, rounds_step, gas)


# ----------------------------------------------------------------------------------- a world


BOND = 10**17  # each side's stake in one game
BACKED_GAMES = 2  # games a result's backing pays for at once
BACKING = BOND * BACKED_GAMES
WINDOW = 600
CLOCK = 1000


@dataclass
class World:
    """A fresh embedded chain with MIPS and a TaskRegistry, the tiny model registered, and the
    accounts of the requester, the server and two challengers."""

    chain: Chain
    registry: Contract
    model: Model
    x: list[int]
    requester: str
    server: str
    challenger: str
    other: str
    sides: dict

    def side(self, tamper: int | None = None) -> Side:
        if tamper not in self.sides:
            self.sides[tamper] = Side(self.model, self.x, tamper)
        return self.sides[tamper]

    def send(self, name: str, *args, sender: str | None = None, value: int = 0) -> dict:
        fn = getattr(self.registry.functions, name)(*args)
        return send(self.chain, fn, sender or self.requester, value)

    def reverts(
        self, error: str, name: str, *args, sender: str | None = None, value: int = 0
    ) -> tuple:
        fn = getattr(self.registry.functions, name)(*args)
        return reverts(self.chain, error, fn, sender or self.requester, value)

    def game(self, game_id: int) -> tuple:
        return self.registry.functions.getGame(game_id).call()

    def task(self, task_id: int) -> tuple:
        return self.registry.functions.getTask(task_id).call()

    def new_task(self) -> int:
        x_root = self.side().roots[0]
        _, proofs = self.model.input_proofs([x_root])
        r = self.send("requestInference", self.model.model_id, [x_root], proofs)
        return event(self.registry, "InferenceRequested", r)["taskId"]

    def submitted(self, server: Side) -> int:
        task_id = self.new_task()
        self.send(
            "submitResult",
            task_id,
            server.output_root,
            server.trace(N_NODES),
            server.output_proof(),
            sender=self.server,
            value=BACKING,
        )
        return task_id

    def credit(self, account: str) -> int:
        return self.registry.functions.credit(account).call()

    def challenge(self, task_id: int, challenger: Side, sender: str | None = None) -> int:
        r = self.send(
            "challenge",
            task_id,
            challenger.output_root,
            challenger.trace(N_NODES),
            challenger.output_proof(),
            sender=sender or self.challenger,
            value=BOND,
        )
        return event(self.registry, "Challenged", r)["gameId"]

    def play(self, game_id: int, server: Side, challenger: Side, **kw) -> GameLog:
        challenger_addr = self.game(game_id)[6]
        return play(
            self.chain,
            self.registry,
            game_id,
            server,
            self.server,
            challenger,
            challenger_addr,
            **kw,
        )


def make_world(seed: int = 0) -> World:
    from toolchain.chain import connect, deploy

    chain = connect(None)
    mips = deploy(chain, "MIPS")
    registry = deploy(chain, "TaskRegistry", mips.address, BOND, WINDOW, CLOCK, BACKED_GAMES)
    rng = random.Random(seed)
    model = Model(tuple(rng.randrange(1 << 32) for _ in range(N_WORDS)))
    x = [rng.randrange(1 << 32) for _ in range(N_WORDS)]
    requester, server, challenger, other = (
        chain.accounts[3],
        chain.accounts[1],
        chain.accounts[2],
        chain.accounts[4],
    )
    world = World(chain, registry, model, x, requester, server, challenger, other, {})
    world.send("registerModel", model.commitment)
    return world


def assert_withdraws(world: World, account: str, amount: int) -> None:
    """`account` withdraws exactly `amount`: its balance grows by it, less the gas it paid."""
    w3 = world.chain.w3
    before = w3.eth.get_balance(account)
    r = world.send("withdraw", sender=account)
    paid = r["gasUsed"] * r["effectiveGasPrice"]
    assert w3.eth.get_balance(account) == before + amount - paid
    assert event(world.registry, "Withdrawn", r)["amount"] == amount
    assert world.registry.functions.credit(account).call() == 0
    world.reverts("NothingToWithdraw", "withdraw", sender=account)
