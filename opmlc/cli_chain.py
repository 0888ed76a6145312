"""The CLI commands of a real deployment: `deploy`, `register`, `request`, `result`, `serve`,
`watch` and `account new`, added to opmlc/cli.py's app by `add_commands(app)`.

They sit on opmlc/dispute/deployment.py (the deployment file and the input store),
opmlc/dispute/accounts.py (which key signs) and opmlc/dispute/service.py (the long-running loops).
Every mistake — a missing deployment file, a bad URL, key, password or address — is one line on
stderr and exit code 2, through cli.py's `user_errors`.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Annotated

import typer

from opmlc.dispute.defaults import DEFAULT_BACKED_GAMES, DEFAULT_BOND, DEFAULT_CLOCK, DEFAULT_WINDOW
from opmlc.errors import OpmlcError

DeploymentOpt = Annotated[Path, typer.Option("--deployment", "-d", help="The file `opmlc deploy` wrote.")]
RpcOpt = Annotated[str | None, typer.Option("--rpc", help="JSON-RPC URL; overrides the deployment file's.")]
KeystoreOpt = Annotated[Path | None, typer.Option(
    "--keystore", help="Sign with this encrypted keystore (password: $OPMLC_KEYSTORE_PASSWORD or a prompt).")]
AccountOpt = Annotated[str | None, typer.Option(
    "--account", help="Without a key: the node's unlocked account to send from, by index or address.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object.")]
StoreOpt = Annotated[Path | None, typer.Option(
    "--store", help="The input store directory (default: the deployment file's).")]

PollOpt = Annotated[float, typer.Option("--poll", help="Seconds between passes over the chain.")]
DbOpt = Annotated[Path | None, typer.Option(
    "--db", help="SQLite state (cursor, tasks, games); default opmlc-<role>-<address>.db here.")]
BuildsArg = Annotated[list[Path], typer.Argument(help="Build directories of the models.")]


def _key(keystore: Path | None, account: str | None):
    """The local key to sign with, read before any connection (a bad key or password fails at
    once): --keystore, else $OPMLC_PRIVATE_KEY unless --account picks a node's unlocked account."""
    from opmlc.dispute.accounts import local_account

    if keystore is not None and account is not None:
        raise OpmlcError("--keystore and --account: pass one (--account picks a node's unlocked account)")
    return local_account(keystore) if account is None else None


def _open(deployment: Path, rpc: str | None, keystore: Path | None, account: str | None):
    """(record, handle, sender address) of a deployment file."""
    from opmlc.dispute.accounts import use_account
    from opmlc.dispute.deployment import DeploymentFile, open_deployment

    info = DeploymentFile.load(deployment)
    key = _key(keystore, account)
    d = open_deployment(info, rpc)
    return info, d, use_account(d.chain, key, account)


def _store(info, store: Path | None):
    from opmlc.dispute.deployment import InputStore

    return InputStore(store if store is not None else info.store_dir())


