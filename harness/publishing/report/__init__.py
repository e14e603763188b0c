"""``bench report --paper dgad``: a paper's published tables beside ours, cell by cell.

A paper's tables live in ``reports/<paper>/tables.toml``: the published numbers, typed from the
paper, and for every cell the grid and the selector (method or variant, student, teacher) of
the run that fills it (Table 1's cells: a grid's teacher). Each cell shows ours (the mean over
the completed seeds, in %), the paper's, and ours − paper. Cells without a completed run, runs
on a shorter schedule than the paper's and runs that failed a reliability check are marked,
never mixed in silently. ``missing_commands`` lists the ``bench`` commands that fill the empty
cells.

The parts, in the order data flows through them: :mod:`.spec` (the paper's tables, read and
checked), :mod:`.fill` (which store runs fill a cell), :mod:`.build` (a table filled from the
store), :mod:`.model` (what was computed), :mod:`.render` (Markdown) and :mod:`.missing` (the
commands that fill the empty cells). The store's side lives in :mod:`harness.store.queries`.
"""

from __future__ import annotations

from harness.publishing.report.build import build_report, build_reports
from harness.publishing.report.fill import cell_key, external_run_id, run_command
from harness.publishing.report.missing import missing_commands
from harness.publishing.report.model import (
    FLAGGED,
    MISPRINT,
    NO_RUN,
    NOT_EVALUATED,
    SHORT,
    Cell,
    DeltaRow,
    Fill,
    ReportRow,
    ReportTable,
)
from harness.publishing.report.render import cell_text, render_markdown, report_markdown
from harness.publishing.report.spec import (
    REPORTS_DIR,
    Group,
    column_label,
    list_papers,
    paper_spec,
    table_ids,
)

__all__ = [
    "FLAGGED",
    "MISPRINT",
    "NO_RUN",
    "NOT_EVALUATED",
    "REPORTS_DIR",
    "SHORT",
    "Cell",
    "DeltaRow",
    "Fill",
    "Group",
    "ReportRow",
    "ReportTable",
    "build_report",
    "build_reports",
    "cell_key",
    "cell_text",
    "column_label",
    "external_run_id",
    "list_papers",
    "missing_commands",
    "paper_spec",
    "render_markdown",
    "report_markdown",
    "run_command",
    "table_ids",
]
