"""`opmlc report`: the dispute picture from a game record and from an off-chain trace."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from typer.testing import CliRunner

from opmlc import report
from opmlc.cli import app

DOCS = Path(__file__).resolve().parents[1] / "docs"
runner = CliRunner()


def test_committed_dispute_picture_is_what_report_draws_from_the_committed_game() -> None:
    # docs/dispute.svg is referenced from the README; redraw it with
    # `opmlc report docs/dispute-game.json -o docs/dispute.svg` after changing opmlc/report.py.
    d = report.load(DOCS / "dispute-game.json")
    assert report.render_svg(d) == (DOCS / "dispute.svg").read_text()


def test_game_picture_narrows_to_the_disputed_node_and_step_with_gas_and_clocks(tmp_path: Path) -> None:
    rec = json.loads((DOCS / "dispute-game.json").read_text())
    d = report.from_game(rec)
    assert d.phase1[0] == (0, rec["n_nodes"]) and d.phase1[-1] == (rec["node"], rec["node"] + 1)
    assert d.phase2[0] == (0, 1 << rec["log2_steps"]) and d.phase2[-1] == (rec["step"], rec["step"] + 1)
    assert d.gas_total == rec["gas_total"]
    r = runner.invoke(app, ["report", str(DOCS / "dispute-game.json"), "-o", str(tmp_path / "g.svg")])
    assert r.exit_code == 0, r.output
    root = ET.fromstring((tmp_path / "g.svg").read_text())  # well-formed XML
    texts = " ".join(t.text or "" for t in root.iter("{http://www.w3.org/2000/svg}text"))
    assert f"node {rec['node']}" in texts and f"step {rec['step']:,}" in texts
    assert f"{rec['moves'][0]['gas']:,}" in texts and "1:59:" in texts  # a move's gas, a clock


def test_png_and_html(tmp_path: Path) -> None:
    r = runner.invoke(app, ["report", str(DOCS / "dispute-game.json"), "-o", str(tmp_path / "g.html")])
    assert r.exit_code == 0 and (tmp_path / "g.html").read_text().startswith("<!doctype html>")
    try:
        import cairosvg  # noqa: F401
    except (ImportError, OSError):  # OSError: the package is there, the cairo library is not
        pytest.skip("cairosvg or the cairo library not installed: PNG cannot be written")
    r = runner.invoke(app, ["report", str(DOCS / "dispute-game.json"), "-o", str(tmp_path / "g.png")])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "g.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("content,message", [
    (None, "no such file"), ("not json", "not JSON"), ('{"a": 1}', "neither a dispute trace"),
])
def test_report_of_a_wrong_file_is_a_one_line_error(tmp_path: Path, content, message) -> None:
    path = tmp_path / "x.json"
    if content is not None:
        path.write_text(content)
    r = runner.invoke(app, ["report", str(path), "-o", str(tmp_path / "x.svg")])
    assert r.exit_code == 2 and message in r.stderr and r.stderr.count("\n") == 1


def test_report_refuses_an_unknown_format(tmp_path: Path) -> None:
    r = runner.invoke(app, ["report", str(DOCS / "dispute-game.json"), "-o", str(tmp_path / "x.pdf")])
    assert r.exit_code == 2 and ".svg" in r.stderr
