"""Atomic checkpoint files: a crash mid-write never leaves a half-written file under the name."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import torch

from harness.utils.errors import file_error

TMP_SUFFIX = ".tmp"


def current_umask() -> int:
    """The process's umask now, read without changing it where the system tells
    (``/proc/self/status``, Linux >= 4.7); elsewhere by setting it and putting it back."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def shared_mode() -> int:
    """The mode a plain ``open()`` would give a new file: 0666 less the umask (mkstemp's 0600
    would hide a shared store or a published leaderboard from the team)."""
    return 0o666 & ~current_umask()


@contextlib.contextmanager
def atomic_path(path: Path, durable: bool = True) -> Iterator[Path]:
    """A temporary file beside ``path`` for the block to fill; fsynced and renamed over ``path``
    when the block ends, deleted when it raises (so ``path`` is the old file or the whole new
    one, never a part). A file system error (disk full, read-only, a file in the way) becomes
    a one-line :class:`UserError` naming ``path``.

    The temporary file is ``.<name>.<random>.tmp``; one a kill left behind is removed by
    :func:`remove_stray_tmp`. ``durable=False`` skips the fsyncs: the rename is still atomic
    for other processes, but a power cut may lose the file (for markers that only speed up a
    recovery).
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
        os.chmod(fd, shared_mode())
        os.close(fd)
    except OSError as exc:
        raise file_error(exc, path) from None
    tmp = Path(name)
    try:
        yield tmp
        if durable:
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
        if durable:
            dir_fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise file_error(exc, path) from None
        raise


def remove_stray_tmp(folder: Path) -> list[Path]:
    """Delete the temporary files of :func:`atomic_path` that a killed process left in
    ``folder`` and below; only for folders no other process is writing to (a claimed run)."""
    removed = []
    for tmp in Path(folder).rglob(f".*{TMP_SUFFIX}"):
        if tmp.is_file():
            with contextlib.suppress(OSError):
                tmp.unlink()
                removed.append(tmp)
    return removed


class _Recorder:
    """A binary file that remembers the ``OSError`` its writes raised: ``torch.save`` may
    report one as a RuntimeError of its own that no longer says why."""

    def __init__(self, fh: BinaryIO) -> None:
        self._fh = fh
        self.error: OSError | None = None

    def write(self, data: Any) -> int:
        try:
            return self._fh.write(data)
        except OSError as exc:
            self.error = exc
            raise

    def flush(self) -> None:
        try:
            self._fh.flush()
        except OSError as exc:
            self.error = exc
            raise


def _atomic_write(path: Path, write: Callable[[Any], Any], durable: bool = True) -> None:
    with atomic_path(path, durable) as tmp, open(tmp, "wb") as fh:
        recorder = _Recorder(fh)
        try:
            write(recorder)
        except RuntimeError:
            if recorder.error is not None:
                raise recorder.error from None
            if _disk_full(path.parent):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path)) from None
            raise


def _disk_full(folder: Path) -> bool:
    try:
        st = os.statvfs(folder)
    except (OSError, AttributeError):
        return False
    return st.f_bavail * st.f_frsize < (1 << 20)


def save_atomic(obj: Any, path: Path) -> None:
    """``torch.save`` to a temporary file in the same folder, fsync, then rename over ``path``."""
    _atomic_write(path, lambda fh: torch.save(obj, fh))


def _json_bytes(obj: Any) -> bytes:
    return json.dumps(obj, indent=2, sort_keys=True, default=str).encode()


def write_json_atomic(obj: Any, path: Path, durable: bool = True) -> None:
    data = _json_bytes(obj)
    _atomic_write(path, lambda fh: fh.write(data), durable)


def write_json_files_atomic(files: list[tuple[Any, Path]]) -> None:
    """Write each ``(obj, path)`` as :func:`write_json_atomic` does, all of them or none: every
    file is written to its temporary file first, and only once all are there are they renamed
    over their paths. An error on the way (a file where the third one's folder should be, a
    full disk) leaves none of them (folders it made stay, empty)."""
    with contextlib.ExitStack() as stack:
        for obj, path in files:
            stack.enter_context(atomic_path(Path(path))).write_bytes(_json_bytes(obj))


def write_text_atomic(text: str, path: Path) -> None:
    _atomic_write(path, lambda fh: fh.write(text.encode()))
