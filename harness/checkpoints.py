"""Atomic checkpoint files: a crash mid-write never leaves a half-written file under the name."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import torch


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary file beside ``path`` for the block to fill; fsynced and renamed over ``path``
    when the block ends, deleted when it raises (so ``path`` is the old file or the whole new
    one, never a part)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _atomic_write(path: Path, write: Callable[[BinaryIO], Any]) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        write(fh)


def save_atomic(obj: Any, path: Path) -> None:
    """``torch.save`` to a temporary file in the same folder, fsync, then rename over ``path``."""
    _atomic_write(path, lambda fh: torch.save(obj, fh))


def write_json_atomic(obj: Any, path: Path) -> None:
    data = json.dumps(obj, indent=2, sort_keys=True, default=str).encode()
    _atomic_write(path, lambda fh: fh.write(data))


def write_text_atomic(text: str, path: Path) -> None:
    _atomic_write(path, lambda fh: fh.write(text.encode()))
