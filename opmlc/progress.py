"""Progress of long work — compiling, VM runs, hashing large tensors, bisection — for the CLI.

Where it sits: beside the API, below the CLI. Library code (artifact, commit, api, dispute)
reports through `task(description, total)` and knows nothing of terminals; nothing is shown
unless a display is active. The CLI turns one on with `shown(enabled)` (rich progress bars on
stderr, enabled only when stderr is a terminal and --json is off), so stdout and machine
output stay as they are.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

_display = None  # a rich.progress.Progress while shown() is active


class Task:
    """One bar; does nothing when no display is active."""

    def __init__(self, display, task_id) -> None:
        self._display, self._id = display, task_id

    def advance(self, n: float = 1) -> None:
        if self._display is not None:
            self._display.update(self._id, advance=n)

    def update(self, completed: float | None = None, total: float | None = None,
               description: str | None = None) -> None:
        if self._display is not None:
            self._display.update(self._id, completed=completed, total=total, description=description)


@contextlib.contextmanager
def task(description: str, total: float | None = None) -> Iterator[Task]:
    """A bar for the duration of the `with` block (total None: a spinner with a count)."""
    display = _display
    if display is None:
        yield Task(None, None)
        return
    task_id = display.add_task(description, total=total)
    try:
        yield Task(display, task_id)
    finally:
        display.remove_task(task_id)


@contextlib.contextmanager
def shown(enabled: bool, console=None) -> Iterator[None]:
    """Show every task started inside the block as a bar on stderr (or `console`), if `enabled`."""
    global _display
    if not enabled or _display is not None:
        yield
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
    )

    display = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                       TimeElapsedColumn(), console=console or Console(stderr=True), transient=True)
    _display = display
    try:
        with display:
            yield
    finally:
        _display = None


def track(iterable, description: str, total: float | None = None):
    """Yield from `iterable`, advancing a bar by one per item (total: len(iterable) if it has one)."""
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)
    with task(description, total) as bar:
        for item in iterable:
            yield item
            bar.advance()


def console():
    """The display's console while one is shown (print through it so bars are not torn), else None."""
    return None if _display is None else _display.console
