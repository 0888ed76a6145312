"""DisputeGame on the tiny three-node model (dispute_world): turns, both bisections, the
hand-off bound on chain (S0 derived as vm/ derives it; every proof checked, each failure a named
error), the one-step proof deciding either way, clocks, bonds, and whole games between an honest
party and a liar of every kind."""

from __future__ import annotations

import pytest
from dispute_world import (
    BACKING,
    BISECT_STEP,
    BISECT_TRACE,
    BOND,
    CHALLENGER,
    CLOCK,
    ENDED,
    FIRST_NODE_VALUE,
    LOG2_STEP_BUDGET,
    N_NODES,
    NODE_INFOS,
    PROVE_STEP,
    REJECTED,
    RESPOND_TRACE,
    SERVER,
    START_NODE,
    STEP_PROVEN,
    SUBMITTED,
    TIMEOUT,
    WINDOW,
    World,
    advance,
    assert_withdraws,
    event,
    make_world,
)

from vm.state import STATE_BYTES


@pytest.fixture(scope="module")
def world() -> World:
    return make_world(seed=2)


def game_at_start_node(
    world: World, server_tamper: int, challenger_tamper: int | None = None
) -> int:
    """A game narrowed by honest phase-1 moves to the hand-off of the first disputed node."""
    server, challenger = world.side(server_tamper), world.side(challenger_tamper)
    game_id = world.challenge(world.submitted(server), challenger)
    while (g := world.game(game_id))[2] != START_NODE:
        mid = (g[8] + g[9]) // 2
        if g[2] == BISECT_TRACE:
            world.send("bisectTrace", game_id, server.trace(mid), sender=world.server)
        else:
            world.send(
                "respondTrace", game_id, challenger.trace(mid) == g[14], sender=world.challenger
            )
    return game_id


# ------------------------------------------------------------------------------------- turns


def test_a_challenge_starts_a_game_over_all_nodes_with_the_server_to_move(world: World) -> None:
    server = world.side(tamper=1)
    task_id = world.submitted(server)
    game_id = world.challenge(task_id, world.side())
    g = world.game(game_id)
    assert (g[0], g[1], g[6]) == (task_id, world.server, world.challenger)
    assert (g[2], g[8], g[9]) == (BISECT_TRACE, 0, N_NODES)
    assert (g[12], g[13]) == (world.side().trace(0), server.trace(N_NODES))
    assert (g[10], g[11]) == (CLOCK, CLOCK)
    assert world.task(task_id)[6] == 1


def test_moves_out_of_turn_revert(world: World) -> None:
    server = world.side(tamper=1)
    game_id = world.challenge(world.submitted(server), world.side())
    mid_trace = server.trace(1)
    assert world.reverts(
        "NotYourTurn", "bisectTrace", game_id, mid_trace, sender=world.challenger
    ) == (world.server,)
    assert world.reverts(
        "UnexpectedMove", "respondTrace", game_id, True, sender=world.challenger
    ) == (BISECT_TRACE,)
    world.reverts("UnexpectedMove", "bisectStep", game_id, mid_trace, sender=world.server)
    world.reverts("UnexpectedMove", "proveStep", game_id, b"", b"", sender=world.challenger)
    world.reverts(
        "UnexpectedMove", "startNode", game_id, *server.start_node_args(0), sender=world.server
    )
    world.send("bisectTrace", game_id, mid_trace, sender=world.server)
    assert world.reverts(
        "UnexpectedMove", "bisectTrace", game_id, mid_trace, sender=world.server
    ) == (RESPOND_TRACE,)
    assert world.reverts("NotYourTurn", "respondTrace", game_id, True, sender=world.server) == (
        world.challenger,
    )
    assert world.reverts("NotYourTurn", "respondTrace", game_id, True, sender=world.other) == (
        world.challenger,
    )
    world.reverts("UnknownGame", "timeout", 10**6)


# -------------------------------------------------------------------------------- phase 1


def test_phase_1_narrows_to_the_first_node_whose_output_differs(world: World) -> None:
    server, challenger = world.side(tamper=1), world.side()
    game_id = world.challenge(world.submitted(server), challenger)
    r = world.send("bisectTrace", game_id, server.trace(1), sender=world.server)
    assert event(world.registry, "TraceBisected", r)["mid"] == 1
    r = world.send("respondTrace", game_id, True, sender=world.challenger)
    ev = event(world.registry, "TraceResponded", r)
    assert (ev["agree"], ev["lo"], ev["hi"]) == (True, 1, N_NODES)
    g = world.game(game_id)
    assert (g[2], g[8], g[9], g[12]) == (BISECT_TRACE, 1, N_NODES, server.trace(1))
    world.send("bisectTrace", game_id, server.trace(2), sender=world.server)
    world.send("respondTrace", game_id, False, sender=world.challenger)
    g = world.game(game_id)
    assert (g[2], g[8], g[9], g[12], g[13]) == (START_NODE, 1, 2, server.trace(1), server.trace(2))


