"""The leaderboard page's scatter plot, as inline SVG: clean accuracy against the accuracy the
table is ranked by, one labelled point per row, error bars over seeds, labels placed so that
none overlaps another label or a point. Strings are escaped (``markupsafe.escape``)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from markupsafe import Markup, escape

from harness.publishing.leaderboard import RANK_ORDER, Row, Table, column_label


# -- numbers --------------------------------------------------------------------------------------
def finite(value: Any) -> float | None:
    if value is None:
        return None
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def plot_axes(table: Table) -> tuple[str, str] | None:
    """(x, y) columns of the scatter plot: Clean against the column the table is ranked by.

    That is the strongest attack every row has (``Table.rank_key``), so the plot and the "Most
    robust" line agree and every row has a point. Ranked by Clean (no attack every row has), the
    strongest attack of ``RANK_ORDER`` there is, else the attack with the lowest mean accuracy.
    ``None`` when there is no clean column or no attack.
    """
    if "clean" not in table.columns:
        return None
    key = table.rank_key
    if key is not None and key != "clean":
        return "clean", key
    for key in RANK_ORDER:
        if key != "clean" and key in table.columns:
            return "clean", key
    others = [c for c in table.columns if c != "clean"]
    if not others:
        return None

    def mean_acc(column: str) -> float:
        vals = [v for r in table.rows if (v := finite(r.mean.get(column))) is not None]
        return sum(vals) / len(vals) if vals else math.inf

    return "clean", min(others, key=mean_acc)


def axis_label(column: str) -> str:
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
LINE_H = 14.0  # label box height for the 12 px label font
#: Advance widths (px) in the 12 px bold label font, on the wide side: measured for DejaVu Sans
#: Bold (the widest common sans-serif); a narrower font only leaves more room between labels.
CHAR_WIDTHS = {
    **dict.fromkeys(" 'ijl|/\\I,.J:;f-", 5.0),
    **dict.fromkeys('!()[]tr_`"*?zcs', 7.2),
    **dict.fromkeys("ABCDGHKNOQRUVX#+<=>^~&", 10.5),
    **dict.fromkeys("mwMW@%", 13.3),
}
CHAR_W = 8.9  # any other character
GAP = 2.0  # clear space kept around every label
LEADER = RADIUS + 12  # a label further than this from its point gets a line to it

Box = tuple[float, float, float, float]  # x0, y0, x1, y1


def _n(value: float) -> str:
    return f"{value:.1f}".rstrip("0").rstrip(".")


def _overlap(a: Box, b: Box) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def text_width(text: str) -> float:
    """The width (px) a label is assumed to take (see ``CHAR_WIDTHS``)."""
    return sum(CHAR_WIDTHS.get(c, CHAR_W) for c in text)


def label_box(cx: float, baseline: float, text: str) -> Box:
    """The box a label centred at ``cx`` on ``baseline`` is assumed to cover."""
    w = text_width(text)
    return (cx - w / 2, baseline - LINE_H + 4, cx + w / 2, baseline + 4)


def _ring(px: float, py: float, w: float, h: float) -> list[tuple[float, float]]:
    """Label centres around a point, nearest first: beside, above, below, then diagonals."""
    out = []
    for r in (4.0, 10.0, 20.0, 34.0, 52.0, 76.0):
        d = RADIUS + r
        for dx, dy in ((1, 0), (-1, 0), (0, -1), (0, 1), (1, -1), (-1, -1), (1, 1), (-1, 1)):
            out.append((px + dx * (d + w / 2), py + dy * (d + h / 2) if dy else py))
    return out


def _place_labels(points: list[_Point], texts: list[str]) -> list[tuple[float, float, Box | None]]:
    """Per point: its label's centre x, baseline y, and a leader line (x1, y1, x2, y2) when the
    label had to move away from it.

    Greedy, in row order (the best-ranked label gets the nearest place): the first spot of a
    ring around the point whose box stays inside the plot frame and overlaps no label placed
    before and no point; failing that, the free spot of a fine grid over the frame nearest the
    point; failing that (a frame too full), the ring spot that overlaps least.
    """
    frame = (LEFT + 2, TOP + 2, W - RIGHT - 2, H - BOTTOM - 2)
    dots = [(p.px - RADIUS, p.py - RADIUS, p.px + RADIUS, p.py + RADIUS) for p in points]
    placed: list[Box] = []
    out: list[tuple[float, float, Box | None]] = []

    def grow(b: Box) -> Box:
        return (b[0] - GAP, b[1] - GAP, b[2] + GAP, b[3] + GAP)

    def inside(b: Box) -> bool:
        return b[0] >= frame[0] and b[1] >= frame[1] and b[2] <= frame[2] and b[3] <= frame[3]

    def clashes(b: Box) -> int:
        return sum(_overlap(grow(b), o) for o in placed + dots)

    for p, text in zip(points, texts):
        w, h = text_width(text), LINE_H

        def box_at(cx: float, cy: float, text: str = text) -> Box:
            return label_box(cx, cy + LINE_H / 2 - 4, text)

        spots = [c for c in _ring(p.px, p.py, w, h) if inside(box_at(*c))]
        spot = next((c for c in spots if not clashes(box_at(*c))), None)
        if spot is None:
            grid = [
                (frame[0] + w / 2 + i * 4.0, frame[1] + h / 2 + j * 4.0)
                for i in range(int((frame[2] - frame[0] - w) // 4) + 1)
                for j in range(int((frame[3] - frame[1] - h) // 4) + 1)
            ]
            free = [c for c in grid if not clashes(box_at(*c))]
            if free:
                spot = min(free, key=lambda c: (c[0] - p.px) ** 2 + (c[1] - p.py) ** 2)
        if spot is None:  # no free place left: the least crowded one near the point
            spot = min(spots or [(p.px, p.py - RADIUS - h)], key=lambda c: clashes(box_at(*c)))
        box = box_at(*spot)
        placed.append(box)
        nx, ny = min(max(p.px, box[0]), box[2]), min(max(p.py, box[1]), box[3])
        far = math.hypot(nx - p.px, ny - p.py) > LEADER
        out.append((spot[0], spot[1] + h / 2 - 4, (p.px, p.py, nx, ny) if far else None))
    return out


@dataclass
class _Frame:
    """The plot's scales: data values to SVG coordinates, and the ticks of each axis."""

    xticks: list[float]
    xdec: int
    yticks: list[float]
    ydec: int
    pw: float = W - LEFT - RIGHT
    ph: float = H - TOP - BOTTOM

    def sx(self, v: float) -> float:
        x0, x1 = self.xticks[0], self.xticks[-1]
        return LEFT + (v - x0) / (x1 - x0) * self.pw

    def sy(self, v: float) -> float:
        y0, y1 = self.yticks[0], self.yticks[-1]
        return TOP + self.ph - (v - y0) / (y1 - y0) * self.ph


