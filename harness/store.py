"""The result store: one directory per run (the source of truth) and a SQLite index over them.

    <root>/runs/<run_id>/config.json    the resolved config (its hash is in the run id), plus
                                        the grids listing it and the split sizes it ran on
                         status.json    running | complete | failed, with the reason
                         metrics.json   per-attack accuracies, training summary
                         log.txt        one line per epoch
                         checkpoints/   last.pt (every epoch), best.pt (selected)
    <root>/index.sqlite                 runs, results (one row per run × attack), grid tags

Every file is written atomically (temporary file + rename). Index writes are single SQLite
transactions behind a busy timeout, so concurrent writers wait instead of losing rows; the
rollback journal (not WAL) keeps it usable on network file systems. ``rebuild_index`` recreates
the index from the run directories alone.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd

from harness.checkpoints import write_json_atomic
from harness.config import canonical_json
from harness.errors import UserError

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    kind TEXT, method TEXT, dataset TEXT, teacher TEXT, student TEXT, seed INTEGER,
    epochs INTEGER, full_epochs INTEGER, schedule TEXT,
    status TEXT, error TEXT, created_at REAL, updated_at REAL, wall_time_s REAL,
    flags TEXT, config_hash TEXT, provenance TEXT
);
CREATE TABLE IF NOT EXISTS results (
    run_id TEXT NOT NULL, attack TEXT NOT NULL, accuracy REAL, n INTEGER, params TEXT,
    PRIMARY KEY (run_id, attack)
);
CREATE TABLE IF NOT EXISTS grid_runs (
    grid TEXT NOT NULL, run_id TEXT NOT NULL, PRIMARY KEY (grid, run_id)
);
"""

STATUSES = ("running", "complete", "failed")
SCHEMA_VERSION = 2  # bump when SCHEMA changes: older indexes are rebuilt on first write


def _read_json(path: Path) -> Any:
    with open(path) as fh:
        return json.load(fh)


