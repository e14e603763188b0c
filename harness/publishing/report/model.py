"""What a report computed: cells (ours beside the paper's), the runs behind them, rows, tables,
and the marks a cell can carry."""

from __future__ import annotations

from dataclasses import dataclass, field

from harness.publishing.report.spec import Group

NO_RUN = "—"
SHORT = "†"
FLAGGED = "‡"
NOT_EVALUATED = "n/e"
MISPRINT = "*"


@dataclass
class Cell:
    """One number of the table: ours (None: no value) beside the paper's."""

    paper: float | None
    ours: float | None = None
    seeds: int = 0
    state: str = "missing"  # ok | missing (no completed run) | not_evaluated (attack not run)
    marks: str = ""

    @property
    def diff(self) -> float | None:
        if self.ours is None or self.paper is None:
            return None
        return round(round(self.ours, 2) - self.paper, 2)


@dataclass
class Fill:
    """The runs behind one (row, group): what fills it, and what would."""

    where: str  # "ResNet-18 · DGAD · WRN-34-10", for footnotes
    grid: str
    ref_ids: list[str]  # the run ids a fresh run of ``command`` creates (one per grid seed)
    command: str
    runs: list[str] = field(default_factory=list)  # the completed runs averaged
    epochs: int | None = None
    short: bool = False
    paper_epochs: int | None = None  # the paper's schedule, where it gives one
    flags: list[str] = field(default_factory=list)
    other_states: dict[str, int] = field(default_factory=dict)  # matching runs not complete
    not_evaluated: list[str] = field(default_factory=list)  # columns the runs lack

    @property
    def filled(self) -> bool:
        return bool(self.runs)


@dataclass
class ReportRow:
    block: str
    label: str
    method: str | None
    fills: list[Fill]  # one per group
    cells: list[list[Cell]]  # per group, per column
    note: str | None = None


@dataclass
class DeltaRow:
    """``delta`` row minus the best other row of the block, per column (None: not computable)."""

    block: str
    ours: list[list[float | None]]
    paper: list[list[float | None]]  # from the paper's own numbers
    printed: list[list[float]] | None  # the paper's printed row, where it prints one
    marks: list[list[str]]


@dataclass
class ReportTable:
    paper: str
    id: str
    title: str
    grid: str | None
    block_header: str | None
    row_header: str
    groups: list[Group]
    rows: list[ReportRow]
    deltas: list[DeltaRow]
    delta_label: str | None = None
    notes: list[str] = field(default_factory=list)  # printed beside the table

    def row(self, label: str, block: str = "") -> ReportRow:
        for row in self.rows:
            if row.label == label and (not block or row.block == block):
                return row
        raise KeyError((block, label))

    def cell(self, label: str, column: str, group: int = 0, block: str = "") -> Cell:
        return self.row(label, block).cells[group][self.groups[group].columns.index(column)]

    def delta(self, block: str = "") -> DeltaRow:
        return next(d for d in self.deltas if d.block == block)

    @property
    def fills(self) -> list[Fill]:
        return [f for row in self.rows for f in row.fills]
