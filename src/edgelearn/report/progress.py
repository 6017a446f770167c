"""A rich progress bar on stderr with live fields (accuracy, energy, ...) that is silent off a terminal.

Progress goes to stderr so a command's real output (tables, JSON) on stdout stays clean when piped.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from edgelearn.errors import ConfigError

FIELD_SIGNIFICANT_DIGITS = 4
REFRESHES_PER_SECOND = 4  # rich's default is 10; rounds are slow, so redraw less often


# Width of tables printed into a file or pipe (rich's 80-column default squeezes the comparison tables).
NON_TERMINAL_WIDTH = 140


def get_console() -> Console:
    """A rich Console writing to stderr, for progress and log lines that must not mix with stdout output."""
    console = Console(stderr=True)
    if not console.is_terminal:
        console = Console(stderr=True, width=NON_TERMINAL_WIDTH)
    return console


def format_fields(fields: dict[str, Any]) -> str:
    """``key=value`` pairs joined by spaces; floats to four significant digits (acc=0.8125 energy=12.35)."""
    parts = []
    for key, value in fields.items():
        text = f"{value:.{FIELD_SIGNIFICANT_DIGITS}g}" if isinstance(value, float) else str(value)
        parts.append(f"{key}={text}")
    return " ".join(parts)


class NullProgress:
    """The handle yielded when progress is off: counts advances, prints nothing."""

    def __init__(self) -> None:
        self.completed = 0
        self.fields: dict[str, Any] = {}

    def advance(self, n: int = 1, **fields: Any) -> None:
        """Count ``n`` more steps and remember the latest ``fields``; no output."""
        self.completed += n
        self.fields.update(fields)


class RichProgress(NullProgress):
    """The handle yielded when progress is on: advances a rich task and shows the latest fields."""

    def __init__(self, progress: Progress, task: TaskID) -> None:
        super().__init__()
        self._progress = progress
        self._task = task

    def advance(self, n: int = 1, **fields: Any) -> None:
        """Advance the bar by ``n`` steps (0 to only update fields) and show ``fields`` after it."""
        super().advance(n, **fields)
        self._progress.update(self._task, advance=n, info=format_fields(self.fields))


@contextmanager
def progress_bar(
    total: int | None,
    description: str,
    enabled: bool | None = None,
    *,
    console: Console | None = None,
) -> Iterator[NullProgress]:
    """Context manager yielding a handle with ``advance(n=1, **fields)``.

    ``enabled=None`` (default) shows the bar only when the console (stderr by default) is an interactive
    terminal; ``False`` never shows it and ``True`` forces it. A disabled bar writes nothing at all.
    """
    if total is not None and total < 0:
        raise ConfigError(
            f"progress total must be >= 0, got {total}", hint="pass the number of rounds or steps"
        )
    console = console if console is not None else get_console()
    # is_interactive: a tty that is not TERM=dumb (rich honours FORCE_COLOR, TTY_INTERACTIVE, TTY_COMPATIBLE)
    show = console.is_interactive if enabled is None else enabled
    if not show:
        yield NullProgress()
        return
    progress = Progress(
        TextColumn("{task.description}", style="bold", markup=False),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[info]}", markup=False),
        console=console,
        refresh_per_second=REFRESHES_PER_SECOND,
    )
    with progress:
        task = progress.add_task(description, total=total, info="")
        yield RichProgress(progress, task)
