"""``bench status``, ``bench plan`` and ``bench teachers``: tables about a grid and its store."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from tabulate import tabulate

from harness.grid.load import Grid, RunSpec, schedule_note, teacher_label
from harness.schema import TEACHER_ROLE, RunConfig, TeacherRef
from harness.store import claims
from harness.store.store import Store
from harness.utils.downloads import url_path
from harness.utils.errors import one_line

#: Training-set sizes of the standard data sets (the plan needs them without loading the data).
TRAIN_SIZES = {"cifar10": 50_000, "cifar100": 50_000, "tinyimagenet": 100_000, "stl10": 5_000}


def _teacher_labels(grid: Grid) -> dict[str, str]:
    """Teacher run id → the teacher's name, marked when it is trained on a short schedule."""
    return {run.run_id: teacher_label(name, run.config) for name, run in grid.teacher_runs.items()}


def _cell(spec: RunSpec, teachers: dict[str, str]) -> dict[str, Any]:
    """A run's row; ``teachers`` from :func:`_teacher_labels` (a teacher run's row names it).
    A multi-teacher student names each role's teacher: ``natural: t-nat, robust: t-at``."""
    cfg = spec.config

    def name(ref: TeacherRef) -> str:
        return teachers.get(ref.run_id or "") or ref.name

    if spec.run_id in teachers:
        teacher = teachers[spec.run_id]
    elif [role for role, _ in cfg.teachers] == [TEACHER_ROLE]:
        teacher = name(cfg.teachers[0][1])
    else:
        teacher = ", ".join(f"{role}: {name(ref)}" for role, ref in cfg.teachers) or "—"
    return {
        "method": cfg.label,
        "student": cfg.model,
        "teacher": teacher,
        "seed": cfg.seed,
        "epochs": cfg.train.epochs,
    }


def _teacher_models(config: dict[str, Any]) -> str:
    """The teachers' models of a run's JSON config, ``+``-joined (sorted); ``—`` without one."""
    refs = [config["teacher"]] if config.get("teacher") else []
    refs += list((config.get("teachers") or {}).values())
    return "+".join(sorted(str(ref.get("model", "?")) for ref in refs)) or "—"


def _speed_key(cfg: RunConfig) -> tuple[str, str, str]:
    """What a run's training speed depends on: (method, student, teacher model(s))."""
    return (cfg.method, cfg.model, _teacher_models(cfg.to_json()))


def run_state(store: Store, run_id: str) -> str:
    """done, running (a live process holds its claim), interrupted (its process is gone),
    failed, or pending."""
    status = store.status(run_id)
    if status is None:
        return "pending"
    if status == "complete":
        store.metrics(run_id)  # a damaged metrics.json: its one-line error
        return "done"
    if status == "failed":
        return "failed"
    holder = claims.holder(store.run_dir(run_id))
    return "running" if holder is not None and holder.alive(claims.stale_after()) else "interrupted"


def status_table(grid: Grid, store_root: str | Path) -> str:
    store = Store(store_root)
    rows, counts, labels = [], {}, _teacher_labels(grid)
    for spec in grid.prerequisites() + grid.runs:
        state = run_state(store, spec.run_id)
        counts[state] = counts.get(state, 0) + 1
        error = ""
        if state == "failed":
            error = one_line((store.status_record(spec.run_id) or {}).get("error") or "")
        rows.append(
            {
                "kind": spec.kind,
                **_cell(spec, labels),
                "state": state,
                "error": error[:60],
                "run": spec.run_id,
            }
        )
    summary = ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
    return f"{tabulate(rows, headers='keys', tablefmt='github')}\n\n{grid.name}: {summary}"


def _throughput(store: Store) -> dict[tuple[str, str, str], float]:
    """Measured training images/s per (method, student, teacher model) from completed runs."""
    runs = store.frame("runs")
    out: dict[tuple[str, str, str], list[float]] = {}
    for run_id in runs.loc[runs["status"] == "complete", "run_id"]:
        cfg, metrics = store.config(run_id), store.metrics(run_id)
        ips = metrics.get("train", {}).get("images_per_s")
        if ips:
            key = (cfg["method"]["name"], cfg["model"], _teacher_models(cfg))
            out.setdefault(key, []).append(float(ips))
    return {k: sum(v) / len(v) for k, v in out.items()}


def benchmark_throughput(path: str | Path) -> tuple[dict[tuple[str, str, str], float], str]:
    """Harness images/s per (method, student, teacher model) from ``benchmarks/throughput.py``'s
    JSON, and the device it was measured on."""
    from harness.utils.errors import UserError

    try:
        report = json.loads(Path(path).read_text())
        speed = {
            (row["method"], row["student"], row["teacher"]): float(row["harness"]["images_per_s"])
            for row in report["training"]
        }
        env = report.get("environment", {})
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UserError(
            f"cannot read throughput file {path}: {type(exc).__name__}: {exc}"
        ) from None
    return speed, env.get("gpu") or env.get("device") or "unknown device"


def _train_size(spec: RunSpec) -> int | None:
    from harness.execution.inputs import load_dataset

    name = spec.config.dataset.name
    if name in TRAIN_SIZES:  # what the loader holds out: the config's val_fraction, else 10 %
        full = TRAIN_SIZES[name]
        fraction = spec.config.dataset.options.get("val_fraction", 0.1)
        return full - math.floor(fraction * full + 0.5)
    try:
        return len(load_dataset(spec.config.dataset).train)
    except Exception:
        return None


