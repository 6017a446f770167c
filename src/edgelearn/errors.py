"""Errors users can act on. Each one maps to exit code 2 at the CLI and carries a fix-it hint."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any


class EdgelearnError(Exception):
    """Bad input the user can fix (config, data file, budget); the CLI prints it and exits with code 2."""

    exit_code = 2

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        self.message = message
        self.hint = hint
        super().__init__(message if hint is None else f"{message}\n  How to fix: {hint}")


class ConfigError(EdgelearnError):
    """A configuration key or value is invalid."""


class DataError(EdgelearnError):
    """A dataset file is missing, truncated or not in the expected format, or a partition is impossible."""


class BudgetError(EdgelearnError):
    """A resource budget cannot be met."""


class DivergenceError(EdgelearnError):
    """Training produced a NaN or infinite loss or weight; the message names the round, tier and node."""

    exit_code = 1


class OutputError(EdgelearnError):
    """An output path cannot be written (a file where a folder must be, no permission), a run directory
    already holds a run, or another process is using it."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) stopped a run or a sweep: the message says where, the hint how to continue.

    A ``KeyboardInterrupt`` (not an :class:`EdgelearnError`), so ``except Exception`` handlers let it through;
    the CLI prints it and exits with 130, the shell's status for SIGINT.
    """

    exit_code = 130

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        self.message = message
        self.hint = hint
        super().__init__(message if hint is None else f"{message}\n  How to continue: {hint}")


def exit_on_user_error(main: Callable[[], Any]) -> None:
    """Run a script's ``main`` as the CLI runs a command: an :class:`EdgelearnError` prints its message and
    fix-it hint and exits with its code (2 for bad input), never a traceback (``benchmarks/`` scripts)."""
    try:
        main()
    except EdgelearnError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
