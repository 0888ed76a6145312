"""Progress bars (opmlc/progress.py): silent without a display, drawn with one; the chunked hashing
behind the large-tensor bar gives the same root as the whole tree."""

from __future__ import annotations

import io

import numpy as np
from rich.console import Console

from opmlc import progress
from opmlc.commit import padded_root
from vm.merkle import subtree_root


def test_tasks_do_nothing_without_a_display() -> None:
    assert progress.console() is None
    with progress.task("idle", total=3) as bar:
        bar.advance()
        bar.update(completed=2, description="still idle")
    assert list(progress.track(range(3), "idle")) == [0, 1, 2]


def test_bars_are_drawn_on_the_display_and_removed_after() -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=100)
    with progress.shown(True, console=console):
        assert progress.console() is console
        for _ in progress.track(range(3), "hashing weights"):
            console.print("a line between bars")
        with progress.task("VM steps") as bar:
            bar.update(completed=5)
    assert "hashing weights" in out.getvalue() and "a line between bars" in out.getvalue()
    assert progress.console() is None


def test_display_off_when_not_enabled() -> None:
    with progress.shown(False):
        assert progress.console() is None


def test_chunked_hashing_gives_the_whole_trees_root() -> None:
    rng = np.random.default_rng(0)
    data = bytearray(rng.integers(0, 256, 1 << 12, dtype=np.uint8).tobytes())
    data[1024:2048] = bytes(1024)  # a zero stretch: the zero-hash shortcut in a chunk
    assert padded_root(bytes(data), chunk=256, large=0) == subtree_root(bytes(data))
    assert padded_root(bytes(data)) == subtree_root(bytes(data))  # small: the whole tree at once
