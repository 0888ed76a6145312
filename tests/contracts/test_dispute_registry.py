"""TaskRegistry: model ids and trace state 0 as the Python side computes them, results with
their backing and challenges with one stake inside the window, finalize after it, and credits
that withdraw."""

from __future__ import annotations

import pytest
from dispute_world import (
    BACKED_GAMES,
    BACKING,
    BOND,
    FINALIZED,
    MODEL_COMMITMENT_TYPE,
    N_NODES,
    REQUESTED,
    SUBMITTED,
    WINDOW,
    World,
    advance,
    assert_withdraws,
    event,
    events,
    make_world,
)
from eth_abi import encode as abi_encode

from vm.merkle import ZERO_LEAF, keccak256, list_root


@pytest.fixture(scope="module")
def world() -> World:
    return make_world(seed=1)


def test_model_id_is_keccak_of_the_abi_encoded_commitment(world: World) -> None:
    commitment = world.model.commitment
    expected = keccak256(abi_encode([MODEL_COMMITMENT_TYPE], [commitment]))
    assert world.registry.functions.registerModel(commitment).call() == expected
    assert tuple(world.registry.functions.getModel(expected).call()) == commitment


def test_registering_a_model_again_changes_nothing(world: World) -> None:
    r = world.send("registerModel", world.model.commitment)
    assert events(world.registry, "ModelRegistered", r) == []


@pytest.mark.parametrize(
    "field, value",
    [(2, 0), (4, 3), (3, 4), (6, 5)],
    ids=["no-nodes", "inputs-past-first-node-value", "nodes-past-n-values", "output-past-n-values"],
)
def test_a_commitment_that_breaks_the_numbering_is_refused(
    world: World, field: int, value: int
) -> None:
    bad = list(world.model.commitment)
    bad[field] = value
    world.reverts("InvalidModelCommitment", "registerModel", tuple(bad))


def test_trace_state_0_is_the_python_list_root_of_inputs_and_initializers(world: World) -> None:
    honest = world.side()
    x_root, w_root = honest.roots[0], honest.roots[1]
    expected = list_root([x_root, w_root, ZERO_LEAF, ZERO_LEAF, ZERO_LEAF])
    _, proofs = world.model.input_proofs([x_root])
    r = world.send("requestInference", world.model.model_id, [x_root], proofs)
    ev = event(world.registry, "InferenceRequested", r)
    assert ev["trace0"] == expected == honest.trace(0)
    assert list(ev["inputRoots"]) == [x_root] and ev["requester"] == world.requester
    task = world.task(ev["taskId"])
    assert task[1] == expected and task[5] == REQUESTED


def test_request_checks_model_inputs_and_their_proofs(world: World) -> None:
    x_root = world.side().roots[0]
    _, proofs = world.model.input_proofs([x_root])
    world.reverts("UnknownModel", "requestInference", b"\x01" * 32, [x_root], proofs)
    world.reverts("InputRootCountMismatch", "requestInference", world.model.model_id, [], [])
    bad = [[proofs[0][0][::-1]] + proofs[0][1:]]
    assert world.reverts(
        "InvalidInputProof", "requestInference", world.model.model_id, [x_root], bad
    ) == (0,)
    short = [proofs[0][:-1]]
    world.reverts(
        "InvalidListProofLength", "requestInference", world.model.model_id, [x_root], short
    )


def test_submit_needs_exactly_the_backing_checks_the_output_proof_and_takes_one_result(
    world: World,
) -> None:
    honest = world.side()
    task_id = world.new_task()
    args = (task_id, honest.output_root, honest.trace(N_NODES), honest.output_proof())
    for wrong_value in (BOND, BACKING - 1, BACKING + BOND):  # one stake is not the backing
        assert world.reverts(
            "WrongBacking", "submitResult", *args, sender=world.server, value=wrong_value
        ) == (wrong_value, BACKING)
    wrong = (task_id, honest.roots[3], honest.trace(N_NODES), honest.output_proof())
    world.reverts("InvalidOutputProof", "submitResult", *wrong, sender=world.server, value=BACKING)
    world.reverts(
        "UnknownTask", "submitResult", 10**6, *args[1:], sender=world.server, value=BACKING
    )
    r = world.send("submitResult", *args, sender=world.server, value=BACKING)
    ev = event(world.registry, "ResultSubmitted", r)
    assert ev["deadline"] == world.chain.w3.eth.get_block(r["blockNumber"])["timestamp"] + WINDOW
    task = world.task(task_id)
    assert task[5] == SUBMITTED and task[8] == world.server
    assert (task[9], task[10]) == (BACKING, 0)  # the whole backing free, the window running
    world.reverts(
        "ResultAlreadySubmitted", "submitResult", *args, sender=world.other, value=BACKING
    )


