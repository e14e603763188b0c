"""A report as Markdown: ``ours / paper (ours − paper)`` per cell, the delta rows, and footnotes
that say what every mark means."""

from __future__ import annotations

from tabulate import tabulate

from harness.publishing.report.model import (
    FLAGGED,
    MISPRINT,
    NO_RUN,
    NOT_EVALUATED,
    SHORT,
    Cell,
    DeltaRow,
    ReportTable,
)
from harness.publishing.report.spec import column_label, paper_spec


def _num(x: float) -> str:
    return f"{x:.2f}"


def _signed(x: float) -> str:
    x = round(x, 2)
    if x == 0:
        x = 0.0  # no "−0.00"
    return f"{x:+.2f}".replace("-", "−")


def cell_text(cell: Cell) -> str:
    """``ours / paper (ours − paper)``; ``—`` where no run, ``n/e`` where not evaluated."""
    paper = _num(cell.paper) if cell.paper is not None else "?"
    if cell.state == "missing":
        return f"{NO_RUN} / {paper}"
    if cell.state == "not_evaluated":
        return f"{NOT_EVALUATED} / {paper}"
    return f"{_num(cell.ours)}{cell.marks} / {paper} ({_signed(cell.diff)})"


def _headers(table: ReportTable) -> list[str]:
    heads = [table.block_header] if table.block_header else []
    heads.append(table.row_header)
    for g in table.groups:
        heads += [f"{g.name}: {column_label(c)}" if g.name else column_label(c) for c in g.columns]
    return heads


def _delta_records(table: ReportTable, delta: DeltaRow) -> list[list[str]]:
    lead = [delta.block] if table.block_header else []
    name = f"{table.delta_label} − best other"
    out = []
    first = lead + [f"{name} (ours / {'printed' if delta.printed else 'paper'})"]
    recomputed = lead + [f"{name} (the paper's own numbers)"]
    for gi in range(len(table.groups)):
        for ci in range(len(table.groups[gi].columns)):
            paper = delta.printed[gi][ci] if delta.printed else delta.paper[gi][ci]
            ours = delta.ours[gi][ci]
            if ours is None:
                first.append(f"{NO_RUN} / {_signed(paper)}")
            else:
                diff = round(ours, 2) - round(paper, 2)
                first.append(
                    f"{_signed(ours)}{delta.marks[gi][ci]} / {_signed(paper)} ({_signed(diff)})"
                )
            if delta.printed:
                own = delta.paper[gi][ci]
                differs = abs(round(own, 2) - delta.printed[gi][ci]) > 0.005
                recomputed.append(_signed(own) + (MISPRINT if differs else ""))
    out.append(first)
    if delta.printed:
        out.append(recomputed)
    return out


def render_markdown(table: ReportTable) -> str:
    records = []
    deltas = {d.block: d for d in table.deltas}
    blocks = list(dict.fromkeys(r.block for r in table.rows))
    for block in blocks:
        for row in (r for r in table.rows if r.block == block):
            lead = [row.block] if table.block_header else []
            records.append(lead + [row.label] + [cell_text(c) for cs in row.cells for c in cs])
        if block in deltas:
            records += _delta_records(table, deltas[block])
    seeds = sorted({c.seeds for r in table.rows for cs in r.cells for c in cs if c.seeds})
    source = f"grid `{table.grid}`" if table.grid else "the grids' teachers"
    parts = [
        f"## {table.title}\n",
        f"Runs: {source}. Each cell: ours / paper (ours − paper), accuracy in %; ours is the "
        f"mean over the completed seeds ({', '.join(map(str, seeds)) or 'none'} per cell).\n",
        tabulate(records, headers=_headers(table), tablefmt="github", disable_numparse=True) + "\n",
    ]
    parts.append(_footnotes(table))
    return "\n".join(p for p in parts if p)


def _cell_notes(table: ReportTable) -> list[str]:
    """What the missing, not-evaluated, short, flagged and unfinished cells mean."""
    lines = []
    all_cells = [c for r in table.rows for cs in r.cells for c in cs]
    if any(c.state == "missing" for c in all_cells):
        lines.append(
            f"- {NO_RUN} no completed run yet; `bench report --paper {table.paper} --table "
            f"{table.id} --missing` prints the commands that fill these cells."
        )
    if any(c.state == "not_evaluated" for c in all_cells):
        lines.append(f"- {NOT_EVALUATED} the run is complete but this attack was not evaluated.")
    fills = table.fills
    for f in fills:
        if f.short:
            paper = f" (the paper: {f.paper_epochs})" if f.paper_epochs else ""
            lines.append(
                f"- {SHORT} {f.where}: {f.epochs} epochs, a shorter schedule than the "
                f"paper's{paper}."
            )
    for f in fills:
        if f.flags:
            lines.append(
                f"- {FLAGGED} {f.where}: failed reliability check(s): {', '.join(f.flags)}."
            )
    for f in fills:
        if not f.filled and f.other_states:
            states = ", ".join(f"{n} {s}" for s, n in sorted(f.other_states.items()))
            lines.append(f"- {NO_RUN} {f.where}: {states}.")
    return lines


def _delta_notes(table: ReportTable) -> list[str]:
    """How the delta rows are computed, and where the paper's printed value is not its own."""
    lines = []
    if any(MISPRINT in t for d in table.deltas if d.printed for t in _delta_records(table, d)[-1]):
        lines.append(
            f"- {MISPRINT} the paper's printed value is not {table.delta_label} minus the best "
            "other method of its column in the paper's own numbers; "
            "ours is computed, never copied."
        )
    if table.deltas:
        lines.append(
            f"- {table.delta_label} − best other: computed where every row of the block has a "
            "value in that column; marks carry over from the cells it uses."
        )
    return lines


def _footnotes(table: ReportTable) -> str:
    lines = _cell_notes(table) + _delta_notes(table)
    lines += [f"- Note: {note}." for note in table.notes]
    for row in table.rows:
        if row.note:
            lines.append(f"- Note, {row.label}: {row.note}.")
    lines = list(dict.fromkeys(lines))  # a run filling several column groups: noted once
    return "\n".join(lines) + "\n" if lines else ""


def report_markdown(tables: list[ReportTable]) -> str:
    paper = tables[0].paper if tables else ""
    head = f"# {paper_spec(paper).get('title', paper)}: the paper's tables beside ours\n"
    return "\n".join([head, *(render_markdown(t) for t in tables)])
