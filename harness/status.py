"""``bench status``, ``bench plan`` and ``bench teachers``: tables about a grid and its store."""

from __future__ import annotations

import json
import math
import os
import socket
from pathlib import Path
from typing import Any

from tabulate import tabulate

from harness.downloads import url_path
from harness.grid import Grid, RunSpec
from harness.store import Store

#: Training-set sizes of the standard data sets (the plan needs them without loading the data).
TRAIN_SIZES = {"cifar10": 50_000, "cifar100": 50_000, "tinyimagenet": 100_000, "stl10": 5_000}


def _cell(spec: RunSpec) -> dict[str, Any]:
    cfg = spec.config
    return {
        "method": cfg["method"].get("variant") or cfg["method"]["name"],
        "student": cfg["model"],
        "teacher": (cfg["teacher"] or {}).get("name", "—"),
        "seed": cfg["seed"],
        "epochs": cfg["train"]["epochs"],
    }


def run_state(store: Store, run_id: str) -> str:
    """done, running, interrupted (its process is gone), failed, or pending."""
    path = store.run_dir(run_id) / "status.json"
    if not path.exists():
        return "pending"
    status = json.loads(path.read_text())
    if status["status"] == "complete":
        return "done"
    if status["status"] == "failed":
        return "failed"
    if status.get("host") == socket.gethostname():
        try:
            os.kill(int(status.get("pid", -1)), 0)
        except (OSError, ValueError):
            return "interrupted"
    return "running"


def status_table(grid: Grid, store_root: str | Path) -> str:
    store = Store(store_root)
    teachers = [r for r in grid.teacher_runs.values() if r.run_id in {s.needs for s in grid.runs}]
    rows, counts = [], {}
    for spec in teachers + grid.runs:
        state = run_state(store, spec.run_id)
        counts[state] = counts.get(state, 0) + 1
        error = ""
        if state == "failed":
            error = json.loads((store.run_dir(spec.run_id) / "status.json").read_text())["error"]
        rows.append(
            {
                "kind": spec.kind,
                **_cell(spec),
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
            key = (cfg["method"]["name"], cfg["model"], (cfg["teacher"] or {}).get("model", "—"))
            out.setdefault(key, []).append(float(ips))
    return {k: sum(v) / len(v) for k, v in out.items()}


def benchmark_throughput(path: str | Path) -> tuple[dict[tuple[str, str, str], float], str]:
    """Harness images/s per (method, student, teacher model) from ``benchmarks/throughput.py``'s
    JSON, and the device it was measured on."""
    from harness.errors import UserError

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
    from harness.runner import load_dataset

    name = spec.config["dataset"]["name"]
    if name in TRAIN_SIZES:  # what the loader holds out: the config's val_fraction, else 10 %
        full = TRAIN_SIZES[name]
        fraction = spec.config["dataset"]["options"].get("val_fraction", 0.1)
        return full - math.floor(fraction * full + 0.5)
    try:
        return len(load_dataset(spec.config["dataset"]).train)
    except Exception:
        return None


def plan_table(grid: Grid, store_root: str | Path, throughput: str | Path | None = None) -> str:
    """Per run: its state, projected GPU-hours and command. Images/s come from the store's
    completed runs of the same (method, student, teacher), else from a benchmark JSON."""
    store = Store(store_root)
    measured = _throughput(store)
    benchmarked, bench_device = benchmark_throughput(throughput) if throughput else ({}, "")
    teachers = [r for r in grid.teacher_runs.values() if r.run_id in {s.needs for s in grid.runs}]
    rows, total, unknown = [], 0.0, 0
    for spec in teachers + grid.runs:
        cfg = spec.config
        key = (cfg["method"]["name"], cfg["model"], (cfg["teacher"] or {}).get("model", "—"))
        n = _train_size(spec)
        ips, source = (measured[key], "store") if key in measured else (None, "")
        if ips is None and key in benchmarked:
            ips, source = benchmarked[key], "benchmark"
        hours = cfg["train"]["epochs"] * n / ips / 3600 if ips and n else None
        state = run_state(store, spec.run_id)
        if state != "done":
            if hours is None:
                unknown += 1
            else:
                total += hours
        command = (
            f"bench run --grid {grid.name} --method {_cell(spec)['method']} "
            f"--student {cfg['model']} --seed {cfg['seed']}"
        )
        if cfg["teacher"]:
            command += f" --teacher {cfg['teacher']['name']}"
        if spec.kind == "teacher":
            command = "(trained by the first command of one of its students)"
        rows.append(
            {
                "kind": spec.kind,
                **_cell(spec),
                "state": state,
                "gpu_h": f"{hours:.2f}" if hours is not None else "?",
                "from": source or "—",
                "command": command,
            }
        )
    note = f"projected: {total:.1f} GPU-hours for the runs not done" + (
        f"; {unknown} run(s) without a measured throughput (run one epoch of each "
        f"kind, or pass --throughput from benchmarks/throughput.py)"
        if unknown
        else ""
    )
    if benchmarked:
        note += (
            f"\n'benchmark' rows: training images/s measured by {throughput} on {bench_device} "
            "(the per-epoch selection and the final evaluation come on top)"
        )
    return f"{tabulate(rows, headers='keys', tablefmt='github')}\n\n{note}"


def teachers_table(grid: Grid, store_root: str | Path) -> str:
    store = Store(store_root)
    rows = []
    tables = grid.raw.get("teacher", {})
    names = grid.raw.get("teachers", [])
    for name in [names] if isinstance(names, str) else names:  # a grid may name just one
        spec = tables[name]
        if "train" in spec:
            run = grid.teacher_runs[name]
            recipe = run.config["method"]["name"]
            source = f"trained here: {recipe}, {run.config['train']['epochs']} epochs"
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
        rows.append(
            {
                "teacher": name,
                "model": spec["model"],
                "source": source,
                "state": ready,
                "where": where,
            }
        )
    if not rows:
        return f"grid {grid.name} has no teachers"
    return tabulate(rows, headers="keys", tablefmt="github")
