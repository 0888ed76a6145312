"""The contracts as the parties see them: deployment, transactions from an account, game state.

A thin layer over toolchain/chain.py (connection, deploy, revert decoding) and the committed
TaskRegistry ABI (which includes DisputeGame's moves): it sends a move from a party's account,
turns a revert into ContractReverted naming the custom error, counts the gas each party spends,
and moves a test chain's clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from web3.contract import Contract

from opmlc.dispute.defaults import (
    DEFAULT_BACKED_GAMES,
    DEFAULT_BOND,
    DEFAULT_CLOCK,
    DEFAULT_WINDOW,
)
from toolchain.chain import Chain, call, connect, decode_revert, deploy, revert_data
from toolchain.errors import ChainError, ContractReverted


class Phase(IntEnum):
    """DisputeGame.Phase, as the ABI numbers it."""

    NONE = 0
    BISECT_TRACE = 1
    RESPOND_TRACE = 2
    START_NODE = 3
    BISECT_STEP = 4
    RESPOND_STEP = 5
    PROVE_STEP = 6
    ENDED = 7
    BISECT_PART = 8
    RESPOND_PART = 9
    START_PART = 10


SERVER_PHASES = {Phase.BISECT_TRACE, Phase.START_NODE, Phase.BISECT_STEP, Phase.BISECT_PART, Phase.START_PART}
CHALLENGER_PHASES = {Phase.RESPOND_TRACE, Phase.RESPOND_STEP, Phase.PROVE_STEP, Phase.RESPOND_PART}
PARTY = {0: "none", 1: "server", 2: "challenger"}


@dataclass
class GameView:
    """DisputeGame.Game, decoded."""

    task_id: int
    server: str
    phase: Phase
    winner: str
    reason: int
    node: int
    challenger: str
    turn_started_at: int
    lo: int
    hi: int
    server_clock: int
    challenger_clock: int
    lo_hash: bytes
    hi_hash: bytes
    mid_hash: bytes
    part: int = 0  # a split node's descent (DisputeGame splitNode … startPart)
    part_depth: int = 0
    parts_log2: int = 0
    right_hash: bytes = b""

    @property
    def task_part(self) -> int | None:
        """The part whose task phases 2 and 3 run (None: the node's own task)."""
        return self.part if self.parts_log2 else None

    @property
    def mid(self) -> int:
        return (self.lo + self.hi) // 2

    @property
    def mover(self) -> str:
        if self.phase in SERVER_PHASES:
            return "server"
        if self.phase in CHALLENGER_PHASES:
            return "challenger"
        return "none"


@dataclass
class Deployment:
    """MIPS.sol and the TaskRegistry (which is also the DisputeGame) on one chain."""

    chain: Chain
    registry: Contract
    gas_by: dict[str, int] = field(default_factory=dict)

    @classmethod
    def create(cls, chain: Chain | None = None, bond: int = DEFAULT_BOND, window: int = DEFAULT_WINDOW,
               clock: int = DEFAULT_CLOCK, backed_games: int = DEFAULT_BACKED_GAMES) -> Deployment:
        """Deploys MIPS (once per chain) and a TaskRegistry: `bond` is each side's stake in a
        game, a result carries `bond × backed_games`."""
        chain = chain or connect(None)
        mips = deploy(chain, "MIPS", reuse=True)
        registry = deploy(chain, "TaskRegistry", mips.address, bond, window, clock, backed_games)
        return cls(chain, registry)

    @property
    def stake(self) -> int:
        """What a challenge carries: one stake (the registry's bondAmount)."""
        return int(call(self.registry.functions.bondAmount()))

    @property
    def backing(self) -> int:
        """What a result carries: bondAmount × backedGames."""
        f = self.registry.functions
        return int(call(f.bondAmount())) * int(call(f.backedGames()))

    def game(self, game_id: int) -> GameView:
        raw = call(self.registry.functions.getGame(game_id))
        g = GameView(*raw)
        g.phase = Phase(g.phase)
        g.winner = PARTY[int(raw[3])]
        return g

    def task(self, task_id: int) -> dict[str, Any]:
        names = ("model_id", "trace0", "output_root", "final_trace", "requester", "status", "open_games",
                 "deadline", "server", "backing", "paused_at")
        return dict(zip(names, call(self.registry.functions.getTask(task_id)), strict=True))

    def send(self, who: str, account: str, fn, value: int = 0) -> dict:
        """Send a transaction of `fn` from `account`; a revert raises ContractReverted."""
        tx = {"from": account, "value": value}
        try:  # an eth_call first: a revert comes back decoded, and nothing is spent
            fn.call(tx)
        except Exception as exc:
            data = revert_data(exc)
            if data is None:
                raise ChainError(f"{fn.fn_name} from the {who} failed: {str(exc).splitlines()[0]}") from None
            name, args = decode_revert(fn.contract_abi, data) or (None, ())
            raise ContractReverted(fn.fn_name, name, args, data) from None
        try:
            tx_hash = fn.transact(tx)
            receipt = self.chain.w3.eth.wait_for_transaction_receipt(tx_hash)
        except Exception as exc:
            raise ChainError(f"{fn.fn_name} from the {who} failed: {str(exc).splitlines()[0]}") from None
        if receipt["status"] != 1:
            raise ChainError(f"{fn.fn_name} from the {who} reverted")
        self.gas_by[who] = self.gas_by.get(who, 0) + int(receipt["gasUsed"])
        return receipt

    def now(self) -> int:
        return int(self.chain.w3.eth.get_block("latest")["timestamp"])

    def advance_time(self, seconds: int) -> None:
        """Move a test chain's clock forward (embedded py-evm, or anvil/hardhat by RPC)."""
        w3 = self.chain.w3
        if self.chain.embedded:
            tester = w3.provider.ethereum_tester
            tester.time_travel(self.now() + seconds)
            tester.mine_blocks(1)
        else:
            w3.provider.make_request("evm_increaseTime", [seconds])
            w3.provider.make_request("evm_mine", [])

    def events(self, name: str, **filters) -> list[dict]:
        ev = getattr(self.registry.events, name)
        return list(ev.get_logs(from_block=0, argument_filters=filters or None))