def test_a_challenge_with_the_servers_own_final_trace_is_refused(world: World) -> None:
    honest = world.side()
    task_id = world.submitted(honest)
    args = (task_id, honest.output_root, honest.trace(N_NODES), honest.output_proof())
    world.reverts("SameFinalTrace", "challenge", *args, sender=world.challenger, value=BOND)


def test_a_challenge_needs_exactly_one_stake_and_a_valid_output_proof(world: World) -> None:
    task_id = world.submitted(world.side())
    liar = world.side(tamper=2)
    args = (task_id, liar.output_root, liar.trace(N_NODES), liar.output_proof())
    for wrong_value in (0, BOND - 1, 2 * BOND):
        assert world.reverts(
            "WrongBond", "challenge", *args, sender=world.challenger, value=wrong_value
        ) == (wrong_value, BOND)
    bad = (task_id, liar.roots[0], liar.trace(N_NODES), liar.output_proof())
    world.reverts("InvalidOutputProof", "challenge", *bad, sender=world.challenger, value=BOND)
    unsubmitted = world.new_task()
    world.reverts(
        "NoOpenResult", "challenge", unsubmitted, *args[1:], sender=world.challenger, value=BOND
    )


def test_finalize_before_the_window_ends_is_refused_after_it_returns_the_backing(
    world: World,
) -> None:
    honest = world.side()
    task_id = world.submitted(honest)
    deadline = world.task(task_id)[7]
    assert world.reverts("ChallengeWindowOpen", "finalize", task_id) == (deadline,)
    advance(world.chain, WINDOW + 1)
    liar = world.side(tamper=0)
    late = (task_id, liar.output_root, liar.trace(N_NODES), liar.output_proof())
    world.reverts("ChallengeWindowClosed", "challenge", *late, sender=world.challenger, value=BOND)

    credit_before = world.registry.functions.credit(world.server).call()
    r = world.send("finalize", task_id)
    assert event(world.registry, "ResultFinalized", r)["outputRoot"] == honest.output_root
    assert world.task(task_id)[5] == FINALIZED and world.task(task_id)[9] == 0
    assert world.registry.functions.credit(world.server).call() == credit_before + BACKING
    world.reverts("NoOpenResult", "finalize", task_id)
    assert_withdraws(world, world.server, credit_before + BACKING)


def test_finalize_waits_for_every_open_game(world: World) -> None:
    task_id = world.submitted(world.side())
    world.challenge(task_id, world.side(tamper=1))
    advance(world.chain, WINDOW + 1)
    assert world.reverts("GamesPending", "finalize", task_id) == (1,)


def test_constructor_refuses_a_zero_window_clock_or_backing(world: World) -> None:
    from toolchain.chain import deploy
    from toolchain.errors import ChainError

    mips = world.chain.deployed["MIPS"].address
    for window, clock, games in ((0, 1, 1), (1, 0, 1), (1, 1, 0)):
        with pytest.raises(ChainError):
            deploy(world.chain, "TaskRegistry", mips, BOND, window, clock, games)


def test_defaults_are_public_constants(world: World) -> None:
    f = world.registry.functions
    assert f.DEFAULT_BOND().call() == 10**17
    assert f.DEFAULT_CHALLENGE_WINDOW().call() == 3600
    assert f.DEFAULT_CLOCK_SECONDS().call() == 7200
    assert f.DEFAULT_BACKED_GAMES().call() == 4 and f.GAME_STAKES().call() == 2
    assert (f.bondAmount().call(), f.challengeWindow().call(), f.clockSeconds().call()) == (
        BOND,
        WINDOW,
        1000,
    )
    assert f.backedGames().call() == BACKED_GAMES
