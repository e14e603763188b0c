"""What a run directory's files must hold: each file's problem in a few words (None when it
holds what it should), for :class:`harness.store.store.Store` to report as a damaged file."""

from __future__ import annotations

import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

#: A run's status.json says one of these.
STATUSES = ("running", "complete", "failed")
#: What an index column of SQLite's INTEGER can hold.
INT64 = (-(2**63), 2**63 - 1)


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and INT64[0] <= value <= INT64[1]


def is_number(value: Any) -> bool:
    return is_int(value) or isinstance(value, float)


def config_problem(cfg: Any) -> str | None:
    if not isinstance(cfg, dict):
        return "not a JSON object"
    method, dataset, train = cfg.get("method"), cfg.get("dataset"), cfg.get("train")
    if not isinstance(method, dict) or not isinstance(method.get("name"), str):
        return "no method name"
    if not isinstance(method.get("variant", ""), str):
        return "the variant is not a name"
    if not isinstance(dataset, dict) or not isinstance(dataset.get("name"), str):
        return "no dataset name"
    if not isinstance(cfg.get("model"), str):
        return "no model name"
    teacher = cfg.get("teacher")
    if teacher is not None and not (
        isinstance(teacher, dict) and isinstance(teacher.get("name", ""), str)
    ):
        return "the teacher is not a table with a name"
    teachers = cfg.get("teachers")
    if teachers is not None and not (
        isinstance(teachers, dict)
        and all(
            isinstance(t, dict) and isinstance(t.get("name", ""), str) for t in teachers.values()
        )
    ):
        return "the teachers are not a table of roles, each a table with a name"
    if not isinstance(train, dict):
        return "no train table"
    for key, value in (
        ("seed", cfg.get("seed")),
        ("train.epochs", train.get("epochs")),
        ("full_epochs", cfg.get("full_epochs")),
    ):
        if value is not None and not is_int(value):
            return f"{key} is not an integer the index can hold: {str(value)[:40]}"
    for key in ("kind", "schedule"):
        if cfg.get(key) is not None and not isinstance(cfg[key], str):
            return f"{key} is not a string"
    grids = cfg.get("grids", [])
    if not isinstance(grids, list) or not all(isinstance(g, str) for g in grids):
        return "grids is not a list of names"
    return None


def status_problem(status: Any) -> str | None:
    if not isinstance(status, dict):
        return "not a JSON object"
    if status.get("status") not in STATUSES:
        return f"status is {str(status.get('status'))[:40]!r}, not one of {', '.join(STATUSES)}"
    for key in ("created_at", "updated_at"):
        if status.get(key) is not None and not is_number(status[key]):
            return f"{key} is not a time"
    if status.get("error") is not None and not isinstance(status["error"], str):
        return "error is not a string"
    return None


def metrics_problem(metrics: Any) -> str | None:
    if not isinstance(metrics, dict):
        return "not a JSON object"
    results = metrics.get("results", {})
    if not isinstance(results, dict):
        return "results is not a table"
    for name, row in results.items():
        if not isinstance(row, dict) or not is_number(row.get("accuracy")):
            return f"result {name[:40]!r} has no accuracy"
        if not is_int(row.get("n")):
            return f"result {name[:40]!r} has no image count n"
        per_class, class_n = row.get("per_class", []), row.get("class_n", [])
        if not isinstance(per_class, list) or not all(v is None or is_number(v) for v in per_class):
            return f"result {name[:40]!r}: per_class is not a list of accuracies"
        if not isinstance(class_n, list) or not all(is_int(v) for v in class_n):
            return f"result {name[:40]!r}: class_n is not a list of image counts"
    checks = metrics.get("checks", {})
    if not isinstance(checks, dict) or not all(
        isinstance(c, dict) and "ok" in c for c in checks.values()
    ):
        return "checks is not a table of checks"
    if metrics.get("wall_time_s") is not None and not is_number(metrics["wall_time_s"]):
        return "wall_time_s is not a number"
    if not isinstance(metrics.get("provenance", {}), dict):
        return "provenance is not a table"
    return None


PROBLEMS: dict[str, Callable[[Any], str | None]] = {
    "config": config_problem,
    "status": status_problem,
    "metrics": metrics_problem,
}


def checkpoint_problem(path: Path) -> str | None:
    """Why ``path`` is not a readable torch checkpoint (None when it looks whole).

    Reads the zip's directory (at the end of the file: a truncated file has none) and the
    small pickle record (its CRC checked), not the tensors: cheap enough for a store of
    thousands of runs. The pickle is not unpickled.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            record = next((n for n in archive.namelist() if n.endswith("data.pkl")), None)
            if record is None:
                return "no data.pkl record: not a torch checkpoint"
            archive.read(record)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, ValueError) as exc:
        return f"not a whole checkpoint: {exc}"
    except OSError as exc:
        return f"unreadable: {exc.strerror or exc}"
    return None