def add_commands(app: typer.Typer, user_errors, load_inputs) -> None:
    """Register the commands on `app` (cli.py's), wrapped in its `user_errors`."""

    @app.command("deploy")
    @user_errors
    def deploy_cmd(
        rpc: Annotated[str, typer.Option("--rpc", help="JSON-RPC URL of the node to deploy on.")],
        output: Annotated[Path, typer.Option("-o", "--output", help="The deployment file to write.")],
        bond: Annotated[int, typer.Option("--bond", help="Each side's stake in a game, in wei (a challenge carries one).")] = DEFAULT_BOND,
        backed_games: Annotated[int, typer.Option("--backed-games", help="Games a result's backing (bond × N, sent with the result) pays for.")] = DEFAULT_BACKED_GAMES,
        window: Annotated[int, typer.Option("--window", help="Seconds a result can be challenged.")] = DEFAULT_WINDOW,
        clock: Annotated[int, typer.Option("--clock", help="Each party's clock in a game, in seconds.")] = DEFAULT_CLOCK,
        store: Annotated[str, typer.Option("--store", help="Input store directory, relative to the file.")] = "inputs",
        keystore: KeystoreOpt = None,
        account: AccountOpt = None,
        as_json: JsonOpt = False,
    ) -> None:
        """Deploy MIPS.sol and the TaskRegistry once and record them in a deployment file.

        Every other chain command takes `--deployment FILE`.
        """
        from opmlc.dispute.accounts import use_account
        from opmlc.dispute.deployment import deploy
        from toolchain.chain import connect

        if output.exists():
            raise OpmlcError(f"{output} exists: a deployment file is never overwritten; choose another -o")
        key = _key(keystore, account)
        chain = connect(rpc)
        sender = use_account(chain, key, account)
        _, info = deploy(chain, bond=bond, window=window, clock=clock, store=store, backed_games=backed_games)
        info.save(output)
        if as_json:
            typer.echo(json.dumps({"deployment": str(output), "from": sender, **info.to_json()}))
        else:
            typer.echo(f"deployed TaskRegistry {info.registry} and MIPS {info.mips} on chain {info.chain_id} "
                       f"from {sender}; wrote {output}")

    @app.command("register")
    @user_errors
    def register_cmd(
        build_dir: Annotated[Path, typer.Argument(help="A build directory from `opmlc compile`.")],
        deployment: DeploymentOpt,
        rpc: RpcOpt = None,
        keystore: KeystoreOpt = None,
        account: AccountOpt = None,
        as_json: JsonOpt = False,
    ) -> None:
        """Register a build's model commitment with the deployment (once per model)."""
        from opmlc.artifact import Build
        from opmlc.dispute.parties import Requester

        build = Build.load(build_dir)
        _, d, sender = _open(deployment, rpc, keystore, account)
        model_id = Requester(d, sender, build).register()
        if as_json:
            typer.echo(json.dumps({"model_id": "0x" + model_id.hex(), "build": str(build_dir)}))
        else:
            typer.echo(f"model 0x{model_id.hex()} registered ({build_dir})")

    @app.command("request")
    @user_errors
    def request_cmd(
        build_dir: Annotated[Path, typer.Argument(help="A build directory from `opmlc compile`.")],
        input: Annotated[list[Path], typer.Option("--input", help=".npy file of a graph input (repeat in order).")],
        deployment: DeploymentOpt,
        rpc: RpcOpt = None,
        store: StoreOpt = None,
        keystore: KeystoreOpt = None,
        account: AccountOpt = None,
        as_json: JsonOpt = False,
    ) -> None:
        """Request inference: the inputs go to the input store, their roots on chain.

        Prints the task id (`--json`: {"task_id", "model_id", "input_roots"}).
        """
        from opmlc.artifact import Build
        from opmlc.dispute.commitment import model_commitment
        from opmlc.dispute.parties import Requester
        from toolchain.errors import ContractReverted

        build = Build.load(build_dir)
        arrays = load_inputs(build, input)
        info, d, sender = _open(deployment, rpc, keystore, account)
        roots = _store(info, store).put(build, arrays)
        try:
            task_id = Requester(d, sender, build).request(arrays)
        except ContractReverted as exc:
            if exc.error == "UnknownModel":
                raise OpmlcError(f"the model of {build_dir} is not registered on this deployment: run "
                                 f"`opmlc register {build_dir} --deployment {deployment}`") from None
            raise
        model_id = model_commitment(build).model_id()
        if as_json:
            typer.echo(json.dumps({"task_id": task_id, "model_id": "0x" + model_id.hex(),
                                   "input_roots": ["0x" + r.hex() for r in roots]}))
        else:
            typer.echo(f"task {task_id}: requested inference of {build_dir}")

    @app.command("result")
    @user_errors
    def result_cmd(
        task_id: Annotated[int, typer.Argument(help="The task id `opmlc request` printed.")],
        deployment: DeploymentOpt,
        rpc: RpcOpt = None,
        as_json: JsonOpt = False,
    ) -> None:
        """A task's state (requested, submitted, challenged, finalized, rejected), output root and games."""
        from opmlc.dispute.deployment import DeploymentFile, open_deployment
        from opmlc.dispute.service import task_report

        info = DeploymentFile.load(deployment)
        report = task_report(open_deployment(info, rpc), info, task_id)
        if as_json:
            typer.echo(json.dumps(report))
            return
        typer.echo(f"task {task_id}: {report['state']}")
        if report["output_root"]:
            typer.echo(f"output root {report['output_root']} from {report['server']}")
        for g in report["games"]:
            end = f": the {g['winner']} won ({g['reason']})" if g["winner"] else ""
            state = end or f", in play (awaiting {g['phase']})"
            typer.echo(f"game {g['game_id']}: challenger {g['challenger']}{state}")

    def _service(kind, builds, deployment, rpc, db, store, keystore, account, poll, **kwargs) -> None:
        import sys

        from opmlc.artifact import Build

        loaded = [Build.load(b) for b in builds]
        info, d, sender = _open(deployment, rpc, keystore, account)
        if db is None:
            db = Path(f"opmlc-{kind.role}-{sender[2:10].lower()}.db")

        def say(line: str) -> None:
            print(line, flush=True)

        service = kind(d, info, loaded, sender, db=db, store=_store(info, store), say=say, poll=poll, **kwargs)

        def stop(signum, _frame) -> None:
            # No printing here: the signal may arrive in the middle of a print (a reentrant write).
            service.stop_reason = signal.Signals(signum).name
            service.stopping.set()

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        service.run()
        sys.stdout.flush()

    @app.command("serve")
    @user_errors
    def serve_cmd(
        builds: BuildsArg,
        deployment: DeploymentOpt,
        rpc: RpcOpt = None,
        db: DbOpt = None,
        store: StoreOpt = None,
        lie_node: Annotated[int | None, typer.Option(
            "--lie-node", help="Post wrong results: node K's output altered (tests, demos).")] = None,
        poll: PollOpt = 2.0,
        keystore: KeystoreOpt = None,
        account: AccountOpt = None,
    ) -> None:
        """Run a server: answer requests with bonded results, defend challenges, finalize, withdraw.

        Runs until SIGINT/SIGTERM and resumes from --db after a stop or a crash.
        """
        from opmlc.dispute.service import ServerService

        _service(ServerService, builds, deployment, rpc, db, store, keystore, account, poll, lie_node=lie_node)

    @app.command("watch")
    @user_errors
    def watch_cmd(
        builds: BuildsArg,
        deployment: DeploymentOpt,
        rpc: RpcOpt = None,
        db: DbOpt = None,
        store: StoreOpt = None,
        poll: PollOpt = 2.0,
        keystore: KeystoreOpt = None,
        account: AccountOpt = None,
    ) -> None:
        """Run a challenger: verify every result, challenge the wrong ones, play to the end, withdraw.

        Runs until SIGINT/SIGTERM and resumes from --db after a stop or a crash.
        """
        from opmlc.dispute.service import ChallengerService

        _service(ChallengerService, builds, deployment, rpc, db, store, keystore, account, poll)

    account_app = typer.Typer(help="Make keystores for the chain commands.", no_args_is_help=True)
    app.add_typer(account_app, name="account")

    @account_app.command("new")
    @user_errors
    def account_new_cmd(
        output: Annotated[Path, typer.Option("-o", "--output", help="The keystore file to write.")],
        from_env: Annotated[bool, typer.Option(
            "--from-env", help="Encrypt $OPMLC_PRIVATE_KEY instead of a new random key.")] = False,
    ) -> None:
        """Write an encrypted keystore of a new key (or $OPMLC_PRIVATE_KEY); prints its address only.

        The password comes from $OPMLC_KEYSTORE_PASSWORD or a prompt.
        """
        import os

        from eth_account import Account

        from opmlc.dispute.accounts import (
            PRIVATE_KEY_ENV,
            account_from_key,
            keystore_password,
            write_keystore,
        )

        if from_env:
            if not os.environ.get(PRIVATE_KEY_ENV):
                raise OpmlcError(f"--from-env: {PRIVATE_KEY_ENV} is not set")
            acct = account_from_key(os.environ[PRIVATE_KEY_ENV])
        else:
            acct = Account.create()
        write_keystore(output, acct, keystore_password(output))
        typer.echo(f"wrote {output}: address {acct.address}")