# -------------------------------------------------------------------------------- hand-off


def test_start_node_derives_the_initial_state_as_the_vm_loads_the_task(world: World) -> None:
    server = world.side(tamper=1)
    game_id = game_at_start_node(world, server_tamper=1)
    run = server.node_run(1)
    r = world.send("startNode", game_id, *server.start_node_args(1), sender=world.server)
    ev = event(world.registry, "NodeStarted", r)
    assert ev["node"] == 1 and ev["outRoot"] == server.roots[FIRST_NODE_VALUE + 1]
    assert ev["initialStateHash"] == run.start.hash() == world.side().node_run(1).initial_hash
    assert ev["finalStateHash"] == run.final_hash and ev["log2Steps"] == run.log2_steps
    g = world.game(game_id)
    assert (g[2], g[5], g[8], g[9]) == (BISECT_STEP, 1, 0, 1 << run.log2_steps)
    assert (g[12], g[13]) == (run.start.hash(), run.final_hash)


def _flip(b: bytes, at: int = 0) -> bytes:
    return b[:at] + bytes([b[at] ^ 1]) + b[at + 1 :]


# Arguments of startNode after the game id: 0 node, 1 nodeProof, 2 outRoot, 3 outProof,
# 4 inputRoots, 5 inputProofs, 6 spliceProofs, 7 finalState, 8 outRegionProof, 9 log2Steps.
BAD_START_NODE = {
    "node-proof": (
        lambda a: a.__setitem__(1, [_flip(a[1][0])] + a[1][1:]),
        "InvalidNodeProof",
        None,
    ),
    "other-node-info": (
        lambda a: a.__setitem__(0, NODE_INFOS[0].as_tuple()),
        "InvalidNodeProof",
        None,
    ),
    "out-proof": (
        lambda a: a.__setitem__(3, [_flip(a[3][0])] + a[3][1:]),
        "InvalidNodeOutputProof",
        None,
    ),
    "out-root": (lambda a: a.__setitem__(2, _flip(a[2])), "InvalidNodeOutputProof", None),
    "input-root": (lambda a: a.__setitem__(4, [_flip(a[4][0])]), "InvalidNodeInputProof", (0,)),
    "input-proof": (
        lambda a: a.__setitem__(5, [[_flip(a[5][0][0])] + a[5][0][1:]]),
        "InvalidNodeInputProof",
        (0,),
    ),
    "splice-proof": (lambda a: a.__setitem__(6, [_flip(a[6][0], 40)]), "InvalidSpliceProof", (0,)),
    "splice-proof-count": (lambda a: a.__setitem__(6, []), "InputCountMismatch", (1, 0)),
    "final-state-running": (
        lambda a: a.__setitem__(7, a[7][:57] + b"\x00" + a[7][58:]),
        "FinalStateNotExitedZero",
        (0, 0),
    ),
    "final-state-exit-code": (
        lambda a: a.__setitem__(7, a[7][:56] + b"\x01" + a[7][57:]),
        "FinalStateNotExitedZero",
        (1, 1),
    ),
    "final-state-length": (
        lambda a: a.__setitem__(7, a[7] + b"\x00"),
        "InvalidStateLength",
        (STATE_BYTES + 1,),
    ),
    "final-state-output": (
        lambda a: a.__setitem__(7, _flip(a[7], 31)),
        "InvalidOutputRegionProof",
        None,
    ),
    "out-region-proof": (
        lambda a: a.__setitem__(8, _flip(a[8], 0)),
        "InvalidOutputRegionProof",
        None,
    ),
    "log2-steps": (lambda a: a.__setitem__(9, 49), "TooManySteps", (49,)),
    "over-budget": (lambda a: a.__setitem__(9, LOG2_STEP_BUDGET + 1), "StepBudgetExceeded",
                    (LOG2_STEP_BUDGET + 1, LOG2_STEP_BUDGET)),
}


@pytest.fixture(scope="module")
def hand_off(world: World) -> int:
    return game_at_start_node(world, server_tamper=1)


@pytest.mark.parametrize("case", BAD_START_NODE)
def test_start_node_with_a_wrong_proof_reverts_with_a_named_error(
    world: World, hand_off: int, case: str
) -> None:
    corrupt, error, expected_args = BAD_START_NODE[case]
    args = world.side(tamper=1).start_node_args(1)
    corrupt(args)
    got = world.reverts(error, "startNode", hand_off, *args, sender=world.server)
    if expected_args is not None:
        assert got == expected_args


# -------------------------------------------------------------------------- phases 2 and 3


