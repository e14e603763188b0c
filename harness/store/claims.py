"""One claim per run: a lease file in the run's directory that names the process running it.

Two ``bench run`` of one grid on one store (two terminals, two Slurm jobs, a rerun while the
first still goes) must never train a run twice at once. Before a run starts, its process
creates ``<run dir>/claim.json`` with ``O_CREAT | O_EXCL``: an atomic test-and-create that NFS
(v3 and later), Lustre and GPFS honour, where ``fcntl`` and SQLite locks are unreliable. The
file holds the host, the pid and a random token; a thread refreshes its modification time (the
heartbeat) while the run goes on, and the file is removed when the run ends.

A dead holder cannot keep a claim: it is taken over at once when the holder ran on this host
and its pid is gone (a SIGKILL, a crash), otherwise once its heartbeat is older than
``stale_after`` seconds (``$BENCH_CLAIM_STALE_S``, default 600; the clocks of the hosts must
agree to well within it). Taking over goes through a short-lived ``claim.json.break`` file, so
two processes that find the same stale claim cannot both remove it, one after the other
removing the new claim of the first. A holder checks at every heartbeat that the file is still
its own; one that lost it (suspended for longer than ``stale_after``) learns so through
:meth:`Claim.check` and stops before it writes again.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CLAIM = "claim.json"
DEFAULT_STALE_S = 600.0


def stale_after() -> float:
    """Seconds without a heartbeat after which a claim from another host is taken over."""
    try:
        value = float(os.environ.get("BENCH_CLAIM_STALE_S", DEFAULT_STALE_S))
    except ValueError:
        return DEFAULT_STALE_S
    return value if value > 0 else DEFAULT_STALE_S


class Claimed(Exception):
    """The run is claimed by another live process."""

    def __init__(self, holder: Holder) -> None:
        super().__init__(f"claimed by {holder}")
        self.holder = holder


class ClaimLost(Exception):
    """This process's claim was taken over (it stalled longer than ``stale_after``)."""


