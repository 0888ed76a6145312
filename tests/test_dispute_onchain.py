"""Whole disputes on the embedded chain with the digits MLP: every lying server loses to the
honest challenger, every lying challenger loses to the honest server, a party that stops moving
loses on time, a restarted party resumes from its SQLite file and still wins, each game's two
stakes go to its winner, and an unchallenged result finalizes after the window, returning its
backing (tests/contracts/test_dispute_stakes.py has the collusion and race cases)."""

from __future__ import annotations

import numpy as np
import pytest

from opmlc.dispute.graph_trace import Tamper
from opmlc.dispute.onchain import DEFAULT_BACKED_GAMES, DEFAULT_BOND, Deployment, Phase
from opmlc.dispute.parties import Challenger, Requester, Server
from opmlc.dispute.session import settle
from tests.conftest import MODELS
from toolchain.errors import ContractReverted

X = np.load(MODELS / "digit_sample.npy")
BACKING = DEFAULT_BACKED_GAMES * DEFAULT_BOND


@pytest.fixture
def game(digits_build):
    """A fresh deployment, the model registered, one task requested; returns a factory."""
    d = Deployment.create()
    accounts = d.chain.accounts
    req = Requester(d, accounts[0], digits_build)
    req.register()
    task = req.request([X])

    def start(server_kw=None, challenger_kw=None, db=None):
        server = Server(d, accounts[1], digits_build, db=db, **(server_kw or {}))
        server.submit(task, [X])
        challenger = Challenger(d, accounts[2], digits_build, **(challenger_kw or {}))
        return server, challenger, challenger.check(task, [X])

    return d, task, start


def credits(d):
    a = d.chain.accounts
    return d.registry.functions.credit(a[1]).call(), d.registry.functions.credit(a[2]).call()


@pytest.mark.parametrize("node", [2, 1, 0], ids=["final-output", "middle-node", "first-node"])
def test_a_lying_server_loses_to_the_honest_challenger(game, node):
    d, task, start = game
    server, challenger, gid = start(server_kw={"tamper": Tamper(node)})
    assert gid is not None
    g = settle(d, server, challenger, gid)
    assert g.winner == "challenger" and g.node == node and g.reason == 1  # settled by MIPS.step
    # The challenger: both stakes of its game; the server: the backing no game held.
    assert credits(d) == (BACKING - DEFAULT_BOND, 2 * DEFAULT_BOND)
    assert d.task(task)["status"] != 2  # not finalized: the result was rejected


@pytest.mark.parametrize("kw", [{"tamper": Tamper(1)}, {"tamper": Tamper(0), "moves": "random", "seed": 5},
                                {"tamper": Tamper(2), "moves": "bad-proof"}],
                         ids=["disputes-a-correct-result", "random-bisection", "bad-final-proof"])
def test_a_lying_challenger_loses_to_the_honest_server(game, kw):
    d, _, start = game
    server, challenger, gid = start(challenger_kw=kw)
    g = settle(d, server, challenger, gid)
    assert g.winner == "server"
    assert credits(d) == (DEFAULT_BOND, 0)  # the challenger's stake; the backing returns at finalize
    assert d.task(d.game(gid).task_id)["backing"] == BACKING


def test_a_bad_final_proof_is_rejected_by_the_contract(game):
    d, _, start = game
    server, challenger, gid = start(challenger_kw={"tamper": Tamper(2), "moves": "bad-proof"})
    while d.game(gid).phase is not Phase.PROVE_STEP:
        assert server.act(gid) or challenger.act(gid)
    pre, proof = challenger.verifier(d.game(gid).task_id).prove_step(d.game(gid).node, d.game(gid).lo)
    with pytest.raises(ContractReverted):
        d.send("challenger", d.chain.accounts[2], d.registry.functions.proveStep(gid, pre, proof))


def test_a_server_that_stops_moving_loses_on_time(game):
    d, _, start = game
    server, challenger, gid = start(server_kw={"tamper": Tamper(2), "stop_after": 3})
    g = settle(d, server, challenger, gid)
    assert g.winner == "challenger" and g.reason == 2  # timeout


def test_a_challenger_that_stops_moving_loses_on_time(game):
    d, _, start = game
    server, challenger, gid = start(challenger_kw={"tamper": Tamper(1), "stop_after": 2})
    g = settle(d, server, challenger, gid)
    assert g.winner == "server" and g.reason == 2


def test_a_restarted_server_resumes_from_its_database_and_wins(game, digits_build, tmp_path):
    d, _, start = game
    db = tmp_path / "server.sqlite"
    server, challenger, gid = start(challenger_kw={"tamper": Tamper(0)}, db=db)
    for _ in range(4):  # a few moves, then the server process "dies"
        server.act(gid) or challenger.act(gid)
    del server
    again = Server(d, d.chain.accounts[1], digits_build, db=db)  # knows nothing but its file
    g = settle(d, again, challenger, gid)
    assert g.winner == "server"


def test_an_unchallenged_result_finalizes_after_the_window(game):
    d, task, start = game
    server, challenger, gid = start()
    assert gid is None  # the honest challenger agrees: no game
    with pytest.raises(ContractReverted, match="ChallengeWindowOpen"):
        d.send("server", d.chain.accounts[1], d.registry.functions.finalize(task))
    d.advance_time(3601)
    d.send("server", d.chain.accounts[1], d.registry.functions.finalize(task))
    assert credits(d)[0] == BACKING

