"""Building a report: a paper's table filled from the store, row by row, with the paper's
"method − best other" rows recomputed from ours and from the paper's own numbers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from harness.grid.load import Grid, load_grid
from harness.publishing.report.fill import fill_cells, student_fill, teacher_fill
from harness.publishing.report.model import FLAGGED, SHORT, DeltaRow, Fill, ReportRow, ReportTable
from harness.publishing.report.spec import Group, groups, per_group, table_ids, table_spec
from harness.store.queries import StoreView
from harness.store.store import Store


def build_report(
    table_id: str | int,
    store: Store,
    *,
    paper: str = "dgad",
    grids: dict[str, Grid] | None = None,
    view: StoreView | None = None,
) -> ReportTable:
    """One table of ``paper``: the published numbers beside ours from ``store``."""
    spec = table_spec(paper, table_id)
    grids = {} if grids is None else grids
    view = view or StoreView(store)

    def grid(name: str) -> Grid:
        if name not in grids:
            grids[name] = load_grid(name)
        return grids[name]

    table_groups = groups(spec)
    rows = [report_row(spec, row, table_groups, view, grid) for row in spec.get("rows", [])]
    table = ReportTable(
        paper=paper,
        id=str(spec["id"]),
        title=spec["title"],
        grid=spec.get("grid"),
        block_header=spec.get("block_header"),
        row_header=spec.get("row_header", "method"),
        groups=table_groups,
        rows=rows,
        deltas=[],
        notes=list(spec.get("notes", [])),
    )
    if spec.get("delta"):
        add_deltas(table, spec)
    return table


def report_row(
    spec: dict[str, Any],
    row: dict[str, Any],
    table_groups: list[Group],
    view: StoreView,
    grid: Callable[[str], Grid],
) -> ReportRow:
    """One row of the table: a fill per column group, and its cells."""
    where = f"table {spec['id']}, row {row['label']!r}"
    paper_values = per_group(row["paper"], table_groups, where)
    fills = [row_fill(spec, row, g, view, grid) for g in table_groups]
    if len(fills) > 1 and len({tuple(f.ref_ids) for f in fills}) == 1:
        for f in fills:  # one run in every column group (teacher-free, or Table 7)
            f.where = " · ".join(p for p in (row.get("block"), row["label"]) if p)
    cells = [
        fill_cells(view, f, g.columns, v) for f, g, v in zip(fills, table_groups, paper_values)
    ]
    return ReportRow(
        row.get("block", ""), row["label"], row.get("method"), fills, cells, row.get("note")
    )


def row_fill(
    spec: dict[str, Any],
    row: dict[str, Any],
    group: Group,
    view: StoreView,
    grid: Callable[[str], Grid],
) -> Fill:
    """The runs behind one row in one column group: a grid's teacher, or a student run."""
    label = " · ".join(p for p in (row.get("block"), row["label"], group.name) if p)
    if spec.get("kind") == "teachers":
        return teacher_fill(view, grid(row["grid"]), row["teacher"], label)
    teacher = row.get("teacher", group.teacher)
    return student_fill(
        view,
        grid(row.get("grid", spec.get("grid"))),
        (row["method"], row["student"], None if teacher in (None, "none") else teacher),
        row.get("paper_epochs", spec.get("paper_epochs")),
        label,
    )


def add_deltas(table: ReportTable, spec: dict[str, Any]) -> None:
    """The table's "``spec['delta']`` − best other" row of each block that has one."""
    printed = {
        d.get("block", ""): per_group(d["paper"], table.groups, f"table {table.id} printed delta")
        for d in spec.get("printed_delta", [])
    }
    table.delta_label = next(
        (r.label for r in table.rows if r.method == spec["delta"]), spec["delta"]
    )
    for block in dict.fromkeys(r.block for r in table.rows):
        delta = delta_row(table, block, spec["delta"], printed.get(block))
        if delta is not None:
            table.deltas.append(delta)


def delta_row(
    table: ReportTable, block: str, method: str, printed: list[list[float]] | None
) -> DeltaRow | None:
    """``method``'s row minus the best other row of ``block``, column by column."""
    rows = [r for r in table.rows if r.block == block]
    target = next((r for r in rows if r.method == method), None)
    others = [r for r in rows if r is not target]
    if target is None or not others:
        return None
    ours, paper, marks = [], [], []
    for gi, g in enumerate(table.groups):
        o_row, p_row, m_row = [], [], []
        for ci in range(len(g.columns)):
            mine = target.cells[gi][ci]
            theirs = [r.cells[gi][ci] for r in others]
            involved = [mine, *theirs]
            if all(c.ours is not None for c in involved):
                o_row.append(round(mine.ours, 2) - max(round(c.ours, 2) for c in theirs))
            else:
                o_row.append(None)
            p_row.append(mine.paper - max(c.paper for c in theirs))
            m_row.append(
                "".join(m for m in (SHORT, FLAGGED) if any(m in c.marks for c in involved))
            )
        ours.append(o_row)
        paper.append(p_row)
        marks.append(m_row)
    return DeltaRow(block, ours, paper, printed, marks)


def build_reports(
    store: Store, *, paper: str = "dgad", table: str | int | None = None
) -> list[ReportTable]:
    """One table, or every table of the paper, sharing the grids and one read of the store."""
    ids = [str(table)] if table is not None else table_ids(paper)
    grids: dict[str, Grid] = {}
    view = StoreView(store)
    return [build_report(i, store, paper=paper, grids=grids, view=view) for i in ids]