@dataclass(frozen=True)
class Holder:
    """Who holds a claim file, and how old its heartbeat is."""

    host: str | None
    pid: int | None
    token: str | None
    since: float | None
    heartbeat_age: float

    def __str__(self) -> str:
        who = f"{self.host}:{self.pid}" if self.host else "an unknown process"
        when = time.strftime(" since %Y-%m-%d %H:%M:%S", time.localtime(self.since))
        return who + (when if self.since else "")

    def alive(self, stale_s: float) -> bool:
        """Whether the holder may still be at work (a stale or dead one is taken over)."""
        if self.heartbeat_age > stale_s:
            return False
        if self.host == socket.gethostname() and self.pid is not None:
            return pid_alive(self.pid)
        return True


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` of this host exists and is not a zombie."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    except OSError:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:  # no /proc (macOS): kill(0) is all we know
        return True
    return stat.rsplit(")", 1)[-1].split()[:1] != ["Z"]


def _age(path: Path) -> float | None:
    try:
        return time.time() - path.stat().st_mtime
    except OSError:
        return None


def read_holder(path: Path) -> Holder | None:
    """The holder recorded in ``path``; None when there is no such file. An unreadable file (its
    creator died between creating and writing it) is a holder of unknown identity."""
    age = _age(path)
    if age is None:
        return None
    try:
        record = json.loads(path.read_text())
        if not isinstance(record, dict):
            raise ValueError
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        record = {}
    pid = record.get("pid")
    since = record.get("since")
    return Holder(
        host=record.get("host") if isinstance(record.get("host"), str) else None,
        pid=pid if isinstance(pid, int) and not isinstance(pid, bool) else None,
        token=record.get("token") if isinstance(record.get("token"), str) else None,
        since=float(since) if isinstance(since, int | float) else None,
        heartbeat_age=age,
    )


def holder(directory: Path) -> Holder | None:
    """Who holds the claim on ``directory``'s run, if anyone (alive or not)."""
    return read_holder(Path(directory) / CLAIM)


class Claim:
    """A held claim; a context manager that releases it. Create with :func:`acquire`."""

    def __init__(self, path: Path, token: str, stale_s: float, made_dir: bool = False) -> None:
        self.path = path
        self.made_dir = made_dir
        self.token = token
        self.stale_s = stale_s
        self.lost = False
        self._stop = threading.Event()
        self._beat = threading.Thread(target=self._heartbeat, name=f"claim {path}", daemon=True)
        self._beat.start()

    def _heartbeat(self) -> None:
        interval = min(30.0, self.stale_s / 4)
        while not self._stop.wait(interval):
            if not self._still_ours():
                self.lost = True
                return
            with contextlib.suppress(OSError):
                os.utime(self.path)

    def _still_ours(self) -> bool:
        found = read_holder(self.path)
        return found is not None and found.token == self.token

    def check(self, verify: bool = False) -> None:
        """Raise :class:`ClaimLost` if another process took the claim over; ``verify`` reads
        the file now instead of relying on the last heartbeat."""
        if self.lost or (verify and not self._still_ours()):
            self.lost = True
            raise ClaimLost(f"another process took over the claim {self.path}")

    def release(self) -> None:
        """Stop the heartbeat and remove the file if it is still ours (and the run's directory,
        if the claim made it and nothing else was written there)."""
        self._stop.set()
        if self._beat is not threading.current_thread():
            self._beat.join()
        if self._still_ours():
            with contextlib.suppress(OSError):
                self.path.unlink()
        if self.made_dir:
            with contextlib.suppress(OSError):
                self.path.parent.rmdir()

    def __enter__(self) -> Claim:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


def acquire(directory: Path, stale_s: float | None = None) -> Claim:
    """Claim the run in ``directory`` (made if missing) for this process.

    Raises :class:`Claimed` when another live process holds it; a dead or stale holder's claim
    is taken over. ``OSError`` from the file system (no space, read-only) is the caller's.
    """
    stale_s = stale_after() if stale_s is None else stale_s
    path = Path(directory) / CLAIM
    token = secrets.token_hex(16)
    record = {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "token": token,
        "since": time.time(),
    }
    made_dir = not Path(directory).is_dir()
    Path(directory).mkdir(parents=True, exist_ok=True)
    last: Holder | None = None
    for _ in range(200):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
        except FileExistsError:
            last = read_holder(path)
            if last is None:  # released in between: try again
                continue
            if last.alive(stale_s):
                raise Claimed(last) from None
            if not _break(path, last, stale_s):
                time.sleep(0.01)  # another process is breaking it: let it finish
            continue
        try:
            os.write(fd, json.dumps(record).encode())
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            path.unlink(missing_ok=True)
            raise
        os.close(fd)
        return Claim(path, token, stale_s, made_dir)
    raise Claimed(last or read_holder(path) or Holder(None, None, None, None, 0.0))


def _break(path: Path, seen: Holder, stale_s: float) -> bool:
    """Remove the stale claim ``seen``, unless it has been replaced since it was read; False
    when another process is doing so."""
    guard = path.with_name(path.name + ".break")
    try:
        os.close(os.open(guard, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
    except FileExistsError:
        age = _age(guard)
        if age is not None and age > stale_s:  # a breaker died in the middle: its turn is over
            guard.unlink(missing_ok=True)
        return False
    try:
        now = read_holder(path)
        if now is not None and now.token == seen.token and not now.alive(stale_s):
            path.unlink(missing_ok=True)
    finally:
        guard.unlink(missing_ok=True)
    return True


def clear_stale(directory: Path, stale_s: float | None = None) -> None:
    """Remove the claim on ``directory``'s run if its holder is dead or stale (a process killed
    after the run was complete leaves one behind)."""
    stale_s = stale_after() if stale_s is None else stale_s
    found = holder(directory)
    if found is not None and not found.alive(stale_s):
        _break(Path(directory) / CLAIM, found, stale_s)


def wait_released(directory: Path, poll_s: float = 2.0, stale_s: float | None = None) -> None:
    """Block until nobody alive holds the claim on ``directory``'s run."""
    stale_s = stale_after() if stale_s is None else stale_s
    while True:
        found = holder(directory)
        if found is None or not found.alive(stale_s):
            return
        time.sleep(poll_s)
