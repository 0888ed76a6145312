"""An --rpc URL that no JSON-RPC node answers is one line naming the URL, why (in a few words,
not the HTTP stack's internals) and what to do; on the CLI, exit code 2."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from typer.testing import CliRunner

from opmlc.cli import app
from toolchain.anvil import free_port
from toolchain.chain import connect
from toolchain.errors import ChainError

INTERNALS = ("urllib3", "HTTPConnection", "Max retries", "NewConnectionError", "Traceback")


def check_message(msg: str, url: str, reason: str) -> None:
    assert "\n" not in msg.strip() and url in msg and reason in msg and "--rpc" in msg, msg
    assert not any(word in msg for word in INTERNALS), msg


def test_a_refused_connection_says_so_without_internals():
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(ChainError) as info:
        connect(url)
    check_message(str(info.value), url, "connection refused")


def test_a_web_server_that_is_not_a_node_says_its_status():
    class NotFound(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 — http.server's naming
            self.send_error(404)

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), NotFound)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        with pytest.raises(ChainError) as info:
            connect(url)
        check_message(str(info.value), url, "HTTP status 404")
    finally:
        server.shutdown()


def test_demo_with_an_unreachable_rpc_is_exit_2_and_one_line():
    url = f"http://127.0.0.1:{free_port()}"
    r = CliRunner().invoke(app, ["demo", "--rpc", url])
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output
    last = r.stderr.strip().splitlines()[-1]  # after the demo's progress lines
    assert last.startswith("opmlc: error: ")
    check_message(last, url, "connection refused")
