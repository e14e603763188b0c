"""The store's SQLite index: its tables, and the rows one run directory makes in them.

The index is a cache of the run directories (the source of truth), kept for the queries of
the leaderboards and reports; :class:`harness.store.store.Store` owns its transactions.
"""

from __future__ import annotations

import sqlite3
from typing import Any

import pandas as pd

from harness.schema import TEACHER_ROLE, method_label
from harness.utils.values import canonical_json, config_hash

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    kind TEXT, method TEXT, dataset TEXT, teacher TEXT, student TEXT, seed INTEGER,
    epochs INTEGER, full_epochs INTEGER, schedule TEXT,
    status TEXT, error TEXT, created_at REAL, updated_at REAL, wall_time_s REAL,
    flags TEXT, config_hash TEXT, provenance TEXT, row_key TEXT, config TEXT
);
CREATE TABLE IF NOT EXISTS results (
    run_id TEXT NOT NULL, attack TEXT NOT NULL, accuracy REAL, n INTEGER, params TEXT,
    per_class TEXT, worst_class REAL,
    PRIMARY KEY (run_id, attack)
);
CREATE TABLE IF NOT EXISTS grid_runs (
    grid TEXT NOT NULL, run_id TEXT NOT NULL, PRIMARY KEY (grid, run_id)
);
CREATE TABLE IF NOT EXISTS teachers (
    run_id TEXT NOT NULL, role TEXT NOT NULL, name TEXT, model TEXT, source TEXT,
    teacher_run TEXT, PRIMARY KEY (run_id, role)
);
"""
#: The index's tables; ``runs.teacher`` holds the teacher's name (a multi-teacher run's names
#: joined by ``+``, as in its id), ``teachers`` one line per (run, role).
INDEX_TABLES = ("runs", "results", "grid_runs", "teachers")

#: Bump when SCHEMA changes: older indexes are rebuilt from the run directories on first use
#: (4: ``results.per_class`` and ``results.worst_class``; NULL for runs stored without them;
#: 5: the ``teachers`` table, a run's teachers by role).
SCHEMA_VERSION = 5


def teacher_roles(config: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(role, teacher table) of a run's JSON config: ``teacher`` (role :data:`TEACHER_ROLE`),
    else each role of ``teachers`` in its order; empty for a teacher-free run."""
    if config.get("teacher"):
        return [(TEACHER_ROLE, config["teacher"])]
    return list((config.get("teachers") or {}).items())


def worst_class(per_class: Any) -> float | None:
    """The lowest per-class accuracy of a result row's ``per_class`` (classes without test
    images, ``None``, left out), as Fair-ARD and ABSLD report it; ``None`` without any."""
    if not isinstance(per_class, list):
        return None
    present = [v for v in per_class if v is not None]
    return min(present) if present else None


def seedless(config: dict[str, Any]) -> dict[str, Any]:
    """A run's config without what tells the seeds of one configuration apart (and its grids).

    Runs with equal seedless configs are one leaderboard row (the ``row_key`` of the index);
    anything else that differs (schedule, teacher, hyperparameters, evaluation) is another row.
    """
    # data: the split sizes the runner observed, fixed by the dataset entry
    out = {k: v for k, v in config.items() if k not in ("seed", "grids", "data")}
    if isinstance(out.get("train"), dict):
        out["train"] = {k: v for k, v in out["train"].items() if k != "seed"}
    return out


def index_run(
    conn: sqlite3.Connection,
    run_id: str,
    config: dict[str, Any],
    status: dict[str, Any],
    metrics: dict[str, Any],
) -> None:
    """Write one run's rows (its directory's config, status and metrics, already checked)
    into the index, replacing what it held of the run."""
    roles = teacher_roles(config)
    train = config["train"]
    conn.execute(
        "INSERT OR REPLACE INTO runs VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
        (
            run_id,
            config.get("kind"),
            method_label(config),
            config["dataset"]["name"],
            "+".join(str(ref.get("name")) for _, ref in roles) or None,
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
            config_hash(seedless(config)),
            canonical_json(seedless(config)),
        ),
    )
    conn.execute("DELETE FROM results WHERE run_id = ?", (run_id,))
    for attack, row in metrics.get("results", {}).items():
        per_class = row.get("per_class")
        conn.execute(
            "INSERT INTO results VALUES (?,?,?,?,?,?,?)",
            (
                run_id,
                attack,
                row["accuracy"],
                row["n"],
                canonical_json(row.get("params")),
                None if per_class is None else canonical_json(per_class),
                worst_class(per_class),
            ),
        )
    for grid in config.get("grids", []):
        conn.execute("INSERT OR IGNORE INTO grid_runs VALUES (?, ?)", (grid, run_id))
    conn.execute("DELETE FROM teachers WHERE run_id = ?", (run_id,))
    for role, ref in roles:
        conn.execute(
            "INSERT OR REPLACE INTO teachers VALUES (?,?,?,?,?,?)",
            (run_id, role, *(ref.get(k) for k in ("name", "model", "source", "run_id"))),
        )


def empty_frame(table: str) -> pd.DataFrame:
    """``table`` of an empty index, with its columns."""
    conn = sqlite3.connect(":memory:")
    try:
        conn.executescript(SCHEMA)
        return pd.read_sql_query(f"SELECT * FROM {table}", conn)
    finally:
        conn.close()
