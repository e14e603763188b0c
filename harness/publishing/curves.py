"""Training curves: loss and selection-split accuracy per epoch, as SVG (written here, no
plotting library) or PNG (matplotlib, an optional extra).

``bench show RUN --plot curves.svg|curves.png`` draws one run; the HTML leaderboard draws each
row's runs (one line per seed) with :func:`curves_svg`. The records are the trainer's
(``metrics.json``'s ``train.history``): ``train_loss``, ``<split>_clean``, ``<split>_pgd<k>``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from markupsafe import escape

from harness.utils.errors import UserError

Series = Mapping[str, Sequence[Mapping[str, Any]]]  # label (a run or seed) -> epoch records
INSTALL_HINT = "pip install 'adv-distill-bench[plot]'"
COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]
_PGD = re.compile(r"^(val|test)_pgd\d+$")


def accuracy_keys(history: Sequence[Mapping[str, Any]]) -> list[str]:
    """The selection split's accuracy keys of ``history``: clean first, then PGD."""
    keys = sorted({k for r in history for k in r if re.fullmatch(r"(val|test)_clean", k)})
    return keys + sorted({k for r in history for k in r if _PGD.match(k)})


def _points(history: Sequence[Mapping[str, Any]], key: str, scale: float) -> list[tuple]:
    out = []
    for record in history:
        value = record.get(key)
        if isinstance(value, int | float) and math.isfinite(value):
            out.append((int(record["epoch"]) + 1, scale * float(value)))
    return out


def _panel(
    series: Series, keys: list[str], scale: float, title: str, x0: float, width: float, h: float
) -> list[str]:
    """One plot: every (series, key) as a polyline; solid for the first key, dashed after."""
    lines = {
        (label, key): _points(hist, key, scale) for label, hist in series.items() for key in keys
    }
    values = [p for pts in lines.values() for p in pts]
    parts = [f'<text x="{x0 + width / 2:.1f}" y="14" text-anchor="middle">{escape(title)}</text>']
    if not values:
        parts.append(f'<text x="{x0 + width / 2:.1f}" y="{h / 2:.1f}" text-anchor="middle">'
                     "no epochs recorded</text>")  # fmt: skip
        return parts
    e_max = max(max(e for e, _ in values), 2)
    lo, hi = min(v for _, v in values), max(v for _, v in values)
    if hi - lo < 1e-9:
        lo, hi = lo - 1, hi + 1
    left, right, top, bottom = x0 + 44, x0 + width - 8, 24, h - 24

    def sx(e: float) -> float:
        return left + (e - 1) / (e_max - 1) * (right - left)

    def sy(v: float) -> float:
        return bottom - (v - lo) / (hi - lo) * (bottom - top)

    parts.append(
        f'<rect x="{left:.1f}" y="{top}" width="{right - left:.1f}" height="{bottom - top}" '
        'fill="none" stroke="#999"/>'
    )
    for v in (lo, (lo + hi) / 2, hi):
        parts.append(
            f'<text x="{left - 4:.1f}" y="{sy(v) + 4:.1f}" text-anchor="end">{v:.3g}</text>'
        )
    for e in sorted({1, e_max}):
        parts.append(f'<text x="{sx(e):.1f}" y="{bottom + 14}" text-anchor="middle">{e}</text>')
    parts.append(
        f'<text x="{(left + right) / 2:.1f}" y="{h - 2}" text-anchor="middle">epoch</text>'
    )
    for i, label in enumerate(series):
        colour = COLOURS[i % len(COLOURS)]
        for j, key in enumerate(keys):
            pts = lines[(label, key)]
            if not pts:
                continue
            dash = ' stroke-dasharray="4 3"' if j else ""
            coords = " ".join(f"{sx(e):.1f},{sy(v):.1f}" for e, v in pts)
            name = escape(f"{label}: {key}")
            parts.append(
                f'<polyline fill="none" stroke="{colour}" stroke-width="1.5"{dash} '
                f'points="{coords}"><title>{name}</title></polyline>'
            )
    return parts


def curves_svg(series: Series, *, width: int = 640, height: int = 190) -> str:
    """Two plots side by side: the training loss, and the selection split's clean (dashed) and
    PGD (solid) accuracy in %, per epoch; one colour per series."""
    histories = list(series.values())
    acc = accuracy_keys([r for h in histories for r in h])
    pgd_first = [k for k in acc if _PGD.match(k)] + [k for k in acc if not _PGD.match(k)]
    half = width / 2
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11" role="img">',
        "<title>training curves</title>",
        *_panel(series, ["train_loss"], 1.0, "training loss", 0, half, height),
        *_panel(series, pgd_first, 100.0, "selection accuracy % (PGD solid, clean dashed)",
                half, half, height),
    ]  # fmt: skip
    if len(series) > 1:
        for i, label in enumerate(series):
            parts.append(
                f'<text x="{width - 6}" y="{42 + 12 * i}" text-anchor="end" '
                f'fill="{COLOURS[i % len(COLOURS)]}">{escape(str(label))}</text>'
            )
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def write_plot(series: Series, path: Path) -> Path:
    """``curves_svg`` to ``path`` (``.svg``), or the same plots through matplotlib (``.png``)."""
    from harness.utils.atomic import write_text_atomic

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".svg":
        write_text_atomic(curves_svg(series), path)
        return path
    if suffix != ".png":
        raise UserError(f"--plot writes .svg or .png, not {path.name!r}")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise UserError(f"a .png plot needs matplotlib: {INSTALL_HINT} (or write .svg)") from None
    from harness.utils.atomic import atomic_path

    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(10, 3.2))
    for i, (label, history) in enumerate(series.items()):
        colour = COLOURS[i % len(COLOURS)]
        loss_ax.plot(*zip(*_points(history, "train_loss", 1.0), strict=True), color=colour,
                     label=str(label))  # fmt: skip
        for key in accuracy_keys(history):
            pts = _points(history, key, 100.0)
            style = "-" if _PGD.match(key) else "--"
            acc_ax.plot(*zip(*pts, strict=True), style, color=colour, label=f"{label}: {key}")
    loss_ax.set(title="training loss", xlabel="epoch")
    acc_ax.set(title="selection accuracy (%)", xlabel="epoch")
    acc_ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
    return path
