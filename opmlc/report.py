"""`opmlc report`: a picture of one dispute, from its off-chain trace or its on-chain game record.

Where it sits: at the end of the pipeline, beside the CLI. Its inputs are the JSON trace that
`opmlc prove --claim` writes (opmlc/dispute/claims.py dispute_record) and the game record that
`opmlc demo --record` writes (opmlc/dispute/game_record.py). Both are read into one `Dispute`,
drawn as SVG written here directly: phase 1's interval over the graph's nodes narrowing to the
disputed node, for a node split by the step budget the descent over its parts to the disputed
part, phase 2's over that task's VM steps, and every move with its gas and both clocks
(those two only in a game record: an off-chain trace has neither). PNG is the SVG rasterised by
cairosvg; HTML is a page around the SVG.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from html import escape
from pathlib import Path

from opmlc.errors import OpmlcError

FORMATS = (".svg", ".png", ".html")

SERVER = "#d9822b"
CHALLENGER = "#2b6cb0"
AGREE = "#2f855a"
DISAGREE = "#c53030"
INK = "#1a202c"
MUTED = "#718096"
GRID = "#e2e8f0"
FONT = "DejaVu Sans, Helvetica, Arial, sans-serif"
MONO = "DejaVu Sans Mono, Menlo, Consolas, monospace"


@dataclass
class Move:
    """One move: who sent it, what it was, the interval it leaves, its gas and the clocks after."""

    party: str
    move: str
    phase: int | str  # 1, PARTS, 2 or 3 (opmlc/dispute/game_record.py)
    lo: int | None = None
    hi: int | None = None
    agree: bool | None = None
    gas: int | None = None
    mid: int | None = None  # a bisection's claimed point
    server_clock: int | None = None
    challenger_clock: int | None = None


@dataclass
class Dispute:
    """A dispute as drawn: both bisections as interval sequences, and the moves."""

    title: str
    source: str  # "game" (on chain) or "trace" (off chain)
    winner: str
    reason: str
    n_nodes: int
    phase1: list[tuple[int, int]]  # [lo, hi) after each round, the whole graph first
    node: int | None
    log2_steps: int | None
    phase2: list[tuple[int, int]]
    step: int | None
    moves: list[Move] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    # a split node's descent: [lo, hi) over its 2^parts_log2 parts after each round
    parts_log2: int | None = None
    parts: list[tuple[int, int]] = field(default_factory=list)
    part: int | None = None

    @property
    def gas_total(self) -> int | None:
        gas = [m.gas for m in self.moves if m.gas is not None]
        return sum(gas) if gas else None


def _intervals(rounds: list[dict], lo: int, hi: int) -> list[tuple[int, int]]:
    """The bisection's intervals from its logged rounds ({lo, hi, mid, agree} each)."""
    out = [(lo, hi)]
    for r in rounds:
        lo, hi = (r["mid"], r["hi"]) if r["agree"] else (r["lo"], r["mid"])
        out.append((lo, hi))
    return out


PARTS = "parts"  # the phase of splitNode, bisectPart and respondPart (game_record.PARTS)
PART_MOVES = ("splitNode", "bisectPart", "respondPart")


def _part_intervals(parts_log2: int, chosen: list[int]) -> list[tuple[int, int]]:
    """The descent's intervals over parts: `chosen[d]` is the subtree picked at depth d + 1."""
    out = [(0, 1 << parts_log2)]
    for depth, part in enumerate(chosen, 1):
        shift = parts_log2 - depth
        out.append((part << shift, (part + 1) << shift))
    return out


