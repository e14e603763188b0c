"""A paper's tables as data: ``reports/<paper>/tables.toml`` (shipped as ``harness.reports``).

The published numbers, typed from the paper, and for every cell the grid and the selector
(method or variant, student, teacher) of the run that fills it. Read and checked for shape here;
nothing here knows the store.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from harness.grid.load import read_toml
from harness.publishing.leaderboard import MAIN
from harness.utils.errors import UserError
from harness.utils.resources import REPORTS, shipped
from harness.utils.values import is_file

#: The papers' tables: ``reports/`` of the repository, installed as package data.
REPORTS_DIR = shipped(REPORTS)
#: Labels of the columns that are not named after their attack alone.
LABELS = {"jsma-paper": "JSMA (authors' call)"}


@dataclass
class Group:
    """A column group: one teacher (Table 4) or one transfer surrogate (Table 7)."""

    name: str
    teacher: str | None
    columns: list[str]


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
        table_groups = groups(table)
        for row in table.get("rows", []):
            per_group(
                row["paper"], table_groups, f"{path}: table {table['id']} row {row['label']!r}"
            )
        for row in table.get("printed_delta", []):
            per_group(row["paper"], table_groups, f"{path}: table {table['id']} printed delta")
    return spec


def table_ids(paper: str) -> list[str]:
    return [str(t["id"]) for t in paper_spec(paper).get("tables", [])]


def table_spec(paper: str, table_id: str | int) -> dict[str, Any]:
    """One table of ``paper`` by its id (``4``, ``"7"``); an unknown id is a user error."""
    tables = paper_spec(paper).get("tables", [])
    for table in tables:
        if str(table["id"]) == str(table_id):
            return table
    valid = ", ".join(str(t["id"]) for t in tables)
    raise UserError(f"unknown table {str(table_id)!r} of paper {paper}; valid: {valid}")


def groups(table: dict[str, Any]) -> list[Group]:
    """A table's column groups; one unnamed group when it has none."""
    default = table.get("columns", [])
    raw = table.get("groups") or [{"name": ""}]
    return [
        Group(g.get("name", ""), g.get("teacher"), list(g.get("columns", default))) for g in raw
    ]


def per_group(values: list, groups: list[Group], where: str) -> list[list[float]]:
    """A row's numbers as one list per group (a single flat list when there is one group)."""
    per = values if values and isinstance(values[0], list) else [values]
    if len(per) != len(groups) or any(len(v) != len(g.columns) for v, g in zip(per, groups)):
        shape = [len(g.columns) for g in groups]
        raise UserError(f"{where}: expected numbers for columns {shape}, got {values!r}")
    return [[float(x) for x in v] for v in per]


def column_label(column: str) -> str:
    """``pgd10`` → ``PGD``; ``transfer/resnet34/jsma`` → ``JSMA`` (the group names the model)."""
    name = column.rsplit("/", 1)[-1]
    return MAIN.get(name) or LABELS.get(name) or name.upper()
