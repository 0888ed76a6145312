"""Who is paid what (docs/DESIGN.md, "Stakes"): every game holds one stake from each side and
its winner takes both, so an honest challenger that wins is paid its stake plus the server's
whatever a colluding, losing or racing challenger does; while every backed stake is in a game,
challenges wait and the window is paused, so colluders cannot run out the clock on a lie.
Every amount is asserted exactly."""

from __future__ import annotations

import pytest
from dispute_world import (
    BACKED_GAMES,
    BACKING,
    BISECT_TRACE,
    BOND,
    CHALLENGER,
    CLOCK,
    PROVE_STEP,
    REJECTED,
    SERVER,
    START_NODE,
    STEP_PROVEN,
    SUBMITTED,
    WINDOW,
    Side,
    World,
    advance,
    assert_withdraws,
    event,
    events,
    make_world,
    now,
)

LIE_NODE = 1


@pytest.fixture(scope="module")
def world() -> World:
    assert BACKED_GAMES == 2 and CLOCK > WINDOW  # the scenarios fill both games, stall past
    # the deadline within the games' clocks
    return make_world(seed=4)


def accounts(world: World) -> tuple[str, str]:
    """Two more challengers: colluders of the server in these tests."""
    return world.chain.accounts[5], world.chain.accounts[6]


def credits(world: World, *who: str) -> list[int]:
    return [world.credit(a) for a in who]


def win_fast(world: World, game_id: int, liar: Side, colluder: str) -> None:
    """The server throws game `game_id` to its colluder as fast as it can: phase 1 to the lying
    node, then a hand-off claiming the node ends after one step, so that the one step is at once
    proven against it."""
    truth = world.side()
    while (g := world.game(game_id))[2] != START_NODE:
        mid = (g[8] + g[9]) // 2
        if g[2] == BISECT_TRACE:
            world.send("bisectTrace", game_id, liar.trace(mid), sender=world.server)
        else:
            world.send("respondTrace", game_id, truth.trace(mid) == g[14], sender=colluder)
    args = liar.start_node_args(g[8])
    args[-1] = 0  # log2Steps = 0: straight to the last step
    world.send("startNode", game_id, *args, sender=world.server)
    assert world.game(game_id)[2] == PROVE_STEP
    w = truth.node_run(g[8]).witness(0)
    world.send("proveStep", game_id, w.pre_state, w.proof, sender=colluder)
    g = world.game(game_id)
    assert (g[3], g[4]) == (CHALLENGER, STEP_PROVEN)


def test_a_colluder_that_wins_fast_cannot_take_the_honest_challengers_reward(world: World) -> None:
    liar = world.side(tamper=LIE_NODE)
    colluder, _ = accounts(world)
    task_id = world.submitted(liar)
    before = credits(world, world.server, colluder, world.challenger)
    collusion = world.challenge(task_id, world.side(), sender=colluder)
    honest = world.challenge(task_id, world.side())
    win_fast(world, collusion, liar, colluder)
    assert world.task(task_id)[5] == REJECTED  # the colluder's win rejects the result ...
    log = world.play(honest, liar, world.side())  # ... and the honest game still pays
    assert (log.winner, log.reason, log.node) == (CHALLENGER, STEP_PROVEN, LIE_NODE)
    after = credits(world, world.server, colluder, world.challenger)
    gained = [a - b for a, b in zip(after, before, strict=True)]
    # The server loses both stakes it put in games; the colluder takes one back (its own plus
    # the server's), and the honest challenger its own plus the server's other stake.
    assert gained == [0, 2 * BOND, 2 * BOND]
    assert world.task(task_id)[9] == 0 and world.task(task_id)[6] == 0
    assert_withdraws(world, world.challenger, after[2])


def test_a_colluder_that_loses_on_purpose_pays_the_server_and_the_honest_challenger_is_paid(
    world: World,
) -> None:
    liar = world.side(tamper=LIE_NODE)
    colluder, _ = accounts(world)
    task_id = world.submitted(liar)
    before = credits(world, world.server, colluder, world.challenger)
    decoy = world.challenge(task_id, world.side(tamper=2), sender=colluder)
    honest = world.challenge(task_id, world.side())
    assert world.play(decoy, liar, liar).winner == SERVER  # agrees with every claim
    assert world.task(task_id)[5] == SUBMITTED and world.task(task_id)[9] == BOND
    assert world.play(honest, liar, world.side()).winner == CHALLENGER
    after = credits(world, world.server, colluder, world.challenger)
    gained = [a - b for a, b in zip(after, before, strict=True)]
    # Server: the colluder's stake, then its free stake back at the rejection; honest: 2 stakes.
    assert gained == [2 * BOND, 0, 2 * BOND]


