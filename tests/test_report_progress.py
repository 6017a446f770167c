"""Tests for edgelearn.report.progress: a live bar on a terminal, total silence everywhere else."""

from __future__ import annotations

import io
import re

import pytest
from rich.console import Console

from edgelearn.errors import ConfigError
from edgelearn.report.progress import NullProgress, format_fields, get_console, progress_bar

ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def terminal_console() -> tuple[Console, io.StringIO]:
    """A console that believes it is a terminal, writing into a buffer we can read."""
    buffer = io.StringIO()
    return Console(file=buffer, force_terminal=True, force_interactive=True, width=120), buffer


def run_three_rounds(**kwargs: object) -> NullProgress:
    """Advance a bar three times with live fields, returning the handle for inspection."""
    with progress_bar(3, "training", **kwargs) as bar:
        bar.advance(acc=0.5, energy=1.25)
        bar.advance(acc=0.75)
        bar.advance(1, acc=0.8125, energy=12.3456)
    return bar


def test_format_fields_uses_four_significant_digits_for_floats() -> None:
    assert format_fields({"acc": 0.81254, "energy": 12.3456, "round": 3}) == "acc=0.8125 energy=12.35 round=3"
    assert format_fields({}) == ""


def test_get_console_writes_to_stderr() -> None:
    assert get_console().stderr is True


def test_disabled_bar_writes_nothing_even_on_a_terminal() -> None:
    console, buffer = terminal_console()
    bar = run_three_rounds(enabled=False, console=console)
    assert buffer.getvalue() == ""
    assert bar.completed == 3
    assert bar.fields == {"acc": 0.8125, "energy": 12.3456}


def test_default_bar_is_silent_when_stderr_is_not_a_terminal(
    capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE"):  # rich's overrides of tty detection
        monkeypatch.delenv(name, raising=False)
    bar = run_three_rounds()  # under pytest's capture, stderr is a pipe, not a tty
    captured = capfd.readouterr()
    assert (captured.out, captured.err) == ("", "")
    assert type(bar) is NullProgress
    assert bar.completed == 3


def test_bar_on_a_terminal_shows_description_count_and_latest_fields() -> None:
    console, buffer = terminal_console()
    bar = run_three_rounds(console=console)  # enabled=None: auto-detects the terminal
    text = ANSI_ESCAPE.sub("", buffer.getvalue())
    assert type(bar) is not NullProgress
    assert "training" in text
    assert "3/3" in text
    assert "acc=0.8125 energy=12.35" in text
    assert bar.completed == 3


def test_forced_bar_shows_even_off_a_terminal() -> None:
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=False, width=120)
    run_three_rounds(enabled=True, console=console)
    assert "acc=0.8125 energy=12.35" in buffer.getvalue()


def test_advance_by_zero_only_updates_fields() -> None:
    console, buffer = terminal_console()
    with progress_bar(2, "eval", console=console) as bar:
        bar.advance(0, acc=0.25)
        bar.advance(2)
    text = ANSI_ESCAPE.sub("", buffer.getvalue())
    assert bar.completed == 2
    assert "2/2" in text and "acc=0.25" in text


def test_negative_total_is_rejected() -> None:
    with pytest.raises(ConfigError, match="progress total must be >= 0, got -1"):
        with progress_bar(-1, "training", enabled=False):
            pass