def test_phase_2_narrows_to_the_step_where_the_claims_diverge(world: World) -> None:
    server, challenger = world.side(tamper=1), world.side()
    game_id = game_at_start_node(world, server_tamper=1)
    world.send("startNode", game_id, *server.start_node_args(1), sender=world.server)
    run, truth = server.node_run(1), challenger.node_run(1)
    while (g := world.game(game_id))[2] != PROVE_STEP:
        lo, hi = g[8], g[9]
        mid = (lo + hi) // 2
        r = world.send("bisectStep", game_id, run.hash_at(mid), sender=world.server)
        assert event(world.registry, "StepBisected", r)["mid"] == mid
        agree = truth.hash_at(mid) == run.hash_at(mid)
        r = world.send("respondStep", game_id, agree, sender=world.challenger)
        ev = event(world.registry, "StepResponded", r)
        assert (ev["lo"], ev["hi"]) == ((mid, hi) if agree else (lo, mid))
        assert world.game(game_id)[2] in (BISECT_STEP, PROVE_STEP)
    # The lie is in the final state only: the last step, the exit, is the one in dispute.
    assert (g[8], g[9]) == (run.steps - 1, run.steps)
    assert g[12] == truth.hash_at(run.steps - 1) and g[13] == run.final_hash != truth.final_hash