def test_racing_honest_challengers_are_each_paid_their_own_game(world: World) -> None:
    liar = world.side(tamper=0)
    first, _ = accounts(world)
    task_id = world.submitted(liar)
    before = credits(world, world.server, first, world.challenger)
    games = [world.challenge(task_id, world.side(), sender=first), world.challenge(task_id, world.side())]
    for game_id in games:
        assert world.play(game_id, liar, world.side()).winner == CHALLENGER
    after = credits(world, world.server, first, world.challenger)
    assert [a - b for a, b in zip(after, before, strict=True)] == [0, 2 * BOND, 2 * BOND]


def test_a_challenge_waits_while_every_backed_game_is_open_and_the_window_pauses(
    world: World,
) -> None:
    """Colluders fill both backed games and stall past the deadline, then lose: the window's
    time left at the pause is restored, and the honest challenger still gets its game."""
    liar = world.side(tamper=LIE_NODE)
    a, b = accounts(world)
    task_id = world.submitted(liar)
    deadline = world.task(task_id)[7]
    decoys = [world.challenge(task_id, world.side(tamper=2), sender=who) for who in (a, b)]
    paused_at = world.task(task_id)[10]
    assert paused_at == now(world.chain) and world.task(task_id)[9] == 0
    honest_claim = world.side()
    claim = (task_id, honest_claim.output_root, honest_claim.trace(3), honest_claim.output_proof())
    assert world.reverts(
        "NoBackingLeft", "challenge", *claim, sender=world.challenger, value=BOND
    ) == (BACKED_GAMES,)
    advance(world.chain, WINDOW + 1)  # past the deadline, within the games' clocks
    assert now(world.chain) > deadline
    world.reverts("NoBackingLeft", "challenge", *claim, sender=world.challenger, value=BOND)
    world.reverts("GamesPending", "finalize", task_id)
    log = world.play(decoys[0], liar, liar)
    assert log.winner == SERVER
    resumed = world.task(task_id)[7]
    ended_at = world.chain.w3.eth.get_block("latest")["timestamp"]  # the game's last move
    assert resumed == deadline + ended_at - paused_at and world.task(task_id)[10] == 0
    honest = world.challenge(task_id, honest_claim)  # accepted after the first deadline
    assert world.play(honest, liar, world.side()).winner == CHALLENGER
    assert world.task(task_id)[5] == REJECTED
    server_before = world.credit(world.server)
    assert world.play(decoys[1], liar, liar).winner == SERVER
    assert world.credit(world.server) == server_before + 2 * BOND  # both stakes, result or not


def test_pause_and_resume_are_events(world: World) -> None:
    server = world.side()
    task_id = world.submitted(server)
    r = None
    for _ in range(BACKED_GAMES):
        r = world.send(
            "challenge",
            task_id,
            world.side(tamper=2).output_root,
            world.side(tamper=2).trace(3),
            world.side(tamper=2).output_proof(),
            sender=world.challenger,
            value=BOND,
        )
    assert [e["taskId"] for e in events(world.registry, "ChallengeWindowPaused", r)] == [task_id]
    game_id = event(world.registry, "Challenged", r)["gameId"]
    start = world.chain.w3.eth.block_number
    world.play(game_id, server, world.side(tamper=2))
    (resumed,) = world.registry.events.ChallengeWindowResumed().get_logs(
        from_block=start, argument_filters={"taskId": task_id}
    )
    assert resumed["args"]["deadline"] == world.task(task_id)[7]
    assert world.task(task_id)[9] == BACKING - BOND


def test_the_registry_holds_exactly_what_it_owes(world: World) -> None:
    """Solvency, after whatever ran above: the registry's ether is every account's credit, plus
    every result's free backing, plus the two stakes of every open game."""
    f = world.registry.functions
    owed = sum(world.credit(a) for a in world.chain.accounts)
    for task_id in range(f.taskCount().call()):
        task = world.task(task_id)
        owed += task[9] + 2 * BOND * task[6]
    assert world.chain.w3.eth.get_balance(world.registry.address) == owed > 0
