"""The leaderboard as one self-contained HTML page.

``render_html(tables, grid)`` turns :func:`harness.leaderboard.leaderboard_tables` into a static
page that needs no network to view: inline CSS and JavaScript, and an accuracy-vs-robustness
scatter plot per table drawn here as inline SVG. A Content-Security-Policy forbids every fetch
and allows only the page's own scripts (by hash), so nothing the page is given can load or run
anything. Method names, grid names and every other string from plugins, grid files and run
configs are escaped (Jinja's autoescape, ``markupsafe.escape`` in the SVG).

``self_test=True`` adds a script that, once the page has loaded, sorts every table by clicking
its headers, checks the order and the plot, and writes ``ok`` (or what went wrong, including
any uncaught error) into ``<body data-selftest>``: the tests read it from a headless browser.
"""

from __future__ import annotations

import base64
import hashlib
import math
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from markupsafe import Markup, escape

import harness
from harness.leaderboard import RANK_BY, Row, Table, cell_text, column_label, rank_column

TEMPLATES = Path(harness.__file__).resolve().parent.parent / "leaderboards" / "templates"
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
    "worst_case": "samples that survive every attack run",
}


# -- numbers --------------------------------------------------------------------------------------
def _finite(value: Any) -> float | None:
    if value is None:
        return None
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _rank_key(table: Table) -> str | None:
    """The column the leaderboard sorted by (as in ``leaderboard_tables``)."""
    return rank_column(table.columns)


def plot_axes(table: Table) -> tuple[str, str] | None:
    """(x, y) columns of the scatter plot: Clean against AutoAttack, else the strongest attack.

    "Strongest" follows the leaderboard's ranking order (``RANK_BY``); with none of those, the
    attack with the lowest mean accuracy. ``None`` when there is no clean column or no attack.
    """
    if "clean" not in table.columns:
        return None
    for key in RANK_BY:
        if key != "clean" and key in table.columns:
            return "clean", key
    others = [c for c in table.columns if c != "clean"]
    if not others:
        return None

    def mean_acc(column: str) -> float:
        vals = [v for r in table.rows if (v := _finite(r.mean.get(column))) is not None]
        return sum(vals) / len(vals) if vals else math.inf

    return "clean", min(others, key=mean_acc)


def _axis_label(column: str) -> str:
    return {"worst_case": "Worst-case"}.get(column, column_label(column))


def _ticks(lo: float, hi: float, count: int = 6) -> tuple[list[float], int]:
    """Round tick values covering [lo, hi] and the decimals their labels need."""
    raw = (hi - lo) / max(count - 1, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw * (1 - 1e-9))
    start = math.floor(lo / step + 1e-9) * step
    end = math.ceil(hi / step - 1e-9) * step
    ticks = [start + i * step for i in range(int(round((end - start) / step)) + 1)]
    decimals = next((d for d in range(4) if abs(step * 10**d - round(step * 10**d)) < 1e-6), 3)
    return ticks, decimals


def _domain(values: list[tuple[float, float]]) -> tuple[list[float], int]:
    lo = min(v - e for v, e in values)
    hi = max(v + e for v, e in values)
    pad = max((hi - lo) * 0.1, 0.5)
    lo, hi = lo - pad, hi + pad
    if lo < 0 <= min(v for v, _ in values):
        lo = 0.0
    if hi > 100 >= max(v for v, _ in values):
        hi = 100.0
    return _ticks(lo, hi)


# -- the scatter plot -----------------------------------------------------------------------------
@dataclass
class _Point:
    row: Row
    colour: int
    x: float
    y: float
    sx: float | None
    sy: float | None
    px: float = 0.0
    py: float = 0.0


W, H = 640, 430
LEFT, RIGHT, TOP, BOTTOM = 62, 24, 18, 56
RADIUS = 5.5
CHAR_W, LINE_H = 6.6, 13.0  # label box estimate for the 12 px label font


def _n(value: float) -> str:
    return f"{value:.1f}".rstrip("0").rstrip(".")


