"""Accounts (opmlc/dispute/accounts.py) and the chain commands' one-line errors.

A key from $OPMLC_PRIVATE_KEY or an encrypted keystore signs locally (checked on the embedded
chain, which only accepts it as a raw transaction); a bad key, a wrong password, a missing or
malformed deployment file, a bad URL or address is one line and exit code 2, and no message
ever contains the key.
"""

from __future__ import annotations

import json

import pytest
from eth_account import Account
from typer.testing import CliRunner

from opmlc.cli import app
from opmlc.dispute.accounts import (
    PASSWORD_ENV,
    PRIVATE_KEY_ENV,
    AccountError,
    account_from_key,
    load_keystore,
    local_account,
    use_account,
    write_keystore,
)
from opmlc.dispute.deployment import FORMAT
from toolchain.chain import connect

KEY = "0x" + "4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318"
ADDRESS = Account.from_key(KEY).address
runner = CliRunner()
FAST = {"kdf": "pbkdf2", "iterations": 1000}  # scrypt's default cost takes seconds per decryption


def no_key(text: str) -> None:
    assert KEY[2:].lower() not in text.lower()


def test_a_private_key_from_the_environment_with_or_without_0x():
    assert local_account(env={PRIVATE_KEY_ENV: KEY}).address == ADDRESS
    assert local_account(env={PRIVATE_KEY_ENV: KEY[2:] + "\n"}).address == ADDRESS
    assert local_account(env={}) is None  # then the node's unlocked accounts send


@pytest.mark.parametrize("bad", [KEY[:-1], KEY + "00", KEY[:-1] + "g", "0x" + "00" * 32])
def test_a_bad_private_key_is_named_but_never_echoed(bad):
    with pytest.raises(AccountError, match=PRIVATE_KEY_ENV) as e:
        account_from_key(bad)
    assert bad[2:12] not in str(e.value)


def test_keystore_round_trip_wrong_password_and_damage(tmp_path):
    path = tmp_path / "k.json"
    write_keystore(path, Account.from_key(KEY), "secret", **FAST)
    assert (path.stat().st_mode & 0o777) == 0o600
    no_key(path.read_text())
    assert load_keystore(path, "secret").address == ADDRESS
    assert local_account(path, env={PASSWORD_ENV: "secret"}).address == ADDRESS
    assert local_account(path, env={}, prompt=lambda _: "secret").address == ADDRESS
    with pytest.raises(AccountError, match="wrong password for keystore"):
        load_keystore(path, "nope")
    with pytest.raises(AccountError, match="needs a password"):
        local_account(path, env={}, prompt=None)
    with pytest.raises(AccountError, match="never overwritten"):
        write_keystore(path, Account.create(), "x")
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(AccountError, match="not an encrypted keystore"):
        load_keystore(tmp_path / "bad.json", "x")
    with pytest.raises(AccountError, match="not found"):
        load_keystore(tmp_path / "missing.json", "x")


def test_a_local_key_signs_and_sends_raw_on_a_node_that_does_not_know_it():
    chain = connect(None)
    w3 = chain.w3
    w3.eth.send_transaction({"from": chain.accounts[0], "to": ADDRESS, "value": 10**18})
    assert use_account(chain, Account.from_key(KEY)) == ADDRESS == chain.sender
    tx = w3.eth.send_transaction({"from": ADDRESS, "to": chain.accounts[1], "value": 1})
    assert w3.eth.wait_for_transaction_receipt(tx)["from"] == ADDRESS


def test_unlocked_accounts_by_index_or_address():
    chain = connect(None)
    second = chain.accounts[1]
    assert use_account(chain, None, "1") == second == chain.sender
    assert use_account(connect(None), None, second.lower()) == second
    with pytest.raises(AccountError, match="--account 99"):
        use_account(connect(None), None, "99")
    with pytest.raises(AccountError, match="neither an index nor an address"):
        use_account(connect(None), None, "0x1234")


def fail(*args: str, env: dict | None = None) -> str:
    r = runner.invoke(app, list(args), env=env or {PRIVATE_KEY_ENV: None, PASSWORD_ENV: None})
    assert r.exit_code == 2, r.output
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("opmlc: error: "), r.output
    no_key(r.output)
    return lines[0]


def test_chain_commands_fail_in_one_line(tmp_path):
    dep = tmp_path / "deployment.json"
    assert "not found" in fail("result", "0", "--deployment", str(dep))
    dep.write_text("not json")
    assert "not JSON" in fail("result", "0", "--deployment", str(dep))
    doc = {"format": FORMAT, "chain_id": 1, "rpc": "http://127.0.0.1:1", "registry": "0x1234", "mips": "0x" + "11" * 20,
           "first_block": 1, "bond": 1, "challenge_window": 1, "clock": 1}
    dep.write_text(json.dumps(doc))
    assert "registry '0x1234' is not an address" in fail("result", "0", "--deployment", str(dep))
    dep.write_text(json.dumps({**doc, "registry": "0x" + "22" * 20}))
    assert "cannot reach" in fail("result", "0", "--deployment", str(dep))
    assert "not a JSON-RPC URL" in fail("result", "0", "--deployment", str(dep), "--rpc", "ftp://x")
    new = str(tmp_path / "new.json")
    assert PRIVATE_KEY_ENV in fail("deploy", "--rpc", "http://127.0.0.1:1", "-o", new, env={PRIVATE_KEY_ENV: KEY[:-2]})
    keystore = tmp_path / "k.json"
    write_keystore(keystore, Account.from_key(KEY), "secret", **FAST)
    assert "wrong password" in fail("deploy", "--rpc", "http://127.0.0.1:1", "-o", new, "--keystore", str(keystore),
                                    env={PASSWORD_ENV: "nope"})
    assert "not a JSON-RPC URL" in fail("deploy", "--rpc", "nonsense", "-o", new)
    assert "--keystore and --account" in fail("deploy", "--rpc", "http://127.0.0.1:1", "-o", new, "--account", "1",
                                              "--keystore", str(keystore))
    assert "never overwritten" in fail("deploy", "--rpc", "http://127.0.0.1:1", "-o", str(dep))


def test_the_public_api_covers_claims_proofs_parties_and_deployments():
    import opmlc

    for name in ("claim", "prove_step", "deploy", "Deployment", "DeploymentFile", "open_deployment",
                 "Requester", "Server", "Challenger", "ServerService", "ChallengerService", "local_account"):
        assert name in opmlc.__all__ and getattr(opmlc, name) is not None
    with pytest.raises(AttributeError):
        opmlc.no_such_name  # noqa: B018
