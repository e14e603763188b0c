"""The leaderboard as one self-contained HTML page.

``render_html(tables, grid)`` turns :func:`harness.publishing.leaderboard.leaderboard_tables`
into a static page that needs no network to view: inline CSS and JavaScript, and an
accuracy-vs-robustness scatter plot per table (:mod:`harness.publishing.scatter`). A
Content-Security-Policy forbids every fetch and allows only the page's own scripts (by hash), so
nothing the page is given can load or run anything. Method names, grid names and every other
string from plugins, grid files and run configs are escaped (Jinja's autoescape,
``markupsafe.escape`` in the SVG).

Each table states its threat model and its teachers' own accuracy; its columns wrap their
headers so that the widest paper table fits a 1400 px window; the plot's labels are placed so
that none overlaps another or a point.

Each row carries its per-class accuracies (clean, PGD, AutoAttack; mean over its seeds) in a
``data-per-class`` attribute; clicking a row (or Enter on it) draws them as grouped bars, in inline
SVG, under its table, the top row's at load.

``self_test=True`` adds a script that, once the page has loaded, sorts every table by clicking
its headers, checks the order, the plot, its labels and that no table overflows, and writes
``ok`` (or what went wrong, including any uncaught error) into ``<body data-selftest>``: the
tests read it from a headless browser.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Mapping
from datetime import datetime, timezone
from functools import lru_cache
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from markupsafe import Markup

from harness.publishing.leaderboard import (
    MARK,
    RANK_ORDER,
    STALE,
    WC_PREFIX,
    WORST_CLASS,
    Row,
    Table,
    cell_text,
    column_label,
    role_header,
)
from harness.publishing.scatter import axis_label, finite, plot_axes, scatter_svg
from harness.utils.resources import GRIDS, shipped
from harness.utils.values import canonical_json

#: The page's template: ``leaderboards/templates/`` of the repository, shipped as package data.
TEMPLATES = shipped(GRIDS) / "templates"
TEMPLATE = "leaderboard.html.j2"
PALETTE_SIZE = 10  # colour classes c0..c9 in the template's stylesheet

DESCRIPTIONS = {
    "clean": "no attack",
    "fgsm": "FGSM, one step, no random start",
    "pgd10": "PGD-10 with cross-entropy, uniform random start",
    "pgd20": "PGD-20 with cross-entropy",
    "pgd50": "PGD-50 with cross-entropy",
    "cw_inf": "PGD on the Carlini–Wagner margin loss (L∞)",
    "cw2": "Carlini–Wagner L2",
    "autoattack": "AutoAttack (standard), the reference code",
    "worst_case": "samples that survive every attack of the run's grid",
}
#: Class names in label order where a data set's are well known (else the class index).
CLASS_NAMES = {
    "cifar10": ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
                "truck"),
}  # fmt: skip


def describe(column: str) -> str:
    """What a column holds, in words (the header's tooltip, the page's legend)."""
    if column.startswith(WC_PREFIX):
        attack = column[len(WC_PREFIX) :]
        under = (
            "with no attack" if attack == "clean" else f"under {DESCRIPTIONS.get(attack, attack)}"
        )
        return f"worst-class accuracy {under}: the lowest accuracy of any one class"
    if column.startswith("transfer/"):
        _, surrogate, name = column.split("/", 2)
        return f"transfer: {DESCRIPTIONS.get(name, name)} crafted on a {surrogate} surrogate"
    return DESCRIPTIONS.get(column, column)


def class_names(dataset: str, rows: list[Row]) -> list[str]:
    """The names of the classes the rows' per-class accuracies cover, in label order."""
    size = max((len(v) for r in rows for v in r.per_class.values()), default=0)
    known = CLASS_NAMES.get(dataset, ())
    return [f"{i} {known[i]}" if i < len(known) else str(i) for i in range(size)]


def per_class_data(row: Row) -> str:
    """A row's per-class accuracies (%) as the JSON its ``data-per-class`` attribute holds:
    ``{"clean": [92.0, 80.5, ...], "pgd10": [...], ...}``, ``null`` for a class without test
    images; only the attacks of ``WORST_CLASS`` the row has them for."""
    return canonical_json(
        {
            attack: [None if v is None else round(v, 2) for v in row.per_class[attack]]
            for attack in WORST_CLASS
            if attack in row.per_class
        }
    )


