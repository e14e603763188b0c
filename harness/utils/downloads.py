"""Downloaded weights, checked by sha256 before anything loads them.

A download goes to a temporary file beside its destination, is hashed there, and is renamed
into place only when the hash is the expected one: an interrupted or altered download never
sits under the name the next run loads. A file already in place is hashed again on every use
(model directories are shared and writable). The expected hash is the one pinned in the grid
or, without a pin, the one recorded beside the file (``<file>.sha256``) when it was first
seen: trust on first use, so that a later change is still caught.
"""

from __future__ import annotations

import os
import shutil
import sys
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path

from harness.utils.atomic import atomic_path, write_text_atomic
from harness.utils.errors import UserError
from harness.utils.values import file_sha256

MODEL_DIR = "models"
_warned: set[str] = set()


def sidecar(path: Path) -> Path:
    """Where the hash of an unpinned file is recorded at first use."""
    return path.with_name(path.name + ".sha256")


def verified(
    path: Path, download: Callable[[Path], None], expected: str | None, *, what: str
) -> str:
    """The sha256 of ``path``, checked; ``download(tmp)`` writes the file first if it is missing.

    ``expected`` is the pinned hash. Without one, the first hash seen is recorded in the sidecar
    and later uses are checked against it. On a mismatch nothing is left under ``path`` (a bad
    download is deleted, a changed file moved to ``<path>.rejected``), so the next try downloads
    it again.
    """
    path = Path(path)
    expected = expected.lower() if expected else None
    record = sidecar(path)
    recorded = record.read_text().strip() if expected is None and record.is_file() else None
    want = expected or recorded
    why = "pinned" if expected else f"recorded in {record}; delete that to trust a new file"
    if path.is_file():
        digest = file_sha256(path)
        if want and digest != want:
            rejected = path.with_name(path.name + ".rejected")
            os.replace(path, rejected)
            raise UserError(
                f"{what}: {path} has sha256 {digest}, expected {want} ({why}); "
                f"moved it to {rejected}"
            )
    else:
        with atomic_path(path) as tmp:
            _download(download, tmp, what)
            digest = file_sha256(tmp)
            if want and digest != want:
                raise UserError(
                    f"{what}: the download has sha256 {digest}, expected {want} ({why}); not kept"
                )
    if expected is None and recorded is None:
        write_text_atomic(digest + "\n", record)
    return digest


def warn_once(message: str) -> None:
    """Print a one-line warning to stderr, once per process (a grid loads a teacher per run)."""
    if message not in _warned:
        _warned.add(message)
        print(f"warning: {message}", file=sys.stderr)


def _download(download: Callable[[Path], None], tmp: Path, what: str) -> None:
    try:
        download(tmp)
    except UserError:
        raise
    except Exception as exc:  # network, quota, disk full, ...
        first = (str(exc).strip().splitlines() or [""])[0]
        raise UserError(f"cannot download {what}: {type(exc).__name__}: {first}") from None


def url_path(url: str, sha256: str, model_dir: str | Path = MODEL_DIR) -> Path:
    """Where the file at ``url`` is kept: ``<model_dir>/url/<hash prefix>-<its name>``."""
    name = Path(urllib.parse.unquote(urllib.parse.urlparse(url).path)).name or "weights"
    return Path(model_dir) / "url" / f"{sha256[:16]}-{name}"


def fetch_url(url: str, sha256: str, model_dir: str | Path = MODEL_DIR) -> Path:
    """The local copy of ``url`` (downloaded on first use), its sha256 checked to be ``sha256``."""
    path = url_path(url, sha256, model_dir)
    verified(path, lambda tmp: _copy_url(url, tmp), sha256, what=f"weights from {url}")
    return path


def _copy_url(url: str, dest: Path) -> None:
    with urllib.request.urlopen(url, timeout=60) as response, open(dest, "wb") as fh:
        shutil.copyfileobj(response, fh, 1 << 20)
