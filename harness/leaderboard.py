"""Leaderboards from the store's SQLite index (read through pandas).

One table per (data set, teacher, student): methods as rows; Clean / FGSM / PGD / CW2 / AA (and
the transfer and worst-case columns that were run) as columns, in %; mean ± std where several
seeds exist; sorted by AutoAttack; the best value per column marked; each row's reliability
flags, schedule and provenance. Teacher-free methods (PGD-AT, TRADES, MART) appear in every
teacher's table of their student, as the paper prints them.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
from tabulate import tabulate

from harness import suites
from harness.store import Store

MAIN = {"clean": "Clean", "fgsm": "FGSM", "pgd10": "PGD", "cw2": "CW2", "autoattack": "AA"}
RANK_BY = ("autoattack", "worst_case", "pgd10", "clean")


def column_label(attack: str) -> str:
    """``transfer/resnet34/fgsm`` → ``resnet34 FGSM``; presets by their paper name."""
    if attack in MAIN:
        return MAIN[attack]
    if attack.startswith("transfer/"):
        _, surrogate, name = attack.split("/", 2)
        return f"{surrogate} {MAIN.get(name, name.upper())}"
    return {"worst_case": "Worst"}.get(attack, attack)


def rank_column(columns: list[str]) -> str | None:
    """The column a table is sorted by: the first of ``RANK_BY`` present, else the last column
    an attack fills (never a JSMA towards the true class, ``suites.ranks``)."""
    rankable = [c for c in columns if suites.ranks(c)]
    return next((c for c in RANK_BY if c in columns), rankable[-1] if rankable else None)


@dataclass
class Row:
    method: str
    runs: list[str]
    mean: dict[str, float]
    std: dict[str, float]
    flags: list[str]
    schedule: str
    provenance: dict[str, Any]
    best: set[str] = field(default_factory=set)

    @property
    def seeds(self) -> int:
        return len(self.runs)


@dataclass
class Table:
    dataset: str
    teacher: str
    student: str
    columns: list[str]
    rows: list[Row]

    @property
    def title(self) -> str:
        return f"{self.dataset}: {self.teacher} → {self.student}"


def _row(method: str, runs: pd.DataFrame, results: pd.DataFrame) -> Row:
    acc = results[results["run_id"].isin(runs["run_id"])].pivot_table(
        index="run_id", columns="attack", values="accuracy", aggfunc="first"
    )
    mean = (acc.mean() * 100).to_dict()
    std = (acc.std(ddof=1) * 100).to_dict() if len(acc) > 1 else {}
    flags = sorted({k for f in runs["flags"] for k, ok in json.loads(f or "{}").items() if not ok})
    schedules = sorted(set(runs["schedule"].dropna()))
    provs = [json.loads(p or "{}") for p in runs["provenance"]]
    wall = float(runs["wall_time_s"].fillna(0).sum())
    on_gpu = any("gpu" in p for p in provs)
    provenance = {
        "config": sorted(runs["config_hash"]),
        "code": sorted({str(p.get("code") or p.get("harness")) for p in provs}),
        "torch": sorted({str(p.get("packages", {}).get("torch", p.get("torch"))) for p in provs}),
        "device": sorted({p.get("gpu") or p.get("device", "?") for p in provs}),
        "train_images": sorted({str(p.get("train_images", "?")) for p in provs}),
        "wall_h": wall / 3600,
        "gpu_h": wall / 3600 if on_gpu else 0.0,
    }
    return Row(method, sorted(runs["run_id"]), mean, std, flags, "/".join(schedules), provenance)


def leaderboard_tables(store: Store, grid: str) -> list[Table]:
    runs = store.frame("runs", grid)
    results = store.frame("results", grid)
    runs = runs[(runs["kind"] == "student") & (runs["status"] == "complete")]
    if runs.empty:
        return []
    runs = runs.assign(teacher=runs["teacher"].fillna("—"))
    tables = []
    for (dataset, student), group in runs.groupby(["dataset", "student"], sort=True):
        teachers = sorted(t for t in group["teacher"].unique() if t != "—") or ["—"]
        free = group[group["teacher"] == "—"]
        for teacher in teachers:
            cell = pd.concat([group[group["teacher"] == teacher], free]).drop_duplicates("run_id")
            rows = [_row(m, r, results) for m, r in cell.groupby("method", sort=True)]
            attacks = set().union(*(r.mean for r in rows))
            columns = [c for c in MAIN if c in attacks]
            columns += sorted(c for c in attacks if c.startswith("transfer/"))
            columns += sorted(c for c in attacks if c not in columns and c != "worst_case")
            columns += ["worst_case"] if "worst_case" in attacks else []
            key = rank_column(columns)
            if key is not None:
                rows.sort(key=lambda r: -r.mean.get(key, -math.inf))
            for c in columns:
                best = max((r.mean.get(c, -math.inf) for r in rows), default=-math.inf)
                for r in rows:
                    if r.mean.get(c, -math.inf) == best > -math.inf:
                        r.best.add(c)
            tables.append(Table(dataset, teacher, student, columns, rows))
    return tables


def cell_text(row: Row, column: str, bold: tuple[str, str] = ("**", "**")) -> str:
    if column not in row.mean or math.isnan(row.mean[column]):
        return "—"
    text = f"{row.mean[column]:.2f}"
    if column in row.std and not math.isnan(row.std[column]):
        text += f" ± {row.std[column]:.2f}"
    return f"{bold[0]}{text}{bold[1]}" if column in row.best else text


def _records(table: Table, bold: tuple[str, str]) -> list[dict[str, str]]:
    out = []
    for row in table.rows:
        record = {"method": row.method}
        record |= {column_label(c): cell_text(row, c, bold) for c in table.columns}
        record |= {
            "seeds": str(row.seeds),
            "schedule": row.schedule,
            "checks": ", ".join(row.flags) or "ok",
        }
        out.append(record)
    return out


def _provenance_records(table: Table) -> list[dict[str, str]]:
    return [
        {
            "method": r.method,
            "config": ", ".join(r.provenance["config"]),
            "code": ", ".join(r.provenance["code"]),
            "torch": ", ".join(r.provenance["torch"]),
            "device": ", ".join(r.provenance["device"]),
            "train images": ", ".join(r.provenance.get("train_images", [])),
            "wall h": f"{r.provenance['wall_h']:.2f}",
            "GPU-h": f"{r.provenance['gpu_h']:.2f}",
        }
        for r in table.rows
    ]


def to_markdown(tables: list[Table], grid: str) -> str:
    if not tables:
        return f"# Leaderboard: {grid}\n\nNo completed runs yet.\n"
    parts = [
        f"# Leaderboard: {grid}\n",
        "Accuracy (%) on the test set; mean ± std over seeds; best per column in bold; "
        "sorted by AutoAttack (else the strongest attack run). `checks` lists failed "
        "reliability checks; `short` marks runs on a shorter schedule than the grid's.\n",
    ]
    for table in tables:
        parts.append(f"## {table.title}\n")
        parts.append(
            tabulate(
                _records(table, ("**", "**")),
                headers="keys",
                tablefmt="github",
                disable_numparse=True,
            )
            + "\n"
        )
        parts.append("<details><summary>provenance</summary>\n")
        parts.append(
            tabulate(
                _provenance_records(table), headers="keys", tablefmt="github", disable_numparse=True
            )
            + "\n\n</details>\n"
        )
    return "\n".join(parts)


def to_csv(tables: list[Table]) -> str:
    """Long format: one line per (table, method, attack), with mean, std and seeds."""
    rows = [
        {
            "dataset": t.dataset,
            "teacher": t.teacher,
            "student": t.student,
            "method": r.method,
            "attack": c,
            "mean": r.mean.get(c),
            "std": r.std.get(c),
            "seeds": r.seeds,
            "schedule": r.schedule,
            "checks": ";".join(r.flags) or "ok",
            "runs": ";".join(r.runs),
        }
        for t in tables
        for r in t.rows
        for c in t.columns
    ]
    return pd.DataFrame(rows).to_csv(index=False, float_format="%.4f")


def to_latex(tables: list[Table]) -> str:
    parts = []
    for table in tables:
        body = tabulate(
            _records(table, (r"\textbf{", "}")),
            headers="keys",
            tablefmt="latex_booktabs",
            disable_numparse=True,
        )
        body = body.replace(r"\textbackslash{}textbf\{", r"\textbf{").replace(r"\}", "}")
        body = body.replace("±", r"$\pm$").replace("→", r"$\to$").replace("—", "--")
        caption = table.title.replace("→", r"$\to$").replace("_", r"\_")
        parts.append(
            f"% {table.title}\n\\begin{{table}}\n\\centering\n\\caption{{{caption}}}\n"
            f"{body}\n\\end{{table}}\n"
        )
    return "\n".join(parts)


def leaderboard_markdown(store: Store, grid: str) -> str:
    return to_markdown(leaderboard_tables(store, grid), grid)