def _points(table: Table, colours: dict[str, int], xkey: str, ykey: str) -> list[_Point]:
    """One point per row that has both numbers."""
    points = []
    for row in table.rows:
        x, y = finite(row.mean.get(xkey)), finite(row.mean.get(ykey))
        if x is None or y is None:
            continue
        sx, sy = finite(row.std.get(xkey)), finite(row.std.get(ykey))
        points.append(_Point(row, colours.get(row.method, 0), x, y, sx, sy))
    return points


def _axes_svg(f: _Frame, xname: str, yname: str) -> list[str]:
    """Grid lines, ticks and their labels, and the axis titles."""
    parts = []
    pw, ph = f.pw, f.ph
    for t in f.xticks:
        x = _n(f.sx(t))
        parts.append(f'<line class="grid" x1="{x}" y1="{TOP}" x2="{x}" y2="{TOP + ph}"/>')
        parts.append(f'<line class="tick" x1="{x}" y1="{TOP + ph}" x2="{x}" y2="{TOP + ph + 5}"/>')
        parts.append(f'<text class="tick-label" x="{x}" y="{TOP + ph + 19}">{t:.{f.xdec}f}</text>')
    for t in f.yticks:
        y = _n(f.sy(t))
        parts.append(f'<line class="grid" x1="{LEFT}" y1="{y}" x2="{LEFT + pw}" y2="{y}"/>')
        parts.append(f'<line class="tick" x1="{LEFT - 5}" y1="{y}" x2="{LEFT}" y2="{y}"/>')
        parts.append(
            f'<text class="tick-label y" x="{LEFT - 8}" y="{_n(f.sy(t) + 4)}">{t:.{f.ydec}f}</text>'
        )
    parts.append(
        f'<text class="axis-label" x="{_n(LEFT + pw / 2)}" y="{H - 12}">'
        f"{escape(xname)} accuracy (%)</text>"
    )
    parts.append(
        f'<text class="axis-label" transform="translate(16 {_n(TOP + ph / 2)}) rotate(-90)">'
        f"{escape(yname)} accuracy (%)</text>"
    )
    return parts


