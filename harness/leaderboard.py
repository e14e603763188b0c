"""A plain Markdown leaderboard from the store's index (the full renderer is a later layer)."""

from __future__ import annotations

import json

import pandas as pd
from tabulate import tabulate

from harness.store import Store


def leaderboard_frame(store: Store, grid: str) -> pd.DataFrame:
    """One row per completed student run, one column per attack (accuracy in %)."""
    runs = store.frame("runs", grid)
    results = store.frame("results", grid)
    runs = runs[(runs["kind"] == "student") & (runs["status"] == "complete")]
    if runs.empty or results.empty:
        return pd.DataFrame()
    wide = results.pivot_table(index="run_id", columns="attack", values="accuracy", aggfunc="first")
    wide = wide * 100.0
    runs = runs.assign(checks=runs["flags"].map(_flags_text))
    table = runs.set_index("run_id")[
        ["dataset", "teacher", "student", "method", "seed", "epochs", "schedule", "checks"]
    ].join(wide, how="inner")
    table["teacher"] = table["teacher"].fillna("—")
    first = ("clean", "fgsm", "pgd10", "pgd20", "cw_inf", "cw2", "autoattack")
    order = [c for c in first if c in wide.columns]
    order += sorted(c for c in wide.columns if c not in order)
    ranked = [c for c in ("autoattack", "worst_case", "pgd10") if c in wide.columns]
    sort_key = ranked[0] if ranked else order[-1]
    table = table.sort_values(["dataset", "student", sort_key], ascending=[True, True, False])
    return table.reset_index()[
        ["dataset", "teacher", "student", "method", "seed", "epochs", "schedule", *order, "checks"]
    ]


def _flags_text(flags: str | None) -> str:
    """``ok``, or the names of the reliability checks the run failed."""
    failed = [name for name, ok in json.loads(flags or "{}").items() if not ok]
    return ", ".join(failed) if failed else "ok"


def leaderboard_markdown(store: Store, grid: str) -> str:
    table = leaderboard_frame(store, grid)
    if table.empty:
        return f"# Leaderboard: {grid}\n\nNo completed runs yet.\n"
    body = tabulate(table, headers="keys", tablefmt="github", showindex=False, floatfmt=".2f")
    return f"# Leaderboard: {grid}\n\nAccuracy (%) on the test set.\n\n{body}\n"
