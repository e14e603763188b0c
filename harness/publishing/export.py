"""``bench export``: a run's results as one JSON file per entry, in the spirit of RobustBench's
``model_info/<dataset>/<threat>/<name>.json`` (its ``clean_acc``/``autoattack_acc`` keys, as
numbers, in %), with everything else a reader needs to trust the entry: the method and its
hyperparameters, the teacher, the schedule, every attack's parameters, the reliability checks
and the provenance (code version, method code hash, stale or not).

:data:`FIELDS` is the schema (README "Exporting results" documents each field); :func:`validate`
checks an entry against it, and every file written is checked first.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import harness
from harness.store.listing import stale
from harness.store.store import Store
from harness.utils.atomic import write_json_files_atomic
from harness.utils.errors import UserError

SCHEMA = "adv-distill-bench/run-results/1"
THREAT_MODEL = "Linf"
NUMBER = (int, float)
NONE = type(None)

#: Field → the JSON types it may take (``None`` where the value can be missing). Order is the
#: order of the file.
FIELDS: dict[str, tuple[type, ...]] = {
    "schema": (str,),
    "run_id": (str,),
    "name": (str,),
    "method": (str,),
    "hparams": (dict,),
    "kind": (str,),
    "dataset": (str,),
    "architecture": (str,),
    "teacher": (dict, NONE),
    "seed": (int, NONE),
    "threat_model": (str,),
    "eps": (float, NONE),
    "clean_acc": (*NUMBER, NONE),
    "autoattack_acc": (*NUMBER, NONE),
    "worst_case_acc": (*NUMBER, NONE),
    "results": (dict,),
    "schedule": (dict,),
    "checks": (dict,),
    "grids": (list,),
    "provenance": (dict,),
    "exported_by": (str,),
}
RESULT_FIELDS: dict[str, tuple[type, ...]] = {"accuracy": NUMBER, "n": (int,), "params": (dict,)}
SCHEDULE_FIELDS: dict[str, tuple[type, ...]] = {
    "epochs": (int,),
    "full_epochs": (int, NONE),
    "schedule": (str, NONE),
    "select_on": (str, NONE),
}
PROVENANCE_FIELDS: dict[str, tuple[type, ...]] = {
    "code": (str, NONE),
    "method_code_sha256": (str, NONE),
    "method_code_dirty": (bool, str, NONE),
    "stale": (bool,),
    "torch": (str, NONE),
    "device": (str, NONE),
    "wall_time_s": (*NUMBER, NONE),
}


def _check(table: dict[str, Any], fields: dict[str, tuple[type, ...]], where: str) -> list[str]:
    problems = []
    if set(table) != set(fields):
        extra, missing = sorted(set(table) - set(fields)), sorted(set(fields) - set(table))
        problems.append(f"{where}: fields differ (extra {extra}, missing {missing})")
    for key, types in fields.items():
        value = table.get(key)
        ok = isinstance(value, types) and (bool in types or not isinstance(value, bool))
        if key in table and not ok:
            problems.append(f"{where}{key} is {type(value).__name__}, not {types}")
    return problems


def validate(entry: dict[str, Any]) -> list[str]:
    """What in ``entry`` does not follow the schema (empty when it does)."""
    problems = _check(entry, FIELDS, "")
    if entry.get("schema") != SCHEMA:
        problems.append(f"schema is {entry.get('schema')!r}, not {SCHEMA!r}")
    for name, row in (entry.get("results") or {}).items():
        if not isinstance(row, dict):
            problems.append(f"results.{name} is not a table")
            continue
        problems += _check(row, RESULT_FIELDS, f"results.{name}.")
        value = row.get("accuracy")
        if isinstance(value, NUMBER) and not 0 <= value <= 100:
            problems.append(f"results.{name}.accuracy {value} is not a percentage")
    problems += _check(entry.get("schedule") or {}, SCHEDULE_FIELDS, "schedule.")
    problems += _check(entry.get("provenance") or {}, PROVENANCE_FIELDS, "provenance.")
    for name, ok in (entry.get("checks") or {}).items():
        if not isinstance(ok, bool):
            problems.append(f"checks.{name} is not true/false")
    return problems


def _pct(value: float | None) -> float | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return round(100 * value, 4)


def entry(store: Store, run_id: str) -> dict[str, Any]:
    """The export of the complete run ``run_id`` (see :data:`FIELDS`)."""
    if store.status(run_id) != "complete":
        state = store.status(run_id) or "not started"
        raise UserError(f"run {run_id} is {state}: nothing to export")
    config, metrics = store.config(run_id), store.metrics(run_id)
    results = metrics.get("results", {})
    method = config["method"]
    teacher = config.get("teacher")
    prov = metrics.get("provenance", {})
    code = prov.get("method_code") or {}
    train = config.get("train", {})
    external = config.get("kind") in ("checkpoint", "robustbench")
    eps = method.get("hparams", {}).get("eps")

    def acc(name: str) -> float | None:
        return _pct(results[name]["accuracy"]) if name in results else None

    return {
        "schema": SCHEMA,
        "run_id": run_id,
        "name": method.get("variant") or method["name"],
        "method": method["name"],
        "hparams": dict(method.get("hparams", {})),
        "kind": config.get("kind") or "student",
        "dataset": config["dataset"]["name"],
        "architecture": config["model"],
        "teacher": {k: teacher.get(k) for k in ("name", "model", "source")} if teacher else None,
        "seed": None if external else config.get("seed"),
        "threat_model": THREAT_MODEL,
        "eps": float(eps) if isinstance(eps, NUMBER) else None,
        "clean_acc": acc("clean"),
        "autoattack_acc": acc("autoattack"),
        "worst_case_acc": acc("worst_case"),
        "results": {
            name: {
                "accuracy": _pct(row["accuracy"]) if _pct(row["accuracy"]) is not None else 0.0,
                "n": int(row["n"]),
                "params": dict(row.get("params") or {}),
            }
            for name, row in sorted(results.items())
        },
        "schedule": {
            "epochs": int(train.get("epochs", 0)),
            "full_epochs": config.get("full_epochs"),
            "schedule": config.get("schedule"),
            "select_on": train.get("select_on"),
        },
        "checks": {name: bool(c.get("ok")) for name, c in metrics.get("checks", {}).items()},
        "grids": list(config.get("grids", [])),
        "provenance": {
            "code": prov.get("code"),
            "method_code_sha256": code.get("sha256"),
            "method_code_dirty": code.get("dirty"),
            "stale": stale(config, prov, {}),
            "torch": (prov.get("packages") or {}).get("torch"),
            "device": prov.get("gpu") or prov.get("device"),
            "wall_time_s": metrics.get("wall_time_s"),
        },
        "exported_by": f"adv-distill-bench {harness.__version__}",
    }


def export_runs(store: Store, run_ids: list[str], folder: Path) -> list[Path]:
    """Write each run's :func:`entry` to ``folder/<dataset>/Linf/<run_id>.json``; returns the
    paths. An entry that fails :func:`validate` is a bug, raised before anything is written;
    a file that cannot be written (a file in the way of one data set's folder) is an error
    that leaves none of the others written either."""
    entries = [entry(store, run_id) for run_id in run_ids]
    for e in entries:
        problems = validate(e)
        if problems:
            raise AssertionError(f"export of {e['run_id']} breaks its schema: {problems}")
    paths = [Path(folder) / e["dataset"] / THREAT_MODEL / f"{e['run_id']}.json" for e in entries]
    write_json_files_atomic(list(zip(entries, paths)))
    return paths