def test_prove_step_needs_the_agreed_pre_state(world: World) -> None:
    server = world.side(tamper=1)
    game_id = game_at_start_node(world, server_tamper=1)
    world.send("startNode", game_id, *server.start_node_args(1), sender=world.server)
    run = server.node_run(1)
    for _ in range(run.log2_steps):  # the challenger agrees with everything: lo → 2^k − 1
        g = world.game(game_id)
        world.send("bisectStep", game_id, run.hash_at((g[8] + g[9]) // 2), sender=world.server)
        world.send("respondStep", game_id, True, sender=world.challenger)
    g = world.game(game_id)
    assert g[2] == PROVE_STEP and g[9] == 1 << run.log2_steps
    w = run.witness(0)
    got = world.reverts(
        "PreStateMismatch", "proveStep", game_id, w.pre_state, w.proof, sender=world.challenger
    )
    assert got == (g[12], w.pre_hash)


def test_prove_step_lets_the_challenger_win_when_the_servers_post_state_is_wrong(
    world: World,
) -> None:
    server, challenger = world.side(tamper=2), world.side()
    game_id = world.challenge(world.submitted(server), challenger)
    log = world.play(game_id, server, challenger)
    assert (log.winner, log.reason, log.node) == (CHALLENGER, STEP_PROVEN, 2)


def test_prove_step_lets_the_server_win_when_its_post_state_is_right(world: World) -> None:
    server, challenger = world.side(), world.side(tamper=2)
    game_id = world.challenge(world.submitted(server), challenger)
    log = world.play(game_id, server, challenger)
    assert (log.winner, log.reason, log.node) == (SERVER, STEP_PROVEN, 2)


# -------------------------------------------------------------------------------- clocks


def test_a_server_that_stops_moving_loses_on_time(world: World) -> None:
    server = world.side(tamper=0)
    task_id = world.submitted(server)
    game_id = world.challenge(task_id, world.side())
    remaining = world.reverts("ClockNotExpired", "timeout", game_id, sender=world.other)[0]
    assert 0 < remaining <= CLOCK
    advance(world.chain, CLOCK + 1)
    assert world.reverts(
        "ClockExpired", "bisectTrace", game_id, server.trace(1), sender=world.server
    ) == (SERVER,)
    assert tuple(world.registry.functions.clocksLeft(game_id).call()) == (0, CLOCK)
    r = world.send("timeout", game_id, sender=world.other)
    ev = event(world.registry, "GameEnded", r)
    assert (ev["winner"], ev["reason"]) == (CHALLENGER, TIMEOUT)
    assert world.task(task_id)[5] == REJECTED and world.task(task_id)[6] == 0
    world.reverts("UnexpectedMove", "timeout", game_id, sender=world.other)


def test_a_challenger_that_stops_moving_loses_on_time_and_the_result_stands(world: World) -> None:
    server = world.side()
    task_id = world.submitted(server)
    game_id = world.challenge(task_id, world.side(tamper=1))
    advance(world.chain, CLOCK // 2)
    world.send("bisectTrace", game_id, server.trace(1), sender=world.server)  # server used ~half
    advance(world.chain, CLOCK // 2 + 10)
    # The challenger's clock is fresh: what the server spent does not count against it.
    world.reverts("ClockNotExpired", "timeout", game_id, sender=world.other)
    advance(world.chain, CLOCK // 2)
    assert world.reverts(
        "ClockExpired", "respondTrace", game_id, True, sender=world.challenger
    ) == (CHALLENGER,)
    r = world.send("timeout", game_id, sender=world.server)
    assert event(world.registry, "GameEnded", r)["winner"] == SERVER
    g = world.game(game_id)
    assert (g[2], g[3], g[4]) == (ENDED, SERVER, TIMEOUT) and 0 < g[10] <= CLOCK // 2
    assert world.task(task_id)[5] == SUBMITTED
    advance(world.chain, WINDOW)
    world.send("finalize", task_id)


# ---------------------------------------------------------------------------- whole games


@pytest.mark.parametrize("tamper", [2, 1, 0], ids=["final-output", "middle-node", "first-node"])
def test_a_lying_server_loses_to_the_honest_challenger_and_its_bond(
    world: World, tamper: int
) -> None:
    server, challenger = world.side(tamper=tamper), world.side()
    task_id = world.submitted(server)
    game_id = world.challenge(task_id, challenger)
    credit_before = world.registry.functions.credit(world.challenger).call()
    log = world.play(game_id, server, challenger)
    assert (log.winner, log.reason, log.node) == (CHALLENGER, STEP_PROVEN, tamper)
    task = world.task(task_id)
    assert task[5] == REJECTED and task[9] == 0 and task[6] == 0
    assert world.registry.functions.credit(world.challenger).call() == credit_before + 2 * BOND
    assert_withdraws(world, world.challenger, credit_before + 2 * BOND)


@pytest.mark.parametrize(
    "tamper, moves",
    [(2, "honest"), (0, "honest"), (None, "random"), (1, "bad-proof")],
    ids=[
        "disputes-a-correct-result",
        "believes-a-wrong-first-node",
        "random-answers",
        "bad-final-proof",
    ],
)
def test_a_lying_challenger_loses_to_the_honest_server(
    world: World, tamper: int | None, moves: str
) -> None:
    server, challenger = world.side(), world.side(tamper=tamper)
    task_id = world.submitted(server)
    # A challenger with no wrong belief still needs another final trace to challenge at all.
    claim = world.side(tamper=2) if tamper is None else challenger
    game_id = world.challenge(task_id, claim)
    credit_before = world.registry.functions.credit(world.server).call()
    log = world.play(game_id, server, challenger, challenger_moves=moves, seed=3)
    assert (log.winner, log.reason) == (SERVER, STEP_PROVEN)
    assert world.registry.functions.credit(world.server).call() == credit_before + BOND
    # The server's own stake is back in the backing, which finalize returns.
    assert world.task(task_id)[5] == SUBMITTED and world.task(task_id)[9] == BACKING
    advance(world.chain, WINDOW + 1)
    world.send("finalize", task_id)
    assert_withdraws(world, world.server, credit_before + BOND + BACKING)


def test_a_colluding_challenger_that_loses_cannot_save_a_wrong_result(world: World) -> None:
    liar = world.side(tamper=1)
    task_id = world.submitted(liar)
    decoy = world.challenge(task_id, world.side(tamper=2), sender=world.other)
    game_id = world.challenge(task_id, world.side())
    assert world.task(task_id)[6] == 2
    decoy_log = world.play(decoy, liar, liar)  # agrees with the server's every claim
    assert decoy_log.winner == SERVER and world.task(task_id)[5] == SUBMITTED
    before = world.credit(world.challenger)
    log = world.play(game_id, liar, world.side())
    assert log.winner == CHALLENGER and world.task(task_id)[5] == REJECTED
    assert world.credit(world.challenger) == before + 2 * BOND
    advance(world.chain, WINDOW + 1)
    world.reverts("NoOpenResult", "finalize", task_id)


def test_gas_of_each_move(world: World) -> None:
    server, challenger = world.side(tamper=1), world.side()
    task_id = world.new_task()
    r_submit = world.send(
        "submitResult",
        task_id,
        server.output_root,
        server.trace(N_NODES),
        server.output_proof(),
        sender=world.server,
        value=BACKING,
    )
    r_challenge = world.send(
        "challenge",
        task_id,
        challenger.output_root,
        challenger.trace(N_NODES),
        challenger.output_proof(),
        sender=world.challenger,
        value=BOND,
    )
    log = world.play(event(world.registry, "Challenged", r_challenge)["gameId"], server, challenger)
    gas = {"submitResult": [r_submit["gasUsed"]], "challenge": [r_challenge["gasUsed"]], **log.gas}
    print("\ngas used per move (transaction total, embedded chain):")
    for name, used in gas.items():
        print(f"  {name:14s} max {max(used):>7,}  ({len(used)}x)")
    assert max(gas["bisectTrace"] + gas["bisectStep"]) < 80_000
    assert max(gas["respondTrace"] + gas["respondStep"]) < 80_000
    assert max(gas["startNode"]) < 250_000
    assert max(gas["proveStep"]) < 200_000
    assert (log.rounds_trace, log.rounds_step) == (2, server.node_run(1).log2_steps)
