"""``bench runs``: every run of a store, across grids, with what it is and its main numbers.

The runs ``bench eval`` made of a checkpoint or a RobustBench model belong to no grid; they are
listed too (grid ``—``, kind ``checkpoint`` or ``robustbench``).
"""

from __future__ import annotations

import json
from typing import Any

from harness.method_code import current_sha256
from harness.store.store import Store

#: Results shown as columns, in this order, when any listed run has them (accuracy in %).
COLUMNS = {"clean": "clean", "pgd10": "pgd10", "autoattack": "AA", "worst_case": "worst"}


def stale(config: dict[str, Any], provenance: dict[str, Any], now: dict[str, Any]) -> bool:
    """Whether the run's method code (its recorded hash) differs from the code installed now;
    ``now`` caches method name → hash. A run without a recorded hash is not called stale."""
    recorded = (provenance.get("method_code") or {}).get("sha256")
    name = (config.get("method") or {}).get("name")
    if not recorded or not name:
        return False
    if name not in now:
        now[name] = current_sha256(name)
    return now[name] is not None and now[name] != recorded


def list_runs(
    store: Store,
    *,
    grid: str | None = None,
    method: str | None = None,
    kinds: tuple[str, ...] = (),
) -> list[dict[str, Any]]:
    """One record per run (``grid``: only that grid's; ``method``: a method or variant name,
    ``checkpoint`` or ``robustbench`` for ``bench eval``'s runs), ordered by grid, then id."""
    runs = store.frame("runs", grid)
    results = store.frame("results")
    tags = store.frame("grid_runs")
    if method:
        runs = runs[runs["method"] == method]
    if kinds:
        runs = runs[runs["kind"].isin(kinds)]
    grids: dict[str, list[str]] = {}
    for g, run_id in zip(tags["grid"], tags["run_id"]):
        grids.setdefault(run_id, []).append(g)
    acc: dict[str, dict[str, float]] = {}
    for run_id, attack, value in zip(results["run_id"], results["attack"], results["accuracy"]):
        acc.setdefault(run_id, {})[attack] = 100 * float(value)
    shown = [c for c in COLUMNS if any(c in a for a in acc.values())]
    hashes: dict[str, Any] = {}
    out = []
    for row in runs.itertuples(index=False):
        config = json.loads(row.config or "{}")
        record = {
            "run": row.run_id,
            "grid": ", ".join(sorted(grids.get(row.run_id, []))) or "— (bench eval)",
            "kind": row.kind,
            "method": row.method,
            "dataset": row.dataset,
            "model": row.student,
            "teacher": row.teacher or "—",
            "seed": "—" if row.kind in ("checkpoint", "robustbench") else row.seed,
            "schedule": row.schedule,
            "status": row.status,
        }
        mine = acc.get(row.run_id, {})
        for c in shown:
            record[COLUMNS[c]] = f"{mine[c]:.2f}" if c in mine else "—"
        code = stale(config, json.loads(row.provenance or "{}"), hashes)
        record["code"] = "stale" if code else ""
        out.append(record)
    return sorted(out, key=lambda r: (r["grid"], r["run"]))
