"""The one rule for names that become file names in the store.

Variant, teacher and evaluation-attack names, grid names, and the method, model and data set
names the registries hold all end up in paths (a run id is ``<variant>-<dataset>-<model>-
<teacher>-s<seed>-<hash>``, an attack's resumable state is ``eval/<attack>.pt``). A name is
letters, digits, ``-``, ``_`` and ``.``, starting with a letter, a digit or ``_`` (so never
``..``, a hidden file or something a shell takes for an option), at most :data:`NAME_MAX`
characters: four of them with the seed and the hash stay under the 255 bytes a file name may
have. Checked when a grid loads, before anything is written.
"""

from __future__ import annotations

import re
from typing import Any

from harness.utils.errors import UserError

NAME_MAX = 48
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*")
RULE = (
    f"letters, digits, '-', '_' and '.', starting with a letter, a digit or '_', at most "
    f"{NAME_MAX} characters"
)


def is_name(value: Any) -> bool:
    return isinstance(value, str) and len(value) <= NAME_MAX and bool(_NAME.fullmatch(value))


def check_name(value: Any, what: str) -> str:
    """``value`` if it is a valid name, else a one-line :class:`UserError` quoting it."""
    if not is_name(value):
        shown = repr(value) if len(str(value)) <= 80 else repr(str(value)[:80]) + "..."
        raise UserError(f"{what} {shown} is not a valid name: use {RULE}")
    return value