def plan_table(
    grid: Grid,
    store_root: str | Path,
    throughput: str | Path | None = None,
    selection: dict[str, Any] | None = None,
) -> str:
    """Per run: its state, projected GPU-hours and the command that makes it (with the flags of
    ``selection``, what ``bench plan`` was given, kept: :func:`run_command`). Images/s come from
    the store's completed runs of the same (method, student, teacher), else from a benchmark
    JSON; with none, the GPU-hours are "unknown", never 0."""
    from harness.execution.commands import run_command

    selection = {"grid_name": grid.name, "store": str(store_root), **(selection or {})}
    store = Store(store_root)
    measured = _throughput(store)
    benchmarked, bench_device = benchmark_throughput(throughput) if throughput else ({}, "")
    rows, total, unknown, labels = [], 0.0, 0, _teacher_labels(grid)
    for spec in grid.prerequisites() + grid.runs:
        cfg = spec.config
        key = _speed_key(cfg)
        n = _train_size(spec)
        ips, source = (measured[key], "store") if key in measured else (None, "")
        if ips is None and key in benchmarked:
            ips, source = benchmarked[key], "benchmark"
        hours = cfg.train.epochs * n / ips / 3600 if ips and n else None
        state = run_state(store, spec.run_id)
        if state != "done":
            if hours is None:
                unknown += 1
            else:
                total += hours
        command = run_command(spec, selection)
        if spec.kind != "student":
            command = "(trained by the first command of one of its students)"
        rows.append(
            {
                "kind": spec.kind,
                **_cell(spec, labels),
                "state": state,
                "gpu_h": f"{hours:.2f}" if hours is not None else "?",
                "from": source or "—",
                "command": command,
            }
        )
    note = _projection_note(rows, total, unknown)
    if benchmarked:
        note += (
            f"\n'benchmark' rows: training images/s measured by {throughput} on {bench_device} "
            "(the per-epoch selection and the final evaluation come on top)"
        )
    # gpu_h right-aligned, numbers or "?" alike (a surrogate not measured yet)
    numeric = (
        {k for k in rows[0] if all(isinstance(r[k], int | float) for r in rows)} if rows else ()
    )
    align = ["right" if k == "gpu_h" or k in numeric else "left" for k in rows[0]] if rows else None
    table = tabulate(rows, headers="keys", tablefmt="github", colalign=align)
    return f"{table}\n\n{note}"


def _projection_note(rows: list[dict[str, Any]], total: float, unknown: int) -> str:
    """The plan's projected GPU-hours: "unknown" where no throughput was measured, never 0."""
    todo = sum(1 for row in rows if row["state"] != "done")
    if unknown and unknown == todo:
        note = f"projected: unknown GPU-hours for the {todo} run(s) not done"
    elif unknown:
        note = (
            f"projected: {total:.1f} GPU-hours for the {todo - unknown} run(s) not done with a "
            f"measured throughput, unknown for the other {unknown}"
        )
    else:
        note = f"projected: {total:.1f} GPU-hours for the runs not done"
    if unknown:
        note += (
            " (no measured throughput: run one epoch of each kind, or pass --throughput from "
            "benchmarks/throughput.py)"
        )
    return note


def teachers_table(grid: Grid, store_root: str | Path) -> str:
    store = Store(store_root)
    rows = []
    tables = grid.raw.get("teacher", {})
    names = grid.raw.get("teachers", [])
    names = [names] if isinstance(names, str) else list(names)  # a grid may name just one
    roles: dict[str, list[str]] = {}  # teacher name → the roles multi-teacher runs give it
    for spec in grid.runs:
        for role, ref in spec.config.teachers:
            if role != TEACHER_ROLE and role not in roles.setdefault(ref.name, []):
                roles[ref.name].append(role)
    names += [n for n in roles if n not in names]
    for name in names:
        spec, label = tables[name], name
        if "train" in spec:
            run = grid.teacher_runs[name]
            recipe = run.config.method
            source = f"trained here: {recipe}, {run.config.train.epochs} epochs"
            if schedule_note(run.config):
                source += f" ({schedule_note(run.config)})"
            label = teacher_label(name, run.config)
            ready = run_state(store, run.run_id)
            where = str(store.run_dir(run.run_id))
        elif "checkpoint" in spec:
            path = Path(str(spec["checkpoint"]))
            source = f"checkpoint {path}"
            ready = "ready" if path.exists() else "missing"
            where = spec.get("sha256", "")
        elif "url" in spec:
            path = url_path(spec["url"], str(spec.get("sha256", "")).lower())
            source = f"URL {spec['url']}"
            ready = "ready" if path.exists() else "downloaded on first use"
            where = str(path)
        else:
            source = f"RobustBench {spec['robustbench']} ({spec.get('threat_model', 'Linf')})"
            ready = "downloaded on first use"
            where = "models/"
        if roles.get(name):
            label += f" [{', '.join(roles[name])}]"
        rows.append(
            {
                "teacher": label,
                "model": spec["model"],
                "source": source,
                "state": ready,
                "where": where,
            }
        )
    if not rows:
        return f"grid {grid.name} has no teachers"
    return tabulate(rows, headers="keys", tablefmt="github")