def _error_bars_svg(f: _Frame, points: list[_Point]) -> list[str]:
    """One standard deviation each way, with end caps; drawn under the points."""
    parts = []
    for p in points:
        cls = f"err c{p.colour}"
        if p.sx:
            parts += _bar(cls, f.sx(p.x - p.sx), f.sx(p.x + p.sx), p.py, horizontal=True)
        if p.sy:
            parts += _bar(cls, f.sy(p.y - p.sy), f.sy(p.y + p.sy), p.px, horizontal=False)
    return parts


def _bar(cls: str, start: float, end: float, at: float, *, horizontal: bool) -> list[str]:
    """An error bar from ``start`` to ``end`` along one axis, at ``at`` on the other, with a
    cap 4 px each side of it at both ends."""

    def line(u1: str, v1: str, u2: str, v2: str) -> str:  # u along the bar, v across it
        x1, y1, x2, y2 = (u1, v1, u2, v2) if horizontal else (v1, u1, v2, u2)
        return f'<line class="{cls}" x1="{x1}" y1="{y1}" x2="{x2}" y2="{y2}"/>'

    a, b, c = _n(start), _n(end), _n(at)
    return [line(a, c, b, c)] + [line(e, _n(at - 4), e, _n(at + 4)) for e in (a, b)]


def _point_svg(
    p: _Point, text: str, place: tuple[float, float, Box | None], names: tuple[str, str]
) -> str:
    """A point with its tooltip, its label at ``place`` and the label's leader line, if any."""
    lx, ly, leader = place
    xname, yname = names
    xs = f" ± {p.sx:.2f}" if p.sx else ""
    ys = f" ± {p.sy:.2f}" if p.sy else ""
    seeds = f", {p.row.seeds} seeds" if p.row.seeds > 1 else ""
    tip = f"{text}: {xname} {p.x:.2f}{xs}, {yname} {p.y:.2f}{ys}{seeds}"
    line = ""
    if leader is not None:  # from the point's rim to the nearest edge of its label
        x1, y1, x2, y2 = leader
        d = math.hypot(x2 - x1, y2 - y1)
        x1, y1 = x1 + (x2 - x1) * RADIUS / d, y1 + (y2 - y1) * RADIUS / d
        line = f'<line class="leader" x1="{_n(x1)}" y1="{_n(y1)}" x2="{_n(x2)}" y2="{_n(y2)}"/>'
    return (
        f'<g class="pt">{line}<circle class="point c{p.colour}" cx="{_n(p.px)}" '
        f'cy="{_n(p.py)}" r="{RADIUS}" data-method="{escape(p.row.method)}">'
        f'<title>{escape(tip)}</title></circle><text class="label" x="{_n(lx)}" '
        f'y="{_n(ly)}" text-anchor="middle">{escape(text)}</text></g>'
    )


def scatter_svg(table: Table, colours: dict[str, int], ident: str) -> Markup | None:
    """Clean accuracy against robust accuracy (:func:`plot_axes`), one labelled point per row
    that has both, as inline SVG; labels placed by :func:`_place_labels`.

    Error bars are one standard deviation over seeds where a row has several. ``None`` when
    the table has no (clean, attack) pair to plot or no row has both numbers.
    """
    axes = plot_axes(table)
    if axes is None:
        return None
    xkey, ykey = axes
    points = _points(table, colours, xkey, ykey)
    if not points:
        return None
    frame = _Frame(
        *_domain([(p.x, p.sx or 0.0) for p in points]),
        *_domain([(p.y, p.sy or 0.0) for p in points]),
    )
    for p in points:
        p.px, p.py = frame.sx(p.x), frame.sy(p.y)
    xname, yname = axis_label(xkey), axis_label(ykey)
    parts = [
        f'<svg class="scatter" viewBox="0 0 {W} {H}" role="img" '
        f'aria-labelledby="{ident}-title {ident}-desc" data-points="{len(points)}" '
        f'data-x="{escape(xkey)}" data-y="{escape(ykey)}">',
        f'<title id="{ident}-title">{escape(xname)} vs {escape(yname)} accuracy: '
        f"{escape(table.title)}</title>",
        f'<desc id="{ident}-desc">One point per row (configuration); error bars are one '
        "standard deviation over seeds; up and to the right is better.</desc>",
        f'<rect class="frame" x="{LEFT}" y="{TOP}" width="{frame.pw}" height="{frame.ph}"/>',
        *_axes_svg(frame, xname, yname),
        *_error_bars_svg(frame, points),
    ]
    texts = [p.row.label or p.row.method for p in points]
    for p, text, place in zip(points, texts, _place_labels(points, texts)):
        parts.append(_point_svg(p, text, place, (xname, yname)))
    parts.append("</svg>")
    return Markup("\n".join(parts))