def from_trace(doc: dict, name: str = "") -> Dispute:
    """A Dispute from `opmlc prove --claim`'s JSON trace (no gas, no clocks: nothing ran on chain)."""
    n = int(doc["commitment"]["n_nodes"])
    p1 = _intervals(doc["phase1"], 0, n)
    log2 = int(doc["start_node"]["log2_steps"]) if doc.get("start_node") else None
    p2 = _intervals(doc["phase2"], 0, 1 << log2) if log2 is not None else []
    descent = doc.get("parts") or []
    p = len(descent) if descent else None
    chosen, part = [], 0
    for r in descent:
        part = 2 * part + bool(r["right_chosen"])
        chosen.append(part)
    parts = _part_intervals(p, chosen) if p else []
    moves: list[Move] = []
    for phase, rounds in ((1, doc["phase1"]), (2, doc["phase2"])):
        for r in rounds:
            moves.append(Move("server", "bisectTrace" if phase == 1 else "bisectStep", phase, r["lo"], r["hi"],
                              mid=r["mid"]))
            lo, hi = (r["mid"], r["hi"]) if r["agree"] else (r["lo"], r["mid"])
            moves.append(Move("challenger", "respondTrace" if phase == 1 else "respondStep", phase, lo, hi,
                              agree=bool(r["agree"])))
        if phase == 1 and p:
            moves.append(Move("server", "splitNode", PARTS, *parts[0]))
            for (lo, hi), after in zip(parts, parts[1:], strict=False):
                moves.append(Move("server", "bisectPart", PARTS, lo, hi, mid=(lo + hi) // 2))
                moves.append(Move("challenger", "respondPart", PARTS, *after))
        if phase == 1 and log2 is not None:
            moves.append(Move("server", "startPart" if p else "startNode", 2, 0, 1 << log2))
    if doc.get("step") is not None:
        moves.append(Move("challenger", "proveStep", 3, doc["step"], doc["step"] + 1))
    return Dispute(title=name or "dispute trace", source="trace", winner=doc["winner"], reason="off-chain replay",
                   n_nodes=n, phase1=p1, node=doc.get("node"), log2_steps=log2, phase2=p2, step=doc.get("step"),
                   moves=moves, notes=["off-chain trace (opmlc prove --claim): no gas, no clocks"],
                   parts_log2=p, parts=parts, part=chosen[-1] if p else None)


def from_game(doc: dict) -> Dispute:
    """A Dispute from `opmlc demo --record`'s game record (moves with gas and clocks)."""
    n = int(doc["n_nodes"])
    p1, p2 = [(0, n)], []
    # The descent over parts is derived from the parts chosen, so that records written before
    # it had its own phase (its moves then carried phase 1 and the node interval) draw as well.
    chosen = [int(m["part"]) for m in doc["moves"] if m["move"] == "respondPart"]
    split = next((m for m in doc["moves"] if m["move"] == "splitNode"), None)
    p = None if split is None else int(doc.get("parts_log2") or split.get("parts_log2") or len(chosen))
    parts = _part_intervals(p, chosen) if p else []
    moves: list[Move] = []
    for m in doc["moves"]:
        if m["move"] in PART_MOVES:
            k = sum(x.move == "respondPart" for x in moves)  # the descent's rounds before this move
            lo, hi = parts[min(k + (m["move"] == "respondPart"), len(parts) - 1)]
            mid = (lo + hi) // 2 if m["move"] == "bisectPart" else None
            phase: int | str = PARTS
        else:
            lo, hi, mid, phase = m.get("lo"), m.get("hi"), m.get("mid"), int(m["phase"] or 3)
        mv = Move(m["party"], m["move"], phase, lo, hi, m.get("agree"), m.get("gas"), mid, m.get("server_clock"),
                  m.get("challenger_clock"))
        moves.append(mv)
        if mv.move == "respondTrace":
            p1.append((mv.lo, mv.hi))
        elif mv.move in ("startNode", "startPart"):
            p2 = [(mv.lo, mv.hi)]
        elif mv.move == "respondStep":
            p2.append((mv.lo, mv.hi))
    title = doc.get("model") or f"game {doc.get('game')}"
    notes = [f"game {doc.get('game')} of task {doc.get('task')} on the {doc.get('chain', 'chain')}"]
    if doc.get("vm_steps") is not None:
        notes.append(f"the challenger's VM ran {doc['vm_steps']:,} steps")
    return Dispute(title=title, source="game", winner=doc["winner"], reason=doc.get("reason", ""), n_nodes=n,
                   phase1=p1, node=doc.get("node"), log2_steps=doc.get("log2_steps"), phase2=p2,
                   step=doc.get("step"), moves=moves, notes=notes, parts_log2=p, parts=parts,
                   part=chosen[-1] if p and len(chosen) == p else None)


def load(path: Path) -> Dispute:
    """Read a trace or a game record, whichever `path` holds."""
    try:
        doc = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise OpmlcError(f"{path}: no such file; write one with `opmlc prove --claim` or `opmlc demo --record`") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise OpmlcError(f"{path}: not JSON; pass a dispute trace or a game record") from None
    try:
        if isinstance(doc, dict) and doc.get("kind") == "opmlc-game":
            if not doc.get("moves"):
                raise OpmlcError(f"{path}: the game has no moves to draw")
            return from_game(doc)
        if isinstance(doc, dict) and "phase1" in doc and "commitment" in doc:
            return from_trace(doc, f"the trace {Path(path).name}")
    except (KeyError, TypeError, ValueError):
        pass
    raise OpmlcError(f"{path}: neither a dispute trace (`opmlc prove --claim`) nor a game record (`opmlc demo --record`)")


# ---------------------------------------------------------------------------------------------
# Drawing


class _Svg:
    def __init__(self) -> None:
        self.parts: list[str] = []

    def rect(self, x, y, w, h, fill, stroke="none", rx=0, opacity=1.0) -> None:
        self.parts.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{max(w, 0):.1f}" height="{h:.1f}" rx="{rx}" '
                          f'fill="{fill}" stroke="{stroke}" fill-opacity="{opacity}"/>')

    def line(self, x1, y1, x2, y2, stroke=GRID, width=1.0, dash="") -> None:
        d = f' stroke-dasharray="{dash}"' if dash else ""
        self.parts.append(f'<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" stroke="{stroke}" '
                          f'stroke-width="{width}"{d}/>')

    def text(self, x, y, s, size=12, fill=INK, anchor="start", weight="normal", mono=False) -> None:
        self.parts.append(f'<text x="{x:.1f}" y="{y:.1f}" font-family="{MONO if mono else FONT}" font-size="{size}" '
                          f'fill="{fill}" text-anchor="{anchor}" font-weight="{weight}">{escape(str(s))}</text>')


WIDTH = 980
LEFT = 170  # where the axes start; labels to the left
AXIS_W = 560
ROW = 20


def _bisection(svg: _Svg, y: float, title: str, unit: str, total: int, intervals: list[tuple[int, int]],
               target: int | None) -> float:
    """One phase: a row per interval on a common linear axis [0, total]; returns the next y."""
    svg.text(24, y, title, size=15, weight="bold")
    y += 14
    x0 = LEFT
    scale = AXIS_W / max(total, 1)
    top = y
    for i, (lo, hi) in enumerate(intervals):
        yy = y + i * ROW
        last = i == len(intervals) - 1
        svg.text(LEFT - 10, yy + 14, "start" if i == 0 else f"round {i}", size=11, fill=MUTED, anchor="end")
        svg.rect(x0, yy + 4, AXIS_W, ROW - 8, GRID, rx=2)
        color = DISAGREE if last else CHALLENGER
        svg.rect(x0 + lo * scale, yy + 3, max((hi - lo) * scale, 3), ROW - 6, color, rx=2,
                 opacity=1.0 if last else 0.75)
        span = hi - lo
        label = f"{unit}s {lo:,}–{hi:,} ({span:,})" if span > 1 else f"{unit} {lo:,}"
        svg.text(x0 + AXIS_W + 12, yy + 14, label, size=11, mono=True)
    bottom = y + len(intervals) * ROW
    # the axis: ticks at the ends and the quarter points
    ticks = range(total + 1) if total <= 16 else [total * q // 4 for q in range(5)]
    for v in ticks:
        x = x0 + v * scale
        svg.line(x, top, x, bottom, GRID, 1, "2,3")
        svg.text(x, bottom + 14, f"{v:,}", size=10, fill=MUTED, anchor="middle")
    if target is not None:
        x = x0 + (target + 0.5) * scale
        svg.line(x, top - 4, x, bottom + 2, DISAGREE, 1.5)
    return bottom + 40


def _fmt_clock(s: int | None) -> str:
    if s is None:
        return "—"
    h, rem = divmod(int(s), 3600)
    m, sec = divmod(rem, 60)
    return f"{h}:{m:02d}:{sec:02d}"


def _moves(svg: _Svg, y: float, d: Dispute) -> float:
    svg.text(24, y, "Moves", size=15, weight="bold")
    has_gas = any(m.gas is not None for m in d.moves)
    y += 22
    cols = {"#": 24, "party": 54, "move": 150, "interval": 260, "gas": 440, "server": 730, "challenger": 830}
    for name, x in cols.items():
        label = {"server": "server clock", "challenger": "challenger clock",
                 "gas": "gas used" if has_gas else "gas (not measured off chain)"}.get(name, name)
        svg.text(x, y, label, size=11, fill=MUTED, weight="bold")
    y += 8
    max_gas = max((m.gas or 0 for m in d.moves), default=0) or 1
    bar_w = 200
    for i, m in enumerate(d.moves):
        yy = y + i * ROW
        if i % 2 == 0:
            svg.rect(20, yy, WIDTH - 40, ROW, "#f7fafc")
        color = SERVER if m.party == "server" else CHALLENGER if m.party == "challenger" else MUTED
        svg.text(cols["#"], yy + 14, i + 1, size=11, fill=MUTED)
        svg.rect(cols["party"], yy + 5, 10, 10, color, rx=2)
        svg.text(cols["party"] + 16, yy + 14, m.party, size=11)
        svg.text(cols["move"], yy + 14, m.move, size=11, mono=True)
        if m.mid is not None and m.phase == PARTS:
            svg.text(cols["interval"], yy + 14, f"claims halves {m.lo:,}–{m.mid:,}, {m.mid:,}–{m.hi:,}", size=11)
        elif m.mid is not None:
            unit = "node" if m.phase == 1 else "step"
            svg.text(cols["interval"], yy + 14, f"claims {unit} {m.mid:,}'s state", size=11)
        elif m.lo is not None and m.hi is not None:
            unit = {1: "nodes", PARTS: "parts", 2: "steps"}.get(m.phase, "step")
            what = f"{unit} {m.lo:,}–{m.hi:,}" if m.phase in (1, PARTS, 2) else f"step {m.lo:,}"
            mark = "" if m.agree is None else (" ✓ agree" if m.agree else " ✗ disagree")
            svg.text(cols["interval"], yy + 14, what + mark, size=11,
                     fill=INK if m.agree is None else AGREE if m.agree else DISAGREE)
        if m.gas is not None:
            svg.rect(cols["gas"], yy + 5, bar_w * m.gas / max_gas, ROW - 10, color, rx=2, opacity=0.8)
            svg.text(cols["gas"] + bar_w + 8, yy + 14, f"{m.gas:,}", size=11, mono=True)
        svg.text(cols["server"], yy + 14, _fmt_clock(m.server_clock), size=11, mono=True)
        svg.text(cols["challenger"], yy + 14, _fmt_clock(m.challenger_clock), size=11, mono=True)
    return y + len(d.moves) * ROW + 30


def render_svg(d: Dispute) -> str:
    """The dispute as one SVG document."""
    svg = _Svg()
    y = 36.0
    svg.text(24, y, f"Dispute over {d.title}", size=20, weight="bold")
    y += 24
    outcome = f"the {d.winner} wins" + (f" ({d.reason})" if d.reason else "")
    head = [outcome, f"{len(d.phase1) - 1} rounds over nodes"]
    if d.parts_log2:
        head.append(f"{len(d.parts) - 1} over parts")
    head.append(f"{max(len(d.phase2) - 1, 0)} over VM steps")
    if d.gas_total is not None:
        head.append(f"{d.gas_total:,} gas in all")
    svg.text(24, y, " · ".join(head), size=13, fill=INK)
    for note in d.notes:
        y += 18
        svg.text(24, y, note, size=11, fill=MUTED)
    y += 18
    svg.rect(24, y - 9, 10, 10, SERVER, rx=2)
    svg.text(40, y, "server (posts claims)", size=11)
    svg.rect(190, y - 9, 10, 10, CHALLENGER, rx=2)
    svg.text(206, y, "challenger (agrees or not)", size=11)
    svg.rect(380, y - 9, 10, 10, DISAGREE, rx=2)
    svg.text(396, y, "the disputed node / part / step" if d.parts_log2 else "the disputed node / step", size=11)
    y += 40
    target = f": node {d.node}" if d.node is not None else ""
    y = _bisection(svg, y, f"Phase 1 — bisection over the graph's {d.n_nodes:,} nodes{target}", "node",
                   d.n_nodes, d.phase1, d.node)
    task = f"node {d.node}'s"
    if d.parts_log2:
        n_parts = 1 << d.parts_log2
        part = f": part {d.part:,}" if d.part is not None else ""
        title = f"Parts — node {d.node} is split: descent over its output's 2^{d.parts_log2} = {n_parts:,} parts{part}"
        y = _bisection(svg, y, title, "part", n_parts, d.parts, d.part)
        if d.part is not None:
            task = f"node {d.node} part {d.part:,}'s"
    if d.log2_steps is not None and d.phase2:
        total = 1 << d.log2_steps
        step = f": step {d.step:,}" if d.step is not None else ""
        title = f"Phase 2 — bisection over {task} 2^{d.log2_steps} = {total:,} VM steps{step}"
        y = _bisection(svg, y, title, "step", total, d.phase2, d.step)
        if d.step is not None:
            svg.text(24, y - 6, f"Phase 3 — MIPS.step executes step {d.step:,} on chain and settles the dispute",
                     size=13, weight="bold")
            y += 24
    y = _moves(svg, y, d)
    height = int(y)
    head = (f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
            f'viewBox="0 0 {WIDTH} {height}">')
    return "\n".join([head, f'<rect width="{WIDTH}" height="{height}" fill="white"/>', *svg.parts, "</svg>"]) + "\n"


def write(d: Dispute, out: Path) -> None:
    """Write the picture in the format `out`'s suffix names: .svg, .png or .html."""
    suffix = Path(out).suffix.lower()
    if suffix not in FORMATS:
        raise OpmlcError(f"-o {out}: the formats are {', '.join(FORMATS)} (by the file's suffix)")
    svg = render_svg(d)
    if suffix == ".svg":
        Path(out).write_text(svg)
    elif suffix == ".html":
        Path(out).write_text(f"<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>Dispute over "
                             f"{escape(d.title)}</title></head>\n<body style=\"margin:0\">\n{svg}</body></html>\n")
    else:
        try:
            import cairosvg
        except (ImportError, OSError) as exc:  # OSError: cairosvg is there, the cairo library is not
            raise OpmlcError(f"PNG needs cairosvg and the cairo library ({exc}); write .svg or .html instead") from None
        cairosvg.svg2png(bytestring=svg.encode(), write_to=str(out), scale=1.5)