def _place_labels(points: list[_Point]) -> list[tuple[float, float, str]]:
    """A position per label (x, y, text-anchor) that overlaps no other label or point if it can."""
    placed: list[tuple[float, float, float, float]] = []
    dots = [(p.px - RADIUS, p.py - RADIUS, p.px + RADIUS, p.py + RADIUS) for p in points]
    out = []

    def overlaps(a: tuple[float, float, float, float], b: tuple[float, float, float, float]):
        return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]

    for i, p in enumerate(points):
        w = CHAR_W * len(p.row.method) + 2
        candidates = []
        for dy in (0.0, -12.0, 12.0, -24.0, 24.0):
            candidates.append((p.px + 9, p.py + 4 + dy, "start", (p.px + 8, p.px + 8 + w)))
            candidates.append((p.px - 9, p.py + 4 + dy, "end", (p.px - 8 - w, p.px - 8)))
        candidates.insert(2, (p.px, p.py - 10, "middle", (p.px - w / 2, p.px + w / 2)))
        candidates.insert(3, (p.px, p.py + 18, "middle", (p.px - w / 2, p.px + w / 2)))
        fallback = None
        for x, y, anchor, (x0, x1) in candidates:
            box = (x0, y - LINE_H + 3, x1, y + 3)
            inside = box[0] >= 2 and box[2] <= W - 2 and box[1] >= 0 and box[3] <= H - BOTTOM + 4
            if not inside:
                continue
            fallback = fallback or (x, y, anchor, box)
            others = [d for j, d in enumerate(dots) if j != i]
            if not any(overlaps(box, b) for b in placed + others):
                break
        else:
            if fallback is None:  # too long for either side: keep it inside the picture
                x, y, anchor = min(max(p.px, w / 2 + 2), W - w / 2 - 2), p.py - 10, "middle"
                box = (x - w / 2, y - LINE_H + 3, x + w / 2, y + 3)
            else:
                x, y, anchor, box = fallback
        placed.append(box)
        out.append((x, y, anchor))
    return out


