"""The account a party sends from: an encrypted keystore, a private key, or a node's own account.

Where it sits: between the CLI (which says where the key is) and toolchain/chain.py (which sends
transactions as `chain.sender`). A local key never leaves this process: `use_account` installs
web3's signing middleware, so every `transact({"from": address})` is signed here and sent with
`eth_sendRawTransaction`, which any JSON-RPC node (a hosted one, a testnet) accepts. A node's
unlocked accounts (`eth_accounts`: anvil, hardhat, a dev geth) still work for local chains.

Keys are never printed or logged: the errors below name the file or the environment variable,
never the key, and the key object is never formatted into a message.
"""

from __future__ import annotations

import getpass
import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path

from eth_account import Account
from eth_account.signers.local import LocalAccount
from web3 import Web3

from opmlc.errors import OpmlcError
from toolchain.chain import Chain

PRIVATE_KEY_ENV = "OPMLC_PRIVATE_KEY"
PASSWORD_ENV = "OPMLC_KEYSTORE_PASSWORD"


class AccountError(OpmlcError):
    """A key, keystore, password or account that cannot be used; the message never holds a key."""


def account_from_key(key: str, source: str = PRIVATE_KEY_ENV) -> LocalAccount:
    """The account of a hex private key (with or without 0x); `source` names it in errors."""
    text = key.strip()
    digits = text[2:] if text.lower().startswith("0x") else text
    if len(digits) != 64 or any(c not in "0123456789abcdefABCDEF" for c in digits):
        raise AccountError(f"{source} is not a private key: expected 64 hex digits (0x optional)")
    try:
        return Account.from_key("0x" + digits)
    except Exception:  # e.g. zero or above the curve order; the library's message may quote it
        raise AccountError(f"{source} is not a valid secp256k1 private key") from None


def load_keystore(path: str | Path, password: str) -> LocalAccount:
    """Decrypt an eth-account (Web3 Secret Storage v3) keystore file."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise AccountError(f"keystore {path} not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AccountError(f"keystore {path} is not a JSON keystore file ({type(exc).__name__})") from None
    if not isinstance(doc, dict) or not ({"crypto", "Crypto"} & doc.keys()):
        raise AccountError(f"keystore {path} is not an encrypted keystore (no 'crypto' section)")
    try:
        key = Account.decrypt(doc, password)
    except ValueError as exc:
        if "MAC mismatch" in str(exc):
            raise AccountError(f"wrong password for keystore {path}") from None
        raise AccountError(f"keystore {path} cannot be decrypted: unsupported or damaged") from None
    except Exception:
        raise AccountError(f"keystore {path} cannot be decrypted: unsupported or damaged") from None
    return Account.from_key(key)


def write_keystore(path: str | Path, account: LocalAccount, password: str, kdf: str | None = None,
                   iterations: int | None = None) -> None:
    """Encrypt `account` into a new keystore file (readable by its owner only); `kdf` and
    `iterations` as eth-account's `Account.encrypt` (default: scrypt at its default cost)."""
    path = Path(path)
    if path.exists():
        raise AccountError(f"{path} exists: choose another file (a keystore is never overwritten)")
    doc = Account.encrypt(account.key, password, kdf=kdf, iterations=iterations)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(doc, f)


def keystore_password(path: str | Path, env: Mapping[str, str] | None = None,
                      prompt: Callable[[str], str] | None = getpass.getpass) -> str:
    """The keystore's password: $OPMLC_KEYSTORE_PASSWORD, else asked on the terminal."""
    env = os.environ if env is None else env
    if PASSWORD_ENV in env:
        return env[PASSWORD_ENV]
    if prompt is None:
        raise AccountError(f"keystore {path} needs a password: set {PASSWORD_ENV}")
    try:
        return prompt(f"password for {path}: ")
    except (EOFError, KeyboardInterrupt):
        raise AccountError(f"keystore {path} needs a password: set {PASSWORD_ENV}") from None


def local_account(keystore: str | Path | None = None, env: Mapping[str, str] | None = None,
                  prompt: Callable[[str], str] | None = getpass.getpass) -> LocalAccount | None:
    """The local key a command signs with: `keystore` if given, else $OPMLC_PRIVATE_KEY, else None
    (then the node's unlocked accounts send)."""
    env = os.environ if env is None else env
    if keystore is not None:
        return load_keystore(keystore, keystore_password(keystore, env, prompt))
    if env.get(PRIVATE_KEY_ENV):
        return account_from_key(env[PRIVATE_KEY_ENV])
    return None


def use_account(chain: Chain, account: LocalAccount | None = None, unlocked: str | None = None) -> str:
    """Make `chain` send from one account and return its address.

    With a local `account`, transactions from its address are signed here (web3's signing
    middleware) and it becomes `chain.sender`. Otherwise `unlocked` picks one of the node's
    unlocked accounts, by index or address (default: the first).
    """
    if account is not None:
        if unlocked is not None:
            raise AccountError("--account picks a node's unlocked account: not with --keystore or "
                               f"{PRIVATE_KEY_ENV}")
        from web3.middleware import SignAndSendRawMiddlewareBuilder

        chain.w3.middleware_onion.inject(SignAndSendRawMiddlewareBuilder.build(account), layer=0)
        chain.accounts = [account.address] + [a for a in chain.accounts if a != account.address]
        return account.address
    if not chain.accounts:
        raise AccountError(f"the {chain.describe()} has no unlocked account: pass --keystore FILE "
                           f"or set {PRIVATE_KEY_ENV}")
    if unlocked is None:
        return chain.accounts[0]
    if unlocked.isdigit():
        i = int(unlocked)
        if i >= len(chain.accounts):
            raise AccountError(f"--account {i}: the node has unlocked accounts 0..{len(chain.accounts) - 1}")
        address = chain.accounts[i]
    else:
        if not Web3.is_address(unlocked):
            raise AccountError(f"--account {unlocked!r} is neither an index nor an address")
        address = Web3.to_checksum_address(unlocked)
        if address not in chain.accounts:
            raise AccountError(f"--account {address} is not unlocked on the {chain.describe()}")
    chain.accounts = [address] + [a for a in chain.accounts if a != address]
    return address
