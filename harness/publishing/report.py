"""``bench report --paper dgad``: a paper's published tables beside ours, cell by cell.

A paper's tables live in ``reports/<paper>/tables.toml``: the published numbers, typed from the
paper, and for every cell the grid and the selector (method or variant, student, teacher) of
the run that fills it (Table 1's cells: a grid's teacher). Each cell shows ours (the mean over
the completed seeds, in %), the paper's, and ours − paper. Cells without a completed run, runs
on a shorter schedule than the paper's and runs that failed a reliability check are marked,
never mixed in silently. ``missing_commands`` lists the ``bench`` commands that fill the empty
cells.

A store run fills a cell when its config is the grid's run's config up to the seed and the
length of the schedule (``--seed``, ``--epochs``): every seed is averaged, and a shorter run
counts only where no run on the grid's schedule is complete, with a mark.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tabulate import tabulate

from harness.grid.load import Grid, RunSpec, load_grid, read_toml
from harness.publishing.leaderboard import MAIN
from harness.store.store import Store
from harness.utils.downloads import url_path
from harness.utils.errors import UserError
from harness.utils.values import canonical_json, is_file

REPORTS_DIR = Path(__file__).resolve().parents[2] / "reports"

NO_RUN = "—"
SHORT = "†"
FLAGGED = "‡"
NOT_EVALUATED = "n/e"
MISPRINT = "*"


# -- the paper's tables (data) ---------------------------------------------------------------------
def list_papers() -> list[str]:
    if not REPORTS_DIR.is_dir():
        return []
    return sorted(p.name for p in REPORTS_DIR.iterdir() if (p / "tables.toml").is_file())


def paper_spec(paper: str) -> dict[str, Any]:
    """``reports/<paper>/tables.toml``, read and checked for shape."""
    path = REPORTS_DIR / paper / "tables.toml"
    if not is_file(path):
        valid = ", ".join(list_papers()) or "(none)"
        raise UserError(f"unknown paper {paper!r}; valid: {valid}")
    spec = read_toml(path)
    for table in spec.get("tables", []):
        groups = _groups(table)
        for row in table.get("rows", []):
            _per_group(row["paper"], groups, f"{path}: table {table['id']} row {row['label']!r}")
        for row in table.get("printed_delta", []):
            _per_group(row["paper"], groups, f"{path}: table {table['id']} printed delta")
    return spec


def table_ids(paper: str) -> list[str]:
    return [str(t["id"]) for t in paper_spec(paper).get("tables", [])]


def _table_spec(paper: str, table_id: str | int) -> dict[str, Any]:
    tables = paper_spec(paper).get("tables", [])
    for table in tables:
        if str(table["id"]) == str(table_id):
            return table
    valid = ", ".join(str(t["id"]) for t in tables)
    raise UserError(f"unknown table {str(table_id)!r} of paper {paper}; valid: {valid}")


@dataclass
class Group:
    """A column group: one teacher (Table 4) or one transfer surrogate (Table 7)."""

    name: str
    teacher: str | None
    columns: list[str]


def _groups(table: dict[str, Any]) -> list[Group]:
    default = table.get("columns", [])
    raw = table.get("groups") or [{"name": ""}]
    return [
        Group(g.get("name", ""), g.get("teacher"), list(g.get("columns", default))) for g in raw
    ]


def _per_group(values: list, groups: list[Group], where: str) -> list[list[float]]:
    """A row's numbers as one list per group (a single flat list when there is one group)."""
    per_group = values if values and isinstance(values[0], list) else [values]
    if len(per_group) != len(groups) or any(
        len(v) != len(g.columns) for v, g in zip(per_group, groups)
    ):
        shape = [len(g.columns) for g in groups]
        raise UserError(f"{where}: expected numbers for columns {shape}, got {values!r}")
    return [[float(x) for x in v] for v in per_group]


#: Labels of the columns that are not named after their attack alone.
LABELS = {"jsma-paper": "JSMA (authors' call)"}


def column_label(column: str) -> str:
    """``pgd10`` → ``PGD``; ``transfer/resnet34/jsma`` → ``JSMA`` (the group names the model)."""
    name = column.rsplit("/", 1)[-1]
    return MAIN.get(name) or LABELS.get(name) or name.upper()


# -- the report (what was computed) ----------------------------------------------------------------
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


