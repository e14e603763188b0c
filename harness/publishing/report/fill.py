"""Filling cells: which store runs fill a report's cell, and the command that would.

A store run fills a cell when its config is the grid's run's config up to the seed and the
length of the schedule (``--seed``, ``--epochs``): every seed is averaged, and a shorter run
counts only where no run on the grid's schedule is complete, with a mark.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from harness.grid.load import Grid, RunSpec
from harness.publishing.report.model import FLAGGED, SHORT, Cell, Fill
from harness.store.queries import StoreView, failed_checks, same_weights
from harness.utils.downloads import url_path
from harness.utils.errors import UserError
from harness.utils.values import canonical_json

TeacherConfig = Callable[[str], "dict | None"]


def cell_key(config: dict[str, Any], teacher_config: TeacherConfig) -> str:
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


def method_label(spec: RunSpec) -> str:
    """The run's variant, else its method: what ``--method`` selects."""
    return spec.config["method"].get("variant") or spec.config["method"]["name"]


def run_command(grid: str, spec: RunSpec) -> str:
    """The ``bench run`` command that runs ``spec`` (with every seed of the grid)."""
    cfg = spec.config
    command = f"bench run --grid {grid} --method {method_label(spec)} --student {cfg['model']}"
    if cfg["teacher"]:
        command += f" --teacher {cfg['teacher']['name']}"
    return command


def external_run_id(kind: str, model: str, source: dict, dataset: str) -> str:
    """The store id ``bench eval`` gives a RobustBench model or a checkpoint file."""
    from harness.execution.external import external_config
    from harness.utils.values import config_hash

    config = external_config(kind, model, source, {"name": dataset, "options": {}})
    return f"eval-{config['model']}-{dataset}-{config_hash(config)}"


def choose(
    matches: list[dict[str, Any]], full_epochs: int, paper_epochs: int | None, fill: Fill
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
    fill.flags = failed_checks(r["flags"] for r in chosen)


def fill_cells(view: StoreView, fill: Fill, columns: list[str], paper: list[float]) -> list[Cell]:
    """The cells of one (row, group): the mean over the fill's runs beside the paper's."""
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


def teacher_lookup(view: StoreView, grid: Grid) -> TeacherConfig:
    """A teacher run's config: the grid's own, else the store's."""
    own = {r.run_id: r.config for r in grid.teacher_runs.values()}
    return lambda run_id: own.get(run_id) or view.config(run_id)


def same_cell(view: StoreView, grid: Grid, spec: RunSpec, found: list[dict]) -> list[dict]:
    """The records among ``found`` whose config has ``spec``'s cell key."""
    lookup = teacher_lookup(view, grid)
    key = cell_key(spec.config, lookup)
    return [
        r
        for r in found
        if (cfg := view.config(r["run_id"])) is not None and cell_key(cfg, lookup) == key
    ]


def student_fill(
    view: StoreView,
    grid: Grid,
    selector: tuple[str, str, str | None],
    paper_epochs: int | None,
    where: str,
) -> Fill:
    """The cell of a student: ``selector`` is (method or variant, student, teacher or None)."""
    method, student, teacher = selector
    specs = [
        s
        for s in grid.runs
        if method_label(s) == method
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
    dataset = ref.config["dataset"]["name"]
    matches = same_cell(
        view, grid, ref, view.candidates(ref.kind, method, student, teacher, dataset)
    )
    choose(matches, ref.config["train"]["epochs"], paper_epochs, fill)
    return fill


def teacher_fill(view: StoreView, grid: Grid, tname: str, where: str) -> Fill:
    """Table 1: a grid's teacher, filled by its teacher run or by a ``bench eval`` run."""
    if tname not in grid.raw.get("teacher", {}):
        raise UserError(f"report: grid {grid.name} has no teacher {tname!r} ({where})")
    if tname in grid.teacher_runs:
        return trained_teacher_fill(view, grid, tname, where)
    return evaluated_teacher_fill(view, grid, tname, where)


def trained_teacher_fill(view: StoreView, grid: Grid, tname: str, where: str) -> Fill:
    """A teacher the grid trains: its teacher run (the command: a student run that needs it)."""
    run = grid.teacher_runs[tname]
    needing = [r for r in grid.runs if run.run_id in r.teacher_needs]
    pick = next((r for r in needing if method_label(r) == "dgad"), needing[0] if needing else None)
    command = run_command(grid.name, pick) if pick else f"bench run --grid {grid.name}"
    fill = Fill(where, grid.name, [run.run_id], command)
    found = view.candidates(
        "teacher", method_label(run), run.config["model"], None, grid.raw["dataset"]
    )
    choose(same_cell(view, grid, run, found), run.config["train"]["epochs"], None, fill)
    return fill


def evaluated_teacher_fill(view: StoreView, grid: Grid, tname: str, where: str) -> Fill:
    """A teacher the grid loads (RobustBench, a checkpoint, a URL): its ``bench eval`` run."""
    spec = grid.raw["teacher"][tname]
    dataset = grid.raw["dataset"]
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
    matches = [
        r
        for r in view.candidates(kind, kind, model, None, dataset)
        if same_weights((view.config(r["run_id"]) or {}).get("source", {}), source)
    ]
    choose(matches, 0, None, fill)
    return fill
