"""Reading the store for publication: the queries the leaderboards and the paper's report share.

Both read the SQLite index (through :meth:`Store.frame`), parse run configs, name a run's failed
reliability checks, and find the ``bench eval`` runs of a teacher's weights; each of those is
written here once. Reading never writes.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from typing import Any

import pandas as pd

from harness.store.store import Store

#: The run kinds ``bench eval`` stores: a checkpoint file (or URL) and a RobustBench model.
EVALUATION_KINDS = ("checkpoint", "robustbench")


def run_configs(runs: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """Each run's config, by run id, from the index's ``config`` column."""
    return {r: json.loads(c or "{}") for r, c in zip(runs["run_id"], runs["config"])}


def failed_checks(flags: Iterable[str | None]) -> list[str]:
    """The reliability checks that failed in any of the index's ``flags`` values (JSON)."""
    return sorted({k for f in flags for k, ok in json.loads(f or "{}").items() if not ok})


def same_weights(given: dict[str, Any], ref: dict[str, Any]) -> bool:
    """Whether the ``source`` of a ``bench eval`` run is the weights ``ref`` names: a RobustBench
    model by its name, any other by its sha256."""
    name = ref.get("robustbench")
    if name is not None and given.get("robustbench") == name:
        return True
    sha = ref.get("sha256")
    return sha is not None and given.get("sha256") == sha


def evaluations_of(configs: dict[str, dict[str, Any]], ref: dict[str, Any], dataset: str) -> list:
    """The ``bench eval`` runs among ``configs`` of the weights ``ref`` names, on ``dataset``."""
    return [
        run_id
        for run_id, config in configs.items()
        if config.get("kind") in EVALUATION_KINDS
        and config.get("dataset", {}).get("name") == dataset
        and same_weights(config.get("source") or {}, ref)
    ]


class StoreView:
    """The store's runs and results, read once and indexed for lookups by what a run is."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.runs: dict[str, dict[str, Any]] = {}
        self.results: dict[str, dict[str, float]] = {}
        if store.index_path.exists():
            for rec in store.frame("runs").to_dict("records"):
                self.runs[rec["run_id"]] = rec
            for rec in store.frame("results").to_dict("records"):
                self.results.setdefault(rec["run_id"], {})[rec["attack"]] = rec["accuracy"]
        self._configs: dict[str, dict[str, Any] | None] = {}

    def config(self, run_id: str) -> dict[str, Any] | None:
        """The run's ``config.json``, or None where the run directory has none."""
        if run_id not in self._configs:
            path = self.store.run_dir(run_id) / "config.json"
            self._configs[run_id] = json.loads(path.read_text()) if path.exists() else None
        return self._configs[run_id]

    def candidates(
        self, kind: str, method: str, student: str, teacher: str | None, dataset: str
    ) -> list[dict[str, Any]]:
        """The index records of runs of this kind, method, student, teacher and data set."""

        def same_teacher(value: Any) -> bool:
            absent = value is None or (isinstance(value, float) and math.isnan(value))
            return absent if teacher is None else value == teacher

        return [
            r
            for r in self.runs.values()
            if r["kind"] == kind
            and r["method"] == method
            and r["student"] == student
            and r["dataset"] == dataset
            and same_teacher(r["teacher"])
        ]