# -- the store, read once per report ---------------------------------------------------------------
class _StoreView:
    """The store's runs and results, indexed for cell lookups; reading never writes."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.runs: dict[str, dict[str, Any]] = {}
        self.results: dict[str, dict[str, float]] = {}
        if store.index_path.exists():
            for rec in store.frame("runs").to_dict("records"):
                self.runs[rec["run_id"]] = rec
            for rec in store.frame("results").to_dict("records"):
                self.results.setdefault(rec["run_id"], {})[rec["attack"]] = rec["accuracy"]
        self._configs: dict[str, dict[str, Any] | None] = {}

    def config(self, run_id: str) -> dict[str, Any] | None:
        if run_id not in self._configs:
            path = self.store.run_dir(run_id) / "config.json"
            self._configs[run_id] = json.loads(path.read_text()) if path.exists() else None
        return self._configs[run_id]

    def candidates(
        self, kind: str, method: str, student: str, teacher: str | None, dataset: str
    ) -> list[dict[str, Any]]:
        def same_teacher(value: Any) -> bool:
            absent = value is None or (isinstance(value, float) and math.isnan(value))
            return absent if teacher is None else value == teacher

        return [
            r
            for r in self.runs.values()
            if r["kind"] == kind
            and r["method"] == method
            and r["student"] == student
            and r["dataset"] == dataset
            and same_teacher(r["teacher"])
        ]


def cell_key(config: dict[str, Any], teacher_config: Callable[[str], dict | None]) -> str:
    """A run's config up to its seed and schedule length: the runs with one key fill one cell.

    A trained teacher enters through its own key (so a student of a shorter-trained teacher
    matches, and one of a teacher trained by another recipe does not).
    """
    c = {k: v for k, v in config.items() if k not in ("grids", "data", "seed", "schedule")}
    c["train"] = {
        k: v for k, v in c.get("train", {}).items() if k not in ("seed", "epochs", "milestones")
    }
    teacher = c.get("teacher")
    if teacher and teacher.get("source") == "run":
        tcfg = teacher_config(teacher["run_id"])
        recipe = cell_key(tcfg, teacher_config) if tcfg else teacher["run_id"]
        c["teacher"] = {**{k: v for k, v in teacher.items() if k != "run_id"}, "recipe": recipe}
    return canonical_json(c)


def run_command(grid: str, spec: RunSpec) -> str:
    """The ``bench run`` command that runs ``spec`` (with every seed of the grid)."""
    cfg = spec.config
    label = cfg["method"].get("variant") or cfg["method"]["name"]
    command = f"bench run --grid {grid} --method {label} --student {cfg['model']}"
    if cfg["teacher"]:
        command += f" --teacher {cfg['teacher']['name']}"
    return command


def external_run_id(kind: str, model: str, source: dict, dataset: str) -> str:
    """The store id ``bench eval`` gives a RobustBench model or a checkpoint file."""
    from harness.execution.external import external_config
    from harness.utils.values import config_hash

    config = external_config(kind, model, source, {"name": dataset, "options": {}})
    return f"eval-{config['model']}-{dataset}-{config_hash(config)}"


def _label(spec: RunSpec) -> str:
    return spec.config["method"].get("variant") or spec.config["method"]["name"]


# -- filling cells ---------------------------------------------------------------------------------
def _choose(
    matches: list[dict[str, Any]],
    full_epochs: int,
    paper_epochs: int | None,
    fill: Fill,
) -> None:
    """Pick the completed runs that fill the cell: the grid's schedule if any, else the longest."""
    complete = [r for r in matches if r["status"] == "complete"]
    for r in matches:
        if r["status"] != "complete":
            fill.other_states[r["status"]] = fill.other_states.get(r["status"], 0) + 1
    if not complete:
        return
    chosen = [r for r in complete if r["epochs"] == full_epochs]
    if not chosen:
        longest = max(r["epochs"] for r in complete)
        chosen = [r for r in complete if r["epochs"] == longest]
    fill.runs = sorted(r["run_id"] for r in chosen)
    fill.epochs = int(chosen[0]["epochs"])
    fill.paper_epochs = paper_epochs
    fill.short = any(
        r["schedule"] == "short" or (paper_epochs is not None and r["epochs"] < paper_epochs)
        for r in chosen
    )
    fill.flags = sorted(
        {k for r in chosen for k, ok in json.loads(r["flags"] or "{}").items() if not ok}
    )