def scatter_svg(table: Table, colours: dict[str, int], ident: str) -> Markup | None:
    """Clean accuracy against robust accuracy, one labelled point per method, as inline SVG.

    Error bars are one standard deviation over seeds where a method has several. ``None`` when
    the table has no (clean, attack) pair to plot or no method has both numbers.
    """
    axes = plot_axes(table)
    if axes is None:
        return None
    xkey, ykey = axes
    points = []
    for row in table.rows:
        x, y = _finite(row.mean.get(xkey)), _finite(row.mean.get(ykey))
        if x is None or y is None:
            continue
        sx, sy = _finite(row.std.get(xkey)), _finite(row.std.get(ykey))
        points.append(_Point(row, colours.get(row.method, 0), x, y, sx, sy))
    if not points:
        return None

    xticks, xdec = _domain([(p.x, p.sx or 0.0) for p in points])
    yticks, ydec = _domain([(p.y, p.sy or 0.0) for p in points])
    x0, x1, y0, y1 = xticks[0], xticks[-1], yticks[0], yticks[-1]
    pw, ph = W - LEFT - RIGHT, H - TOP - BOTTOM

    def sx_(v: float) -> float:
        return LEFT + (v - x0) / (x1 - x0) * pw

    def sy_(v: float) -> float:
        return TOP + ph - (v - y0) / (y1 - y0) * ph

    for p in points:
        p.px, p.py = sx_(p.x), sy_(p.y)

    xname, yname = _axis_label(xkey), _axis_label(ykey)
    parts = [
        f'<svg class="scatter" viewBox="0 0 {W} {H}" role="img" '
        f'aria-labelledby="{ident}-title {ident}-desc" data-points="{len(points)}" '
        f'data-x="{escape(xkey)}" data-y="{escape(ykey)}">',
        f'<title id="{ident}-title">{escape(xname)} vs {escape(yname)} accuracy: '
        f"{escape(table.title)}</title>",
        f'<desc id="{ident}-desc">One point per method; error bars are one standard deviation '
        "over seeds; up and to the right is better.</desc>",
        f'<rect class="frame" x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}"/>',
    ]
    for t in xticks:
        x = _n(sx_(t))
        parts.append(f'<line class="grid" x1="{x}" y1="{TOP}" x2="{x}" y2="{TOP + ph}"/>')
        parts.append(f'<line class="tick" x1="{x}" y1="{TOP + ph}" x2="{x}" y2="{TOP + ph + 5}"/>')
        parts.append(f'<text class="tick-label" x="{x}" y="{TOP + ph + 19}">{t:.{xdec}f}</text>')
    for t in yticks:
        y = _n(sy_(t))
        parts.append(f'<line class="grid" x1="{LEFT}" y1="{y}" x2="{LEFT + pw}" y2="{y}"/>')
        parts.append(f'<line class="tick" x1="{LEFT - 5}" y1="{y}" x2="{LEFT}" y2="{y}"/>')
        parts.append(
            f'<text class="tick-label y" x="{LEFT - 8}" y="{_n(sy_(t) + 4)}">{t:.{ydec}f}</text>'
        )
    parts.append(
        f'<text class="axis-label" x="{_n(LEFT + pw / 2)}" y="{H - 12}">'
        f"{escape(xname)} accuracy (%)</text>"
    )
    parts.append(
        f'<text class="axis-label" transform="translate(16 {_n(TOP + ph / 2)}) rotate(-90)">'
        f"{escape(yname)} accuracy (%)</text>"
    )
    for p in points:  # error bars under the points
        cls = f"err c{p.colour}"
        if p.sx:
            a, b, y = _n(sx_(p.x - p.sx)), _n(sx_(p.x + p.sx)), _n(p.py)
            parts.append(f'<line class="{cls}" x1="{a}" y1="{y}" x2="{b}" y2="{y}"/>')
            for e in (a, b):
                parts.append(
                    f'<line class="{cls}" x1="{e}" y1="{_n(p.py - 4)}" x2="{e}" '
                    f'y2="{_n(p.py + 4)}"/>'
                )
        if p.sy:
            a, b, x = _n(sy_(p.y - p.sy)), _n(sy_(p.y + p.sy)), _n(p.px)
            parts.append(f'<line class="{cls}" x1="{x}" y1="{a}" x2="{x}" y2="{b}"/>')
            for e in (a, b):
                parts.append(
                    f'<line class="{cls}" x1="{_n(p.px - 4)}" y1="{e}" x2="{_n(p.px + 4)}" '
                    f'y2="{e}"/>'
                )
    for p, (lx, ly, anchor) in zip(points, _place_labels(points)):
        xs = f" ± {p.sx:.2f}" if p.sx else ""
        ys = f" ± {p.sy:.2f}" if p.sy else ""
        seeds = f", {p.row.seeds} seeds" if p.row.seeds > 1 else ""
        tip = f"{p.row.method}: {xname} {p.x:.2f}{xs}, {yname} {p.y:.2f}{ys}{seeds}"
        parts.append(
            f'<g class="pt"><circle class="point c{p.colour}" cx="{_n(p.px)}" cy="{_n(p.py)}" '
            f'r="{RADIUS}" data-method="{escape(p.row.method)}"><title>{escape(tip)}</title>'
            f'</circle><text class="label" x="{_n(lx)}" y="{_n(ly)}" text-anchor="{anchor}">'
            f"{escape(p.row.method)}</text></g>"
        )
    parts.append("</svg>")
    return Markup("\n".join(parts))


# -- the page -------------------------------------------------------------------------------------
def _cell(row: Row, column: str) -> dict[str, Any]:
    mean = _finite(row.mean.get(column))
    std = _finite(row.std.get(column))
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