def _empty_frame(table: str) -> pd.DataFrame:
    """``table`` of an empty index, with its columns."""
    conn = sqlite3.connect(":memory:")
    try:
        conn.executescript(SCHEMA)
        return pd.read_sql_query(f"SELECT * FROM {table}", conn)
    finally:
        conn.close()


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
    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:  # a file in the way, no permission
            raise UserError(f"cannot create the store folder {self.root}: {exc.strerror}") from None
        conn = sqlite3.connect(self.index_path, timeout=120.0, isolation_level=None)
        try:
            conn.execute("PRAGMA busy_timeout = 120000")
            yield conn
        finally:
            conn.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._db() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                outdated = conn.execute("PRAGMA user_version").fetchone()[0] != SCHEMA_VERSION
                if outdated:  # an index of another version: rebuilt from the run directories
                    for table in ("runs", "results", "grid_runs"):
                        conn.execute(f"DROP TABLE IF EXISTS {table}")
                for stmt in SCHEMA.strip().split(";"):
                    if stmt.strip():
                        conn.execute(stmt)
                if outdated:
                    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                    for run_id in self.run_ids():
                        self._index_run(conn, run_id)
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

    def _index_run(self, conn: sqlite3.Connection, run_id: str) -> None:
        """Copy one run directory's state into the index (the directory wins)."""
        d = self.run_dir(run_id)
        config = _read_json(d / "config.json")
        status = _read_json(d / "status.json") if (d / "status.json").exists() else {}
        metrics = _read_json(d / "metrics.json") if (d / "metrics.json").exists() else {}
        teacher = config.get("teacher") or {}
        train = config.get("train", {})
        conn.execute(
            "INSERT OR REPLACE INTO runs VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                run_id,
                config.get("kind"),
                config["method"].get("variant") or config["method"]["name"],
                config["dataset"]["name"],
                teacher.get("name"),
                config["model"],
                config.get("seed"),
                train.get("epochs"),
                config.get("full_epochs"),
                config.get("schedule"),
                status.get("status", "running"),
                status.get("error"),
                status.get("created_at"),
                status.get("updated_at"),
                metrics.get("wall_time_s"),
                canonical_json({k: v["ok"] for k, v in metrics.get("checks", {}).items()}),
                run_id.rsplit("-", 1)[-1],
                canonical_json(metrics.get("provenance", {})),
            ),
        )
        conn.execute("DELETE FROM results WHERE run_id = ?", (run_id,))
        for attack, row in metrics.get("results", {}).items():
            conn.execute(
                "INSERT INTO results VALUES (?,?,?,?,?)",
                (run_id, attack, row["accuracy"], row["n"], canonical_json(row.get("params"))),
            )
        for grid in config.get("grids", []):
            conn.execute("INSERT OR IGNORE INTO grid_runs VALUES (?, ?)", (grid, run_id))

    # -- run directories --------------------------------------------------------------------------
    def run_dir(self, run_id: str) -> Path:
        return self.runs_dir / run_id

    def checkpoint(self, run_id: str, which: str = "best") -> Path:
        return self.run_dir(run_id) / "checkpoints" / f"{which}.pt"

    def config(self, run_id: str) -> dict[str, Any]:
        return _read_json(self.run_dir(run_id) / "config.json")

    def status(self, run_id: str) -> str | None:
        path = self.run_dir(run_id) / "status.json"
        return _read_json(path)["status"] if path.exists() else None

    def metrics(self, run_id: str) -> dict[str, Any]:
        path = self.run_dir(run_id) / "metrics.json"
        return _read_json(path) if path.exists() else {}

    def _set_status(self, run_id: str, status: str, **extra: Any) -> None:
        path = self.run_dir(run_id) / "status.json"
        old = _read_json(path) if path.exists() else {}
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

    def begin(self, run_id: str, config: dict[str, Any]) -> Path:
        """Create (or reopen) the run's directory; refuse a different config under the same id."""
        d = self.run_dir(run_id)
        cfg_path = d / "config.json"
        if cfg_path.exists():
            old = _read_json(cfg_path)
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
        d.mkdir(parents=True, exist_ok=True)
        write_json_atomic(config, cfg_path)
        self._set_status(run_id, "running")
        with self._write() as conn:
            self._index_run(conn, run_id)
        return d

    def finish(self, run_id: str, metrics: dict[str, Any]) -> None:
        write_json_atomic(metrics, self.run_dir(run_id) / "metrics.json")
        self._set_status(run_id, "complete")
        with self._write() as conn:
            self._index_run(conn, run_id)

    def fail(self, run_id: str, error: str, **where: Any) -> None:
        self._set_status(run_id, "failed", error=error, **where)
        with self._write() as conn:
            self._index_run(conn, run_id)

    def log(self, run_id: str, line: str) -> None:
        with open(self.run_dir(run_id) / "log.txt", "a") as fh:
            fh.write(line.rstrip("\n") + "\n")

    # -- queries ----------------------------------------------------------------------------------
    def run_ids(self) -> list[str]:
        if not self.runs_dir.exists():
            return []
        return sorted(p.name for p in self.runs_dir.iterdir() if (p / "config.json").exists())

    def resolve(self, ref: str) -> str:
        """A run id from an id or a unique prefix of one."""
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
        """The ``runs`` or ``results`` table (optionally one grid's) as a DataFrame."""
        if table not in ("runs", "results"):
            raise ValueError(table)
        if not self.index_path.exists() and not self.run_ids():
            return _empty_frame(table)  # nothing to read: a read never creates the store
        if not self.index_path.exists():
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

    def rebuild_index(self) -> int:
        """Recreate the index from the run directories; returns the number of runs indexed."""
        ids = self.run_ids()
        with self._write() as conn:
            for table in ("runs", "results", "grid_runs"):
                conn.execute(f"DELETE FROM {table}")
            for run_id in ids:
                self._index_run(conn, run_id)
        return len(ids)

    def check(self) -> list[str]:
        """Differences between the index and the run directories (empty when consistent)."""
        problems = []
        runs = self.frame("runs").set_index("run_id")
        results = self.frame("results")
        ids = set(self.run_ids())
        for run_id in sorted(ids - set(runs.index)):
            problems.append(f"{run_id}: run directory not in the index")
        for run_id in sorted(set(runs.index) - ids):
            problems.append(f"{run_id}: indexed, but its run directory is gone")
        for run_id in sorted(ids & set(runs.index)):
            status = self.status(run_id) or "running"
            if runs.loc[run_id, "status"] != status:
                problems.append(
                    f"{run_id}: index says {runs.loc[run_id, 'status']}, directory says {status}"
                )
            want = {k: v["accuracy"] for k, v in self.metrics(run_id).get("results", {}).items()}
            have = dict(results.loc[results["run_id"] == run_id, ["attack", "accuracy"]].values)
            if want != have:
                problems.append(f"{run_id}: index results differ from metrics.json")
        return problems
