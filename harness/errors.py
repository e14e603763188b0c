"""Errors a user can cause: the CLI prints them as one line and exits with code 2."""

from __future__ import annotations

import sys
import unicodedata
from collections.abc import Callable
from typing import Any


def one_line(text: str) -> str:
    """``text`` with line breaks and control characters escaped (a newline becomes ``\\n``).

    Messages quote what the user gave (a file name, a key of a grid), which may hold any
    character; escaped, a message still prints as the one line the CLI promises.
    """
    return "".join(
        c.encode("unicode_escape").decode() if unicodedata.category(c) in ("Cc", "Zl", "Zp") else c
        for c in text
    )


class UserError(Exception):
    """A mistake in what the user asked for (bad name, bad file, missing data), not a bug."""

    exit_code = 2

    def __init__(self, message: str) -> None:
        super().__init__(one_line(str(message)))


def run_script(main: Callable[[], Any]) -> None:
    """Run a script's ``main`` (``benchmarks/``) the way ``bench`` runs a command: a
    :class:`UserError` becomes one line on stderr and exit code 2, not a traceback."""
    try:
        main()
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)


class TrainingDiverged(RuntimeError):
    """The loss became NaN or inf; records where, so the grid can report it and move on."""

    def __init__(self, epoch: int, step: int, value: float) -> None:
        super().__init__(f"loss became {value} at epoch {epoch}, step {step}")
        self.epoch = epoch
        self.step = step
        self.value = value