# -- the page -------------------------------------------------------------------------------------
def _cell(row: Row, column: str) -> dict[str, Any]:
    mean = finite(row.mean.get(column))
    std = finite(row.std.get(column))
    return {
        "value": "" if mean is None else repr(mean),
        "mean": "—" if mean is None else f"{mean:.2f}",
        "std": None if mean is None or std is None else f"{std:.2f}",
        "best": mean is not None and column in row.best,
        "column": column,
    }


def _value_text(row: Row, column: str) -> str:
    text = cell_text(row, column, ("", ""))
    return f"{column_label(column)} {text}"


def _facts(table: Table) -> list[dict[str, str]]:
    """A few sentences under each table: who leads on what, what failed, what is short."""
    facts = []
    key = table.rank_key
    top = table.rows[0] if table.rows else None
    if key and top is not None and top.has(key):
        label = "Best clean" if key == "clean" else "Most robust"
        facts.append(
            {"label": label, "text": f"{top.label or top.method} ({_value_text(top, key)})"}
        )
    if table.notes():
        facts.append({"label": "Ranking", "text": " ".join(table.notes())})
    if "clean" in table.columns and key != "clean":
        best = [r for r in table.rows if "clean" in r.best]
        if best:
            names = ", ".join(r.label or r.method for r in best)
            facts.append(
                {"label": "Best clean", "text": f"{names} ({_value_text(best[0], 'clean')})"}
            )
    failed = [f"{r.label or r.method}: {', '.join(r.flags)}" for r in table.rows if r.flags]
    facts.append({"label": "Failed checks", "text": "; ".join(failed) or "none"})
    short = [r.label or r.method for r in table.rows if "short" in r.schedule.split("/")]
    facts.append({"label": "Short schedule", "text": ", ".join(short) or "none"})
    stale = [r.label or r.method for r in table.rows if r.stale]
    if stale:
        facts.append({"label": "Stale code", "text": ", ".join(stale)})
    facts.append({"label": "Rows", "text": str(len(table.rows))})
    return facts


def _row_curves(row: Row, curves: Mapping[str, Any]) -> Markup | None:
    """The training curves of a row's runs (one line per seed), when any were recorded."""
    from harness.publishing.curves import curves_svg

    series = {}
    for run_id in row.runs:
        if curves.get(run_id):
            seed = re.search(r"-s(\d+)-[0-9a-f]+$", run_id)
            series[f"seed {seed.group(1)}" if seed else run_id] = curves[run_id]
    return Markup(curves_svg(series)) if series else None


def _row_view(
    ident: str,
    rank: int,
    row: Row,
    table: Table,
    colours: dict[str, int],
    curves: Mapping[str, Any],
) -> dict[str, Any]:
    """What the template shows of one row: cells, seeds, marks, curves, per-class accuracies
    and provenance."""
    schedules = [s for s in row.schedule.split("/") if s] if row.schedule else []
    prov = row.provenance
    return {
        "rank": rank,
        "method": row.label or row.method,
        "teachers": [row.teachers.get(role, "—") for role in table.roles],
        "missing": [column_label(c) for c in row.missing],
        "stale": row.stale,
        "colour": colours.get(row.method, 0),
        "cells": [_cell(row, c) for c in table.columns],
        "seeds": row.seeds,
        "schedules": schedules,
        "short": "short" in schedules,
        "flags": list(row.flags),
        "runs": list(row.runs),
        "curves": _row_curves(row, curves),
        "curves_id": f"{ident}-curves-{rank}",
        "per_class": per_class_data(row),
        "provenance": {
            **{k: [str(v) for v in prov.get(k, [])] for k in PROVENANCE_LISTS},
            "wall_h": finite(prov.get("wall_h")) or 0.0,
            "gpu_h": finite(prov.get("gpu_h")) or 0.0,
        },
    }


#: The provenance facts of a row the page lists as strings.
PROVENANCE_LISTS = ("settings", "config", "code", "torch", "device")


