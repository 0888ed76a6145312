"""The CLI as a manual: `opmlc ops`, shell completion, and help that reads like a man page."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from opmlc.cli import app
from opmlc.frontend.rules import RULES

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


def test_ops_lists_every_rule_with_domain_and_opsets():
    r = runner.invoke(app, ["ops", "--json"])
    assert r.exit_code == 0, r.output
    ops = json.loads(r.stdout)
    keys = {o["op"] if o["domain"] == "ai.onnx" else f"{o['domain']}:{o['op']}" for o in ops}
    assert keys == set(RULES)
    by = {(o["domain"], o["op"]): o for o in ops}
    softmax = by[("ai.onnx", "Softmax")]
    assert softmax["opsets"][0] == 7 and 13 in softmax["versions"] and 11 in softmax["versions"]
    assert ("ai.onnx.ml", "TreeEnsembleClassifier") in by
    text = runner.invoke(app, ["ops"]).stdout.splitlines()
    assert len(text) == len(ops) + 1 and text[-1].startswith(f"{len(ops)} ops")


def test_show_and_install_completion(tmp_path):
    env = {**os.environ, "HOME": str(tmp_path), "SHELL": "/bin/bash"}
    run = lambda *a, **kw: subprocess.run([sys.executable, "-m", "opmlc.cli", *a], cwd=ROOT, env={**env, **kw},  # noqa: E731
                                          capture_output=True, text=True, timeout=60)
    r = run("--install-completion", "bash")
    assert r.returncode == 0, r.stderr
    assert "_OPMLC_COMPLETE" in (tmp_path / ".bash_completions" / "opmlc.sh").read_text()
    assert "opmlc.sh" in (tmp_path / ".bashrc").read_text()
    # what the installed script asks for: the commands that start with "co"
    r = run(COMP_WORDS="opmlc co", COMP_CWORD="1", _OPMLC_COMPLETE="complete_bash")
    assert r.stdout.split() == ["compile", "conformance"]


def test_help_reads_like_a_manual_page():
    r = runner.invoke(app, ["--help"])
    assert r.exit_code == 0
    out = r.stdout
    assert "Exit status:" in out and "--install-completion" in out
    assert "model.elf." in out  # the summaries are whole, not cut at the terminal's width
    r = runner.invoke(app, ["run", "--help"])
    assert "-i, --input PATH" in r.stdout and "--node N" in r.stdout and "<bool>" not in r.stdout
    assert "its output is printed" in " ".join(r.stdout.split())  # paragraphs rewrapped