def _facts(table: Table, rank_key: str | None) -> list[dict[str, str]]:
    """A few sentences under each table: who leads, what failed, what is short."""
    facts = []
    if rank_key and table.rows and _finite(table.rows[0].mean.get(rank_key)) is not None:
        top = table.rows[0]
        label = "Best clean" if rank_key == "clean" else "Most robust"
        facts.append({"label": label, "text": f"{top.method} ({_value_text(top, rank_key)})"})
    if "clean" in table.columns and rank_key != "clean":
        best = [r for r in table.rows if "clean" in r.best]
        if best:
            names = ", ".join(r.method for r in best)
            facts.append(
                {"label": "Best clean", "text": f"{names} ({_value_text(best[0], 'clean')})"}
            )
    failed = [f"{r.method}: {', '.join(r.flags)}" for r in table.rows if r.flags]
    facts.append({"label": "Failed checks", "text": "; ".join(failed) or "none"})
    short = [r.method for r in table.rows if "short" in r.schedule.split("/")]
    facts.append({"label": "Short schedule", "text": ", ".join(short) or "none"})
    facts.append({"label": "Methods", "text": str(len(table.rows))})
    return facts


def _table_view(index: int, table: Table, colours: dict[str, int]) -> dict[str, Any]:
    ident = f"t{index}"
    rank_key = _rank_key(table)
    rows = []
    for rank, row in enumerate(table.rows, 1):
        schedules = [s for s in row.schedule.split("/") if s] if row.schedule else []
        prov = row.provenance
        rows.append(
            {
                "rank": rank,
                "method": row.method,
                "colour": colours.get(row.method, 0),
                "cells": [_cell(row, c) for c in table.columns],
                "seeds": row.seeds,
                "schedules": schedules,
                "short": "short" in schedules,
                "flags": list(row.flags),
                "runs": list(row.runs),
                "provenance": {
                    "config": [str(v) for v in prov.get("config", [])],
                    "code": [str(v) for v in prov.get("code", [])],
                    "torch": [str(v) for v in prov.get("torch", [])],
                    "device": [str(v) for v in prov.get("device", [])],
                    "wall_h": _finite(prov.get("wall_h")) or 0.0,
                    "gpu_h": _finite(prov.get("gpu_h")) or 0.0,
                },
            }
        )
    axes = plot_axes(table)
    return {
        "facts": _facts(table, rank_key),
        "plot_std": bool(axes) and any(k in r.std for r in table.rows for k in axes),
        "id": ident,
        "title": table.title,
        "dataset": table.dataset,
        "teacher": table.teacher,
        "student": table.student,
        "columns": [
            {
                "key": c,
                "label": column_label(c),
                "description": DESCRIPTIONS.get(c, c),
                "rank_key": c == rank_key,
            }
            for c in table.columns
        ],
        "rank_label": column_label(rank_key) if rank_key else None,
        "rows": rows,
        "plot": scatter_svg(table, colours, f"{ident}-plot"),
        "plot_axes": [_axis_label(a) for a in axes] if axes else None,
        "runs": sum(r["seeds"] for r in rows),
        "wall_h": sum(r["provenance"]["wall_h"] for r in rows),
        "gpu_h": sum(r["provenance"]["gpu_h"] for r in rows),
        "failed": sum(1 for r in rows if r["flags"]),
        "short": sum(1 for r in rows if r["short"]),
    }


def _legend(tables: list[Table]) -> list[dict[str, str]]:
    seen: list[str] = []
    for t in tables:
        seen += [c for c in t.columns if c not in seen]
    out = []
    for c in seen:
        if c.startswith("transfer/"):
            _, surrogate, name = c.split("/", 2)
            text = f"transfer: {DESCRIPTIONS.get(name, name)} crafted on a {surrogate} surrogate"
        else:
            text = DESCRIPTIONS.get(c, c)
        out.append({"label": column_label(c), "text": text})
    return out


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
) -> str:
    """The leaderboard page for ``tables`` (``leaderboard_tables``) of grid ``grid``."""
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
            tables=[_table_view(i, t, colours) for i, t in enumerate(tables, 1)],
            legend=_legend(tables),
            rank_by=[column_label(c) for c in RANK_BY],
            self_test=self_test,
        )
    )