def _cells(view: _StoreView, fill: Fill, columns: list[str], paper: list[float]) -> list[Cell]:
    cells = []
    marks = (SHORT if fill.short else "") + (FLAGGED if fill.flags else "")
    for column, value in zip(columns, paper):
        cell = Cell(paper=value)
        if fill.filled:
            accs = [view.results.get(r, {}).get(column) for r in fill.runs]
            accs = [a for a in accs if a is not None and not math.isnan(a)]
            if accs:
                cell.ours = 100 * sum(accs) / len(accs)
                cell.seeds = len(accs)
                cell.state = "ok"
                cell.marks = marks
            else:
                cell.state = "not_evaluated"
                fill.not_evaluated.append(column)
        cells.append(cell)
    return cells


def _student_fill(
    view: _StoreView,
    grid: Grid,
    method: str,
    student: str,
    teacher: str | None,
    paper_epochs: int | None,
    where: str,
) -> Fill:
    specs = [
        s
        for s in grid.runs
        if _label(s) == method
        and s.config["model"] == student
        and (s.config["teacher"] or {}).get("name") == teacher
    ]
    if not specs:
        raise UserError(
            f"report: no run of grid {grid.name} has method {method!r}, student {student!r} "
            f"and teacher {teacher or 'none'!r} ({where})"
        )
    ref = specs[0]
    fill = Fill(where, grid.name, [s.run_id for s in specs], run_command(grid.name, ref))
    lookup = _teacher_lookup(view, grid)
    key = cell_key(ref.config, lookup)
    matches = [
        r
        for r in view.candidates(ref.kind, method, student, teacher, ref.config["dataset"]["name"])
        if (cfg := view.config(r["run_id"])) is not None and cell_key(cfg, lookup) == key
    ]
    _choose(matches, ref.config["train"]["epochs"], paper_epochs, fill)
    return fill


def _teacher_lookup(view: _StoreView, grid: Grid) -> Callable[[str], dict | None]:
    own = {r.run_id: r.config for r in grid.teacher_runs.values()}
    return lambda run_id: own.get(run_id) or view.config(run_id)


def _teacher_fill(view: _StoreView, grid: Grid, tname: str, where: str) -> Fill:
    """Table 1: a grid's teacher, filled by its teacher run or by a ``bench eval`` run."""
    tables = grid.raw.get("teacher", {})
    if tname not in tables:
        raise UserError(f"report: grid {grid.name} has no teacher {tname!r} ({where})")
    spec = tables[tname]
    dataset = grid.raw["dataset"]
    if tname in grid.teacher_runs:  # trained by the grid
        run = grid.teacher_runs[tname]
        needing = [r for r in grid.runs if run.run_id in r.teacher_needs]
        pick = next((r for r in needing if _label(r) == "dgad"), needing[0] if needing else None)
        command = run_command(grid.name, pick) if pick else f"bench run --grid {grid.name}"
        fill = Fill(where, grid.name, [run.run_id], command)
        lookup = _teacher_lookup(view, grid)
        key = cell_key(run.config, lookup)
        matches = [
            r
            for r in view.candidates("teacher", _label(run), run.config["model"], None, dataset)
            if (cfg := view.config(r["run_id"])) is not None and cell_key(cfg, lookup) == key
        ]
        _choose(matches, run.config["train"]["epochs"], None, fill)
        return fill
    if "robustbench" in spec:
        name = spec["robustbench"]
        kind, model, source = "robustbench", name, {"robustbench": name}
        command = f"bench eval {name} --robustbench --dataset {dataset}"
    else:
        ref = next(r for r in grid.runs if (r.config["teacher"] or {}).get("name") == tname)
        tref = ref.config["teacher"]
        kind, model = "checkpoint", tref["model"]
        path = tref.get("path") or str(url_path(tref["url"], tref["sha256"]).resolve())
        source = {"path": path, "sha256": tref["sha256"]}
        command = f"bench eval {path} --model {model} --dataset {dataset}"
    fill = Fill(where, grid.name, [external_run_id(kind, model, source, dataset)], command)
    key = "robustbench" if kind == "robustbench" else "sha256"
    matches = [
        r
        for r in view.candidates(kind, kind, model, None, dataset)
        if (view.config(r["run_id"]) or {}).get("source", {}).get(key) == source[key]
    ]
    _choose(matches, 0, None, fill)
    return fill


