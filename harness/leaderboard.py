"""A plain Markdown leaderboard from the store's index (the full renderer is a later layer)."""

from __future__ import annotations

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
    table = runs.set_index("run_id")[
        ["dataset", "teacher", "student", "method", "seed", "epochs", "schedule"]
    ].join(wide, how="inner")
    table["teacher"] = table["teacher"].fillna("—")
    order = [c for c in ("clean", "fgsm", "pgd10", "pgd20", "cw_inf") if c in wide.columns]
    order += sorted(c for c in wide.columns if c not in order)
    sort_key = order[-1] if order else "method"
    table = table.sort_values(["dataset", "student", sort_key], ascending=[True, True, False])
    return table.reset_index()[
        ["dataset", "teacher", "student", "method", "seed", "epochs", "schedule", *order]
    ]


def leaderboard_markdown(store: Store, grid: str) -> str:
    table = leaderboard_frame(store, grid)
    if table.empty:
        return f"# Leaderboard: {grid}\n\nNo completed runs yet.\n"
    body = tabulate(table, headers="keys", tablefmt="github", showindex=False, floatfmt=".2f")
    return f"# Leaderboard: {grid}\n\nAccuracy (%) on the test set.\n\n{body}\n"