def _table_view(
    index: int, table: Table, colours: dict[str, int], curves: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    ident = f"t{index}"
    rank_key = table.rank_key
    rows = [
        _row_view(ident, rank, row, table, colours, curves or {})
        for rank, row in enumerate(table.rows, 1)
    ]
    axes = plot_axes(table)
    return {
        "facts": _facts(table),
        "threat": table.threat_text,
        "teachers": [t.summary(table.columns) for t in table.teachers],
        "plot_std": bool(axes) and any(k in r.std for r in table.rows for k in axes),
        "id": ident,
        "title": table.title,
        "dataset": table.dataset,
        "classes": canonical_json(class_names(table.dataset, table.rows)),
        "has_classes": any(r.per_class for r in table.rows),
        "class_attacks": canonical_json([[a, column_label(a)] for a in WORST_CLASS]),
        "teacher": table.teacher,
        "roles": [role_header(role) for role in table.roles],
        "student": table.student,
        "columns": [
            {
                "key": c,
                "label": column_label(c),
                "description": describe(c),
                "rank_key": c == rank_key,
            }
            for c in table.columns
        ],
        "rank_label": column_label(rank_key) if rank_key else None,
        "rows": rows,
        "plot": scatter_svg(table, colours, f"{ident}-plot"),
        "plot_axes": [axis_label(a) for a in axes] if axes else None,
        "runs": sum(r["seeds"] for r in rows),
        "wall_h": sum(r["provenance"]["wall_h"] for r in rows),
        "gpu_h": sum(r["provenance"]["gpu_h"] for r in rows),
        "failed": sum(1 for r in rows if r["flags"]),
        "short": sum(1 for r in rows if r["short"]),
        "curves": any(r["curves"] for r in rows),
    }


def _columns(table: Table, rank_key: str | None) -> list[dict[str, Any]]:
    """The attack columns of ``table``'s view, the ranking one marked."""
    return [
        {
            "key": c,
            "label": column_label(c),
            "description": DESCRIPTIONS.get(c, c),
            "rank_key": c == rank_key,
        }
        for c in table.columns
    ]


def _legend(tables: list[Table]) -> list[dict[str, str]]:
    seen: list[str] = []
    for t in tables:
        seen += [c for c in t.columns if c not in seen]
    return [{"label": column_label(c), "text": describe(c)} for c in seen]


def _csp_hash(script: str) -> str:
    digest = hashlib.sha256(str(script).encode("utf-8")).digest()
    return "'sha256-" + base64.b64encode(digest).decode("ascii") + "'"


@lru_cache(maxsize=1)
def _environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(str(TEMPLATES)),
        autoescape=select_autoescape(["html", "j2"], default_for_string=True, default=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["csp_hash"] = _csp_hash
    return env


def render_html(
    tables: list[Table],
    grid: str,
    *,
    generated: datetime | None = None,
    self_test: bool = False,
    curves: Mapping[str, Any] | None = None,
) -> str:
    """The leaderboard page for ``tables`` (``leaderboard_tables``) of grid ``grid``.

    ``curves`` maps run ids to their epochs' records (:func:`training_curves`); each row with
    any links to an inline plot of them."""
    generated = (generated or datetime.now(timezone.utc)).astimezone(timezone.utc)
    methods = sorted({r.method for t in tables for r in t.rows})
    colours = {m: i % PALETTE_SIZE for i, m in enumerate(methods)}
    return (
        _environment()
        .get_template(TEMPLATE)
        .render(
            grid=grid,
            generated=generated.strftime("%Y-%m-%d %H:%M UTC"),
            generated_iso=generated.isoformat(timespec="seconds"),
            tables=[_table_view(i, t, colours, curves) for i, t in enumerate(tables, 1)],
            legend=_legend(tables),
            rank_by=[column_label(c) for c in RANK_ORDER],
            threats=sorted({t.threat_text for t in tables if t.threat}),
            mark=MARK,
            stale_mark=STALE,
            self_test=self_test,
        )
    )


def training_curves(store: Any, tables: list[Table]) -> dict[str, Any]:
    """Each run's epoch records (``metrics.json``'s ``train.history``) of ``tables``' rows; a run
    without any (an evaluation-only one) or with a damaged metrics.json is left out."""
    from harness.utils.errors import UserError

    out = {}
    for run_id in {r for t in tables for row in t.rows for r in row.runs}:
        try:
            history = (store.metrics(run_id).get("train") or {}).get("history")
        except UserError:
            continue
        if history:
            out[run_id] = history
    return out
