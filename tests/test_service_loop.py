"""The serve/watch loops (opmlc/dispute/service.py) in-process on the embedded chain: the same
services as tests/test_services.py runs as processes, here stepped by hand so that a crash can
be put exactly between a transaction and its record, and a restart exactly in phase 2."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from opmlc.artifact import compile_model
from opmlc.dispute.commitment import model_commitment
from opmlc.dispute.deployment import DeploymentFile, InputStore
from opmlc.dispute.onchain import Deployment, Phase
from opmlc.dispute.parties import Requester
from opmlc.dispute.service import ChallengerService, ServerService, task_report
from opmlc.errors import OpmlcError
from toolchain.chain import connect

REPO = Path(__file__).resolve().parents[1]
BOND = 10**18


@pytest.fixture(scope="module")
def build(tmp_path_factory):
    return compile_model(REPO / "models" / "digits_mlp.onnx", tmp_path_factory.mktemp("loop") / "build")


@pytest.fixture
def world(build, tmp_path):
    chain = connect(None)
    first = int(chain.w3.eth.block_number) + 1
    d = Deployment.create(chain, bond=BOND, window=60, clock=600)
    info = DeploymentFile(chain_id=int(chain.w3.eth.chain_id), rpc="", registry=d.registry.address,
                          mips=chain.deployed["MIPS"].address, first_block=first, bond=BOND, challenge_window=60,
                          clock=600, store="inputs", path=tmp_path / "deployment.json")
    inputs = [np.load(REPO / "models" / "digit_sample.npy").astype(np.float32)]
    InputStore(info.store_dir()).put(build, inputs)
    requester = Requester(d, chain.accounts[0], build)
    requester.register()
    return {"d": d, "info": info, "a": chain.accounts, "task": requester.request(inputs), "inputs": inputs,
            "tmp": tmp_path, "lines": []}


def server(w, build, **kw):
    return ServerService(w["d"], w["info"], [build], w["a"][1], db=w["tmp"] / "serve.db", say=w["lines"].append,
                         poll=0, **kw)


def watch(w, build):
    return ChallengerService(w["d"], w["info"], [build], w["a"][2], db=w["tmp"] / "watch.db",
                             say=w["lines"].append, poll=0)


def test_restarts_mid_game_and_a_crash_between_send_and_record_change_nothing(world, build):
    w, d = world, world["d"]
    mid = model_commitment(build).model_id()
    s = server(w, build, lie_node=2)
    s.step()  # answers the task (with a lie)
    # The challenger sends its challenge and dies before recording it.
    c = watch(w, build)
    c.step()  # sees the request and the result (its cursor moves to here), then challenges: game 0
    c.db.execute("DELETE FROM service_games")
    c.db.execute("UPDATE service_tasks SET state = 'submitted'")
    c.db.commit()
    restarted_in_phase2 = False
    for _ in range(200):
        s.step()
        c.step()
        g = d.game(0)
        if g.phase is Phase.ENDED:
            break
        if g.phase in (Phase.BISECT_STEP, Phase.RESPOND_STEP) and not restarted_in_phase2:
            restarted_in_phase2 = True
            s, c = server(w, build, lie_node=2), watch(w, build)  # both killed and started again
    c.step()
    assert restarted_in_phase2 and d.game(0).winner == "challenger"
    assert len(d.events("Challenged")) == 1 and len(d.events("ResultSubmitted")) == 1
    assert int(d.registry.functions.credit(w["a"][2]).call()) == 0  # all withdrawn
    assert task_report(d, w["info"], w["task"])["state"] == "rejected"
    text = "\n".join(w["lines"])
    assert "our challenge is game 0" in text and "ended, the challenger wins (step proven): we won" in text
    assert mid in c.models


def test_an_honest_result_is_verified_and_finalized_after_the_window(world, build):
    w, d = world, world["d"]
    s, c = server(w, build), watch(w, build)
    s.step()
    c.step()
    assert task_report(d, w["info"], w["task"])["state"] == "submitted"
    s.step()  # inside the window: nothing to do
    d.advance_time(61)
    s.step()
    assert task_report(d, w["info"], w["task"])["state"] == "finalized"
    text = "\n".join(w["lines"])
    assert "result verified" in text and "finalized (window over" in text and "withdrew" in text
    assert int(d.registry.functions.credit(w["a"][1]).call()) == 0


def test_a_database_belongs_to_one_service(world, build):
    server(world, build)
    with pytest.raises(OpmlcError, match="belongs to another service"):
        ChallengerService(world["d"], world["info"], [build], world["a"][2], db=world["tmp"] / "serve.db")
    with pytest.raises(OpmlcError, match="--db .*: not a database"):
        server(world | {"tmp": world["tmp"] / "no" / "such" / "dir"}, build)
    (world["tmp"] / "junk.db").write_bytes(b"not sqlite" * 100)
    with pytest.raises(OpmlcError, match="--db .*: not a database"):
        ChallengerService(world["d"], world["info"], [build], world["a"][2], db=world["tmp"] / "junk.db")
    with pytest.raises(OpmlcError, match="--lie-node 7"):
        ServerService(world["d"], world["info"], [build], world["a"][1], lie_node=7)


def test_serve_defends_its_result_against_a_lying_challenger_and_keeps_its_bond(world, build):
    from opmlc.dispute.graph_trace import Tamper
    from opmlc.dispute.parties import Challenger

    w, d = world, world["d"]
    s = server(w, build)
    s.step()
    liar = Challenger(d, w["a"][3], build, tamper=Tamper(0))
    game = liar.check(w["task"], w["inputs"])
    assert game == 0
    for _ in range(200):
        s.step()
        if d.game(game).phase is Phase.ENDED:
            break
        liar.act(game)
    s.step()
    assert d.game(game).winner == "server"
    text = "\n".join(w["lines"])
    assert "challenged by" in text and "we won" in text
    d.advance_time(61)
    s.step()
    assert task_report(d, w["info"], w["task"])["state"] == "finalized"
    # All it was credited is withdrawn: what it put in, and the lying challenger's stake on top.
    w3, me = d.chain.w3, w["a"][1]
    sent = sum(int(w3.eth.get_transaction(e["transactionHash"])["value"]) for e in d.events("ResultSubmitted"))
    got = sum(int(e["args"]["amount"]) for e in d.events("Withdrawn", account=me))
    assert got == sum(int(e["args"]["amount"]) for e in d.events("Credited", account=me)) > sent


def test_watch_wins_by_timeout_when_the_server_goes_away(world, build):
    w, d = world, world["d"]
    s, c = server(w, build, lie_node=2), watch(w, build)
    s.step()
    c.step()  # challenges: game 0, the server's move
    assert d.game(0).mover == "server"
    c.step()  # not due yet: nothing
    assert d.game(0).phase is not Phase.ENDED
    d.advance_time(601)
    c.step()
    g = d.game(0)
    assert g.winner == "challenger" and g.reason == 2
    assert "timeout: the server's clock ran out" in "\n".join(w["lines"])
