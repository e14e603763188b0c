"""Errors a user can cause: the CLI prints them as one line and exits with code 2."""

from __future__ import annotations

import errno
import os
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


class DamagedFile(UserError):
    """A file of the store that cannot be read as what it should be (truncated, garbled)."""

    def __init__(self, path: str | os.PathLike, reason: str, fix: str) -> None:
        super().__init__(f"{path} is damaged ({reason}); {fix}")
        self.path = path


#: What to do about a file system error, by errno.
_FIXES = {
    errno.ENOSPC: "the disk is full: free some space (or use another --store), then rerun; "
    "runs resume from their last checkpoint",
    errno.EDQUOT: "the disk quota is exceeded: free some space (or use another --store), then "
    "rerun; runs resume from their last checkpoint",
    errno.EROFS: "the file system is read-only: use a writable --store",
    errno.EACCES: "no permission to write there: make it writable or use another --store",
    errno.EPERM: "no permission to write there: make it writable or use another --store",
    errno.ENOTDIR: "a file stands where a folder should be in that path: move it or choose "
    "another path",
    errno.EEXIST: "a file stands where a folder should be in that path: move it or choose "
    "another path",
    errno.EISDIR: "a folder stands where a file should be: move it away",
    errno.ENAMETOOLONG: "the name is too long for the file system: use a shorter path",
}


def file_error(exc: OSError, path: str | os.PathLike, action: str = "write") -> UserError:
    """One line for a file system error (disk full, read-only, a file in the way) on ``path``:
    what failed, why, and what to do."""
    reason = exc.strerror or str(exc) or type(exc).__name__
    fix = _FIXES.get(exc.errno or 0, "check the file system, then rerun")
    if action == "read" and exc.errno in (errno.EACCES, errno.EPERM):
        fix = "no permission to read it: ask its owner for read access, or use another --store"
    return UserError(f"cannot {action} {path}: {reason}; {fix}")


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
