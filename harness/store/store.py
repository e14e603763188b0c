"""The result store: one directory per run (the source of truth) and a SQLite index over them.

    <root>/runs/<run_id>/config.json    the resolved config (its hash is in the run id), plus
                                        the grids listing it and the split sizes it ran on
                         status.json    running | complete | failed, with the reason
                         metrics.json   per-attack accuracies (overall and per class),
                                        training summary
                         log.txt        one line per epoch
                         checkpoints/   best.pt (selected); last.pt (every epoch) and
                                        prev.pt (the one before) until the run is complete,
                                        then train.json (best epoch, history)
                         claim.json     while a process runs it (:mod:`harness.store.claims`)
    <root>/pending/<run_id>             an index update under way (see below)
    <root>/index.sqlite                 runs (with each one's config and seedless row key),
                                        results (one row per run × attack: accuracy, per-class
                                        accuracies and the worst class's), grid tags

Every file is written atomically (temporary file + rename). Index writes are single SQLite
transactions behind a busy timeout, so concurrent writers wait instead of losing rows; the
rollback journal (not WAL) keeps it usable on network file systems. ``rebuild_index`` recreates
the index from the run directories alone, setting a damaged index file aside.

A change of a run (begin, finish, fail) writes its directory first and the index second. A
marker in ``pending/`` spans the two: a process killed between them leaves it behind, and the
next reader (``frame``, ``check``) or writer re-indexes that run from its directory
(:meth:`Store.heal`), so the index never stays behind the directory for good.

A file that cannot be read as what it should be (truncated, garbled, the wrong shape, an
integer the index cannot hold) is a :class:`DamagedFile`: one line naming the file and the fix.
A file system error (disk full, read-only store, a file in the way) is one line too.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import socket
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd

from harness.schema import RunConfig, as_json
from harness.store import claims
from harness.store.files import PROBLEMS, checkpoint_problem
from harness.store.index import INDEX_TABLES, SCHEMA, SCHEMA_VERSION, empty_frame, index_run
from harness.utils.atomic import write_json_atomic
from harness.utils.errors import DamagedFile, UserError, file_error
from harness.utils.values import canonical_json

PENDING = "pending"


class Store:
    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        self.runs_dir = self.root / "runs"
        self.index_path = self.root / "index.sqlite"
        try:
            self.root.exists()
        except OSError as exc:  # a name too long for the file system: every lookup would fail
            raise UserError(f"store folder {self.root}: {exc.strerror}") from None

    # -- index ----------------------------------------------------------------------------------
    def _index_damaged(self, reason: str) -> DamagedFile:
        return DamagedFile(
            self.index_path,
            reason,
            f"rebuild it from the run directories: bench store rebuild --store {self.root}",
        )

    def _sql_error(self, exc: sqlite3.Error) -> UserError:
        """One line for what SQLite says, with the fix."""
        msg = str(exc)
        if not isinstance(exc, sqlite3.OperationalError) or "malformed" in msg:
            return self._index_damaged(msg)
        low = msg.lower()
        if "readonly" in low:
            return UserError(
                f"cannot write the index {self.index_path}: the store is read-only; "
                "use a writable --store"
            )
        if "full" in low:
            return UserError(
                f"cannot write the index {self.index_path}: the disk is full; free some space "
                "(or use another --store), then rerun"
            )
        if "unable to open" in low:
            return UserError(
                f"cannot open the index {self.index_path}: its folder is missing or not "
                "writable; use a writable --store"
            )
        if "locked" in low or "busy" in low:
            return UserError(
                f"the index {self.index_path} stayed locked by another process for 120 s; "
                "rerun when that process is done"
            )
        return UserError(f"index {self.index_path}: {msg}; check the file system, then rerun")

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:  # a file in the way, no permission
            raise UserError(f"cannot create the store folder {self.root}: {exc.strerror}") from None
        try:
            # Created here so that it has the umask's mode (SQLite's own is 0644 whatever the
            # umask); an empty file is an empty database, and SQLite gives its journal the same.
            if not self.index_path.exists():
                with contextlib.suppress(FileExistsError):
                    os.close(os.open(self.index_path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
            conn = sqlite3.connect(self.index_path, timeout=120.0, isolation_level=None)
        except OSError as exc:
            raise UserError(
                f"index {self.index_path}: {exc.strerror}; check the file system, then rerun"
            ) from None
        except sqlite3.Error as exc:
            raise self._sql_error(exc) from None
        try:
            conn.execute("PRAGMA busy_timeout = 120000")
            yield conn
        except sqlite3.Error as exc:
            raise self._sql_error(exc) from None
        finally:
            conn.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._db() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                outdated = conn.execute("PRAGMA user_version").fetchone()[0] != SCHEMA_VERSION
                if outdated:  # an index of another version: rebuilt from the run directories
                    for table in INDEX_TABLES:
                        conn.execute(f"DROP TABLE IF EXISTS {table}")
                for stmt in SCHEMA.strip().split(";"):
                    if stmt.strip():
                        conn.execute(stmt)
                if outdated:
                    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                    self._index_all(conn)
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                raise

    def _index_all(self, conn: sqlite3.Connection) -> list[DamagedFile]:
        """Index every run directory; the damaged ones are skipped and returned."""
        damaged = []
        for run_id in self.run_ids():
            try:
                self._index_run(conn, run_id)
            except DamagedFile as exc:
                damaged.append(exc)
        return damaged

    def _index_run(self, conn: sqlite3.Connection, run_id: str) -> None:
        """Copy one run directory's state into the index (the directory wins)."""
        config = self.config(run_id)
        index_run(
            conn, run_id, config, self._read(run_id, "status") or {},
            self._read(run_id, "metrics") or {},
        )  # fmt: skip

    # -- run directories --------------------------------------------------------------------------
    def run_dir(self, run_id: str) -> Path:
        return self.runs_dir / run_id

    def checkpoint(self, run_id: str, which: str = "best") -> Path:
        return self.run_dir(run_id) / "checkpoints" / f"{which}.pt"

    def _fix(self, run_id: str, name: str) -> str:
        """What to do about ``run_id``'s damaged ``name``.json."""
        d = self.run_dir(run_id)
        if name == "metrics":
            return (
                f"re-evaluate the run from its best.pt: bench eval {run_id} --suite config "
                f"--store {self.root}"
            )
        if name == "config":
            return f"rerun the grid it belongs to with bench run (which rewrites it), or delete {d}"
        grids = []
        with contextlib.suppress(UserError):
            grids = self.config(run_id).get("grids", [])
        rerun = f"bench run --grid {grids[0]} --store {self.root}" if grids else "its grid"
        return f"rerun {rerun} (it resumes the run from its checkpoints), or delete {d}"

    def _read(self, run_id: str, name: str) -> Any:
        """``<run>/<name>.json`` checked for the shape it must have; None when absent."""
        path = self.run_dir(run_id) / f"{name}.json"
        try:
            data = json.loads(path.read_bytes())
        except FileNotFoundError:
            return None
        except (ValueError, RecursionError) as exc:  # JSONDecodeError, bad UTF-8
            raise DamagedFile(path, f"not JSON: {exc}", self._fix(run_id, name)) from None
        except OSError as exc:
            raise file_error(exc, path, "read") from None
        problem = PROBLEMS[name](data)
        if problem:
            raise DamagedFile(path, problem, self._fix(run_id, name))
        return data

    def config(self, run_id: str) -> dict[str, Any]:
        config = self._read(run_id, "config")
        if config is None:
            path = self.run_dir(run_id) / "config.json"
            raise DamagedFile(path, "missing", self._fix(run_id, "config"))
        return config

    def status(self, run_id: str) -> str | None:
        status = self._read(run_id, "status")
        return None if status is None else status["status"]

    def status_record(self, run_id: str) -> dict[str, Any] | None:
        """The whole status.json (status, times, host, pid, error), or None."""
        return self._read(run_id, "status")

    def metrics(self, run_id: str) -> dict[str, Any]:
        return self._read(run_id, "metrics") or {}

    def is_complete(self, run_id: str) -> bool:
        """Whether the run is complete with a readable config and metrics (a damaged file: not
        complete, so ``bench run`` takes the run up again and rewrites it)."""
        try:
            return (
                self.status(run_id) == "complete"
                and bool(self._read(run_id, "metrics"))
                and bool(self._read(run_id, "config"))
            )
        except UserError:
            return False

    def _set_status(self, run_id: str, status: str, **extra: Any) -> None:
        path = self.run_dir(run_id) / "status.json"
        try:
            old = self._read(run_id, "status") or {}
        except UserError:  # a damaged one is replaced
            old = {}
        now = time.time()
        record = {
            "status": status,
            "created_at": old.get("created_at", now),
            "updated_at": now,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            **extra,
        }
        write_json_atomic(record, path)

    @contextmanager
    def _journal(self, run_id: str) -> Iterator[str]:
        """A ``pending/`` marker for a change of ``run_id`` that touches its directory, then the
        index; yields the token the new status.json records. Removed once the index is written,
        left behind by a kill or an error in between (for :meth:`heal`)."""
        token = secrets.token_hex(8)
        marker = self.root / PENDING / run_id
        record = {"host": socket.gethostname(), "pid": os.getpid(), "token": token}
        write_json_atomic(record, marker, durable=False)
        yield token
        with contextlib.suppress(OSError):
            marker.unlink()

    def claim(self, run_id: str) -> claims.Claim:
        """Claim ``run_id`` for this process (:func:`harness.store.claims.acquire`), then remove the
        temporary files a killed process left in its directory. Raises
        :class:`harness.store.claims.Claimed` when another live process holds it."""
        d = self.run_dir(run_id)
        try:
            claim = claims.acquire(d)
        except OSError as exc:
            raise file_error(exc, d / claims.CLAIM) from None
        from harness.utils.atomic import remove_stray_tmp

        remove_stray_tmp(d)
        with contextlib.suppress(UserError):  # a damaged status.json: begin() rewrites it
            if (self._read(run_id, "status") or {}).get("resetting"):
                self._clear_outputs(run_id)  # a reset a killed process began (see reset)
        return claim

    def begin(self, run_id: str, config: RunConfig | dict[str, Any]) -> Path:
        """Create (or reopen) the run's directory; refuse a different config under the same id.

        A damaged config.json is rewritten: the id is the hash of the config, so the config
        given under it is the one that was lost. A damaged metrics.json is removed (the run
        writes it again when it finishes).
        """
        config = as_json(config)
        d = self.run_dir(run_id)
        cfg_path = d / "config.json"
        try:
            old = self._read(run_id, "config")
        except DamagedFile:
            old = None
        if old is not None:
            # grids: where the run is listed; data: the split sizes the runner observed
            strip = {k: v for k, v in old.items() if k not in ("grids", "data")}
            new = {k: v for k, v in config.items() if k not in ("grids", "data")}
            if canonical_json(strip) != canonical_json(new):
                raise UserError(
                    f"run {run_id} already exists in {self.root} with a different config"
                )
            config = {
                **config,
                "grids": sorted(set(old.get("grids", [])) | set(config.get("grids", []))),
            }
        with self._journal(run_id) as token:
            write_json_atomic(config, cfg_path)
            try:
                self._read(run_id, "metrics")
            except DamagedFile:  # rewritten when the run finishes again
                (d / "metrics.json").unlink()
            self._set_status(run_id, "running", write=token)
            with self._write() as conn:
                self._index_run(conn, run_id)
        return d

    def finish(self, run_id: str, metrics: dict[str, Any]) -> None:
        with self._journal(run_id) as token:
            write_json_atomic(metrics, self.run_dir(run_id) / "metrics.json")
            self._set_status(run_id, "complete", write=token)
            with self._write() as conn:
                self._index_run(conn, run_id)

    def fail(self, run_id: str, error: str, **where: Any) -> None:
        with self._journal(run_id) as token:
            self._set_status(run_id, "failed", error=error, write=token, **where)
            with self._write() as conn:
                self._index_run(conn, run_id)

    def log(self, run_id: str, line: str) -> None:
        path = self.run_dir(run_id) / "log.txt"
        try:
            with open(path, "a") as fh:
                fh.write(line.rstrip("\n") + "\n")
        except OSError as exc:
            raise file_error(exc, path) from None

    def train_record(self, run_id: str) -> Path:
        """``checkpoints/train.json``: a complete run's training summary (best epoch, history),
        kept apart from metrics.json so that a damaged one loses no training record."""
        return self.run_dir(run_id) / "checkpoints" / "train.json"

    def prune(self, run_id: str) -> list[Path]:
        """Delete what only an unfinished run needs: ``last.pt`` and ``prev.pt`` (the resume
        points; for a digits ResNet-34 surrogate 400 MB together). ``best.pt`` stays, for
        ``bench eval`` and teachers; the epochs' records stay in metrics.json and train.json.
        Called with the run's claim held, once it is complete."""
        removed = []
        for which in ("last", "prev"):
            path = self.checkpoint(run_id, which)
            try:
                path.unlink()
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise file_error(exc, path) from None
            removed.append(path)
        return removed

    # -- healing --------------------------------------------------------------------------------
    def _pending(self) -> list[Path]:
        try:
            return sorted(p for p in (self.root / PENDING).iterdir() if not p.name.startswith("."))
        except OSError:
            return []

    def _marker_done(self, marker: Path, run_id: str) -> bool:
        """Whether the change ``marker`` announced is over: its status.json is written, or its
        process is dead (or silent for longer than a claim lives)."""
        try:
            record = json.loads(marker.read_text())
            token, host, pid = record["token"], record["host"], int(record["pid"])
        except (OSError, ValueError, KeyError, TypeError):
            return True
        with contextlib.suppress(UserError):
            if (self._read(run_id, "status") or {}).get("write") == token:
                return True
        if host == socket.gethostname() and not claims.pid_alive(pid):
            return True
        with contextlib.suppress(OSError):
            return time.time() - marker.stat().st_mtime > claims.stale_after()
        return True

    def heal(self) -> list[str]:
        """Re-index the runs whose change a killed process left half-indexed (their
        ``pending/`` markers); returns their ids. A store this process may not write is left
        as it is (a read still works)."""
        markers = self._pending()
        if not markers:
            return []
        healed, removed = [], False
        try:
            with self._write() as conn:
                for marker in markers:
                    run_id = marker.name
                    if (self.run_dir(run_id) / "config.json").exists():
                        with contextlib.suppress(DamagedFile):  # store check reports it
                            self._index_run(conn, run_id)
                    else:  # removed (bench rm): its directory went first
                        self._unindex(conn, run_id)
                        removed = True
                    if self._marker_done(marker, run_id):
                        healed.append(run_id)
        except DamagedFile:
            raise
        except UserError:  # read-only store, full disk: nothing to heal with
            return []
        for run_id in healed:
            with contextlib.suppress(OSError):
                (self.root / PENDING / run_id).unlink()
        if removed:
            self.sweep_removed()
        return healed

    def sync(self, run_id: str) -> bool:
        """Re-index ``run_id`` if the index disagrees with its directory about its status;
        True when it did."""
        status = self.status(run_id) or "running"
        try:
            with self._db() as conn:
                row = conn.execute("SELECT status FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        except DamagedFile:
            raise
        except UserError:
            row = None
        if row is not None and row[0] == status:
            return False
        with self._write() as conn:
            self._index_run(conn, run_id)
        return True

    # -- queries ----------------------------------------------------------------------------------
    def run_ids(self) -> list[str]:
        try:
            if not self.runs_dir.is_dir():
                return []
            return sorted(
                p.name
                for p in self.runs_dir.iterdir()
                if not p.name.startswith(".") and (p / "config.json").exists()
            )  # a ".removed-..." folder is a run being deleted (remove)
        except OSError as exc:
            raise file_error(exc, self.runs_dir, "read") from None

    def resolve(self, ref: str) -> str:
        """A run id from an id or a unique prefix of one. An empty ``ref`` names no run (not
        the only run of a store): ``bench rm "$RUN"`` with ``RUN`` unset must remove nothing."""
        if not ref:
            raise UserError(f"an empty run id names no run in {self.root}; give an id or a prefix")
        ids = self.run_ids()
        if ref in ids:
            return ref
        hits = [i for i in ids if i.startswith(ref)]
        if len(hits) == 1:
            return hits[0]
        if not hits:
            raise UserError(f"no run {ref!r} in {self.root}")
        raise UserError(f"run {ref!r} is ambiguous in {self.root}: {', '.join(hits[:5])}")

    def frame(self, table: str, grid: str | None = None) -> pd.DataFrame:
        """The ``runs``, ``results``, ``grid_runs`` or ``teachers`` table (optionally one
        grid's) as a DataFrame."""
        if table not in ("runs", "results", "grid_runs", "teachers"):
            raise ValueError(table)
        if not self.index_path.exists() and not self.run_ids():
            return empty_frame(table)  # nothing to read: a read never creates the store
        self.heal()
        current = False
        if self.index_path.exists():
            with self._db() as conn:
                current = conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        if not current:  # no index yet, or one of another version (or an empty file)
            with self._write():
                pass
        with self._db() as conn:
            if grid is None:
                return pd.read_sql_query(f"SELECT * FROM {table}", conn)
            return pd.read_sql_query(
                f"SELECT t.* FROM {table} t JOIN grid_runs g ON g.run_id = t.run_id "
                "WHERE g.grid = ?",
                conn,
                params=(grid,),
            )

    def rebuild_index(self, echo: Callable[[str], None] = lambda line: None) -> int:
        """Recreate the index from the run directories; returns the number of runs indexed.

        An index SQLite cannot read is moved aside to ``index.sqlite.damaged`` first. Run
        directories with a damaged file are left out; after the others are indexed, a
        :class:`DamagedFile` names the first of them.
        """
        try:
            damaged, n = self._rebuild()
        except DamagedFile as exc:
            if Path(exc.path) != self.index_path:
                raise
            for suffix in ("", "-journal"):
                src = self.index_path.with_name(self.index_path.name + suffix)
                dst = self.index_path.with_name(f"{self.index_path.name}.damaged{suffix}")
                try:
                    if src.exists():
                        os.replace(src, dst)
                except OSError as err:
                    raise file_error(err, src, "move aside") from None
            echo(f"moved the damaged index aside to {self.index_path}.damaged ({exc})")
            damaged, n = self._rebuild()
        with contextlib.suppress(OSError):
            for marker in self._pending():
                marker.unlink()
        if damaged:
            first = damaged[0]
            more = f" (and {len(damaged) - 1} more run(s))" if len(damaged) > 1 else ""
            raise DamagedRuns(f"indexed {n} run(s), left out {len(damaged)}: {first}{more}")
        return n

    def _rebuild(self) -> tuple[list[DamagedFile], int]:
        with self._write() as conn:
            for table in INDEX_TABLES:
                conn.execute(f"DELETE FROM {table}")
            damaged = self._index_all(conn)
        return damaged, len(self.run_ids()) - len(damaged)

    def check(self) -> list[str]:
        """Differences between the index and the run directories, and damaged files of the run
        directories (config, status, metrics, checkpoints), one line each with the fix; empty
        when all is well."""
        problems = []
        runs = self.frame("runs").set_index("run_id")
        results = self.frame("results")
        ids = set(self.run_ids())
        for run_id in sorted(ids - set(runs.index)):
            problems.append(f"{run_id}: run directory not in the index")
        for run_id in sorted(set(runs.index) - ids):
            problems.append(f"{run_id}: indexed, but its run directory is gone")
        for run_id in sorted(ids):
            try:
                self.config(run_id)
                status = self.status(run_id) or "running"
                metrics = self.metrics(run_id)
            except UserError as exc:
                problems.append(f"{run_id}: {exc}")
                continue
            problems += self._checkpoint_problems(run_id, status)
            if run_id not in runs.index:
                continue
            if runs.loc[run_id, "status"] != status:
                problems.append(
                    f"{run_id}: index says {runs.loc[run_id, 'status']}, directory says {status}"
                )
            want = {k: v["accuracy"] for k, v in metrics.get("results", {}).items()}
            have = dict(results.loc[results["run_id"] == run_id, ["attack", "accuracy"]].values)
            if want != have:
                problems.append(f"{run_id}: index results differ from metrics.json")
        return problems

    def _checkpoint_problems(self, run_id: str, status: str) -> list[str]:
        out = []
        for which in ("best", "last"):
            path = self.checkpoint(run_id, which)
            problem = checkpoint_problem(path) if path.exists() else None
            if problem is None:
                continue
            if which == "best":
                fix = f"delete {self.run_dir(run_id)} and rerun its grid to train it again"
            elif status == "complete":
                fix = "the run is complete and does not need it: delete it"
            else:
                fix = "delete it: a resumed run falls back to prev.pt"
            out.append(f"{run_id}: {path} is damaged ({problem}); {fix}")
        return out

    # -- rerun and removal (the caller holds the run's claim) ------------------------------------
    def reset(self, run_id: str) -> None:
        """Turn a run back into one that has not started: its results, checkpoints, evaluation
        state and log are removed, its config kept (``bench run --force``).

        status.json says ``resetting`` first, so the run is no longer complete from that moment
        on, and whoever claims it next finishes a reset a killed process began (:meth:`claim`):
        a rerun never mixes the old run's checkpoints or per-batch evaluation with its own.
        """
        with self._journal(run_id) as token:
            self._set_status(run_id, "running", write=token, resetting=True)
            self._clear_outputs(run_id)
            self._set_status(run_id, "running", write=token)
            with self._write() as conn:
                self._index_run(conn, run_id)

    def _clear_outputs(self, run_id: str) -> None:
        import shutil

        d = self.run_dir(run_id)
        try:
            for name in ("eval", "checkpoints"):
                if (d / name).exists():
                    shutil.rmtree(d / name)
            for name in ("metrics.json", "log.txt"):
                (d / name).unlink(missing_ok=True)
        except OSError as exc:
            raise file_error(exc, d, "clear") from None

    def remove(self, run_id: str) -> None:
        """Remove ``run_id`` from the run directories and the index together.

        The directory is renamed out of the store's view in one step (``runs/.removed-...``),
        then its index rows are deleted and the folder is deleted; a process killed in between
        leaves a ``pending/`` marker by which the next reader drops the rows (:meth:`heal`).
        The rename happens inside the index's write transaction: an index that cannot be
        written (damaged, read-only) fails the removal before the run is touched.
        """
        d = self.run_dir(run_id)
        with self._journal(run_id) as token, self._write() as conn:
            trash = self.runs_dir / f".removed-{run_id}-{token}"
            try:
                os.replace(d, trash)
            except OSError as exc:
                raise file_error(exc, d, "remove") from None
            self._unindex(conn, run_id)
        self.sweep_removed()

    def sweep_removed(self) -> None:
        """Delete the folders of removed runs (left behind by a process killed while deleting)."""
        import shutil

        with contextlib.suppress(OSError):
            for p in self.runs_dir.glob(".removed-*"):
                shutil.rmtree(p, ignore_errors=True)

    @staticmethod
    def _unindex(conn: sqlite3.Connection, run_id: str) -> None:
        for table in INDEX_TABLES:
            conn.execute(f"DELETE FROM {table} WHERE run_id = ?", (run_id,))


class DamagedRuns(UserError):
    """``rebuild_index`` left out run directories with a damaged file."""
