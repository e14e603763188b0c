"""The ``bench run`` command line that reproduces one run of a selection (``bench plan``)."""

from __future__ import annotations

import shlex
from typing import Any

from harness.grid.load import RunSpec
from harness.schema import TEACHER_ROLE

#: Flags of the selection that change what a run is, as ``bench run`` spells them; a run's own
#: method, student, teacher and seed are given per run.
KEPT = (
    ("dataset", "--dataset"),
    ("epochs", "--epochs"),
    ("teacher_epochs", "--teacher-epochs"),
    ("select_on", "--select-on"),
)


def run_command(spec: RunSpec, selection: dict[str, Any], default_store: str = "results") -> str:
    """``bench run --grid G --method M --student S --seed N [--teacher T]`` with the overrides
    of ``selection`` (the flags ``bench plan`` was given: ``grid_name``, ``dataset``,
    ``epochs``, ``teacher_epochs``, ``select_on``, ``store``) kept, so that the command makes
    exactly this run (the same id)."""
    cfg = spec.config
    words = ["bench", "run", "--grid", str(selection["grid_name"])]
    words += ["--method", cfg.label, "--student", cfg.model, "--seed", str(cfg.seed)]
    if [role for role, _ in cfg.teachers] == [TEACHER_ROLE]:  # multi-teacher: by its method
        words += ["--teacher", cfg.teachers[0][1].name]
    for key, flag in KEPT:
        if selection.get(key) is not None:
            words += [flag, str(selection[key])]
    store = selection.get("store")
    if store and store != default_store:
        words += ["--store", str(store)]
    return shlex.join(words)
