"""Atomic checkpoint files: a crash mid-write never leaves a half-written file under the name."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch


def _atomic_write(path: Path, write) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def save_atomic(obj: Any, path: Path) -> None:
    """``torch.save`` to a temporary file in the same folder, fsync, then rename over ``path``."""
    _atomic_write(path, lambda fh: torch.save(obj, fh))


def write_json_atomic(obj: Any, path: Path) -> None:
    data = json.dumps(obj, indent=2, sort_keys=True, default=str).encode()
    _atomic_write(path, lambda fh: fh.write(data))


def write_text_atomic(text: str, path: Path) -> None:
    _atomic_write(path, lambda fh: fh.write(text.encode()))
