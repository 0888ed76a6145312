"""Playing a game to its end between two party objects (tests, `opmlc demo`).

On a live network each party runs its own loop; here both sit in one process and take turns.
When neither can move (the mover has stopped), the chain's clock is moved past the mover's
time so that the waiting party can claim the game by timeout, as it would in real time.
"""

from __future__ import annotations

from collections.abc import Callable

from opmlc import progress
from opmlc.dispute.onchain import Deployment, GameView, Phase
from opmlc.dispute.parties import Challenger, Server

MAX_MOVES = 10_000


def settle(d: Deployment, server: Server, challenger: Challenger, game_id: int,
           on_move: Callable[[GameView], None] | None = None) -> GameView:
    """Alternate the parties' moves until the game ends; returns its final state."""
    with progress.task("dispute game: moves") as bar:
        for _ in range(MAX_MOVES):
            g = d.game(game_id)
            if g.phase is Phase.ENDED:
                return g
            if on_move:
                on_move(g)
            unit = "nodes" if g.phase in (Phase.BISECT_TRACE, Phase.RESPOND_TRACE, Phase.START_NODE) else "steps"
            bar.update(description=f"dispute game: {g.phase.name.lower()}, {unit} {g.lo:,}–{g.hi:,}")
            if server.act(game_id) or challenger.act(game_id):
                bar.advance()
                continue
            left = g.server_clock if g.mover == "server" else g.challenger_clock
            d.advance_time(left - (d.now() - g.turn_started_at) + 1)
    raise RuntimeError(f"game {game_id} did not end within {MAX_MOVES} moves")