# -- building --------------------------------------------------------------------------------------
def build_report(
    table_id: str | int,
    store: Store,
    *,
    paper: str = "dgad",
    grids: dict[str, Grid] | None = None,
    _view: _StoreView | None = None,
) -> ReportTable:
    """One table of ``paper``: the published numbers beside ours from ``store``."""
    spec = _table_spec(paper, table_id)
    grids = {} if grids is None else grids
    view = _view or _StoreView(store)

    def grid(name: str) -> Grid:
        if name not in grids:
            grids[name] = load_grid(name)
        return grids[name]

    groups = _groups(spec)
    tid = str(spec["id"])
    rows = []
    for row in spec.get("rows", []):
        where = f"table {tid}, row {row['label']!r}"
        paper_values = _per_group(row["paper"], groups, where)
        fills = []
        for g in groups:
            teacher = row.get("teacher", g.teacher)
            label = " · ".join(p for p in (row.get("block"), row["label"], g.name) if p)
            if spec.get("kind") == "teachers":
                fills.append(_teacher_fill(view, grid(row["grid"]), row["teacher"], label))
                continue
            fills.append(
                _student_fill(
                    view,
                    grid(row.get("grid", spec.get("grid"))),
                    row["method"],
                    row["student"],
                    None if teacher in (None, "none") else teacher,
                    row.get("paper_epochs", spec.get("paper_epochs")),
                    label,
                )
            )
        if len(fills) > 1 and len({tuple(f.ref_ids) for f in fills}) == 1:
            for f in fills:  # one run in every column group (teacher-free, or Table 7)
                f.where = " · ".join(p for p in (row.get("block"), row["label"]) if p)
        cells = [_cells(view, f, g.columns, v) for f, g, v in zip(fills, groups, paper_values)]
        rows.append(
            ReportRow(
                row.get("block", ""), row["label"], row.get("method"), fills, cells, row.get("note")
            )
        )
    table = ReportTable(
        paper=paper,
        id=tid,
        title=spec["title"],
        grid=spec.get("grid"),
        block_header=spec.get("block_header"),
        row_header=spec.get("row_header", "method"),
        groups=groups,
        rows=rows,
        deltas=[],
        notes=list(spec.get("notes", [])),
    )
    if spec.get("delta"):
        printed = {
            d.get("block", ""): _per_group(d["paper"], groups, f"table {tid} printed delta")
            for d in spec.get("printed_delta", [])
        }
        table.delta_label = next(
            (r.label for r in rows if r.method == spec["delta"]), spec["delta"]
        )
        for block in dict.fromkeys(r.block for r in rows):
            delta = _delta(table, block, spec["delta"], printed.get(block))
            if delta is not None:
                table.deltas.append(delta)
    return table


def _delta(
    table: ReportTable, block: str, method: str, printed: list[list[float]] | None
) -> DeltaRow | None:
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
    view = _StoreView(store)
    return [build_report(i, store, paper=paper, grids=grids, _view=view) for i in ids]


# -- rendering -------------------------------------------------------------------------------------
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


def _footnotes(table: ReportTable) -> str:
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


# -- what is missing -------------------------------------------------------------------------------
def missing_commands(tables: list[ReportTable]) -> list[str]:
    """The commands that fill the empty cells, one per line, with ``#`` comment lines.

    Per table: ``bench run``/``bench eval`` for cells without a completed run, ``bench eval``
    for completed runs that lack an attack, then (commented as such) the commands that fill
    cells held only by shorter-schedule runs with the paper's schedule. A command, or a run an
    earlier command already creates, is listed once.
    """
    done_commands: set[str] = set()
    done_ids: set[str] = set()
    lines = []

    def take(command: str, ref_ids: list[str]) -> str | None:
        if command in done_commands or (ref_ids and set(ref_ids) <= done_ids):
            return None
        done_commands.add(command)
        done_ids.update(ref_ids)
        return command

    for table in tables:
        empty, evals, short = [], [], []
        missing = {tuple(f.ref_ids) for f in table.fills if not f.filled}
        for f in table.fills:
            if not f.filled:
                if c := take(f.command, f.ref_ids):
                    empty.append(c)
                continue
            for run_id in f.runs:
                for column in dict.fromkeys(f.not_evaluated):
                    flag = (
                        "--suite transfer"
                        if column.startswith("transfer/")
                        else (f"--attack {column}")
                    )
                    if c := take(f"bench eval {run_id} {flag}", []):
                        evals.append(c)
            if f.short and (c := take(f.command, f.ref_ids)):
                short.append(c)
        head = f"# {table.title}: {len(missing)} missing run(s)"
        if len(empty) < len(missing):
            head += f", {len(missing) - len(empty)} of them created by a command above"
        if evals:
            head += f"; {len(evals)} evaluation(s) missing"
        lines.append(head)
        lines += empty + evals
        if short:
            lines.append("# cells filled only by shorter-schedule runs; the paper's schedule:")
            lines += short
    return lines
