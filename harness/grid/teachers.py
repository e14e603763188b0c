"""Teachers of a grid: each ``[teacher.NAME]`` table checked, then expanded by its source
(:data:`TEACHER_EXPANDERS`) into a reference a student's config holds and, for a teacher the grid
trains, a run of the grid.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from harness.grid.runs import Grid, GridSettings, RunSpec, make_run
from harness.schema import TEACHER_SOURCES, TRAIN_DEFAULTS, TeacherRef
from harness.utils.errors import UserError
from harness.utils.names import check_name
from harness.utils.values import check_sha256, file_sha256, is_file

URL_SCHEMES = ("https", "http", "file")
RB_ZOOS = ("cifar10", "cifar100", "imagenet")  # harness.models.robustbench.DATASETS


def teacher_source(name: str, spec: Any, where: str) -> dict[str, Any]:
    check_name(name, f"{where}: teacher name")  # part of the run id, a folder name
    if not isinstance(spec, dict) or "model" not in spec:
        raise UserError(f'{where}: [teacher.{name}] needs model = "<model name>"')
    sources = [s for s in TEACHER_SOURCES if s in spec]
    if len(sources) != 1:
        raise UserError(
            f"{where}: [teacher.{name}] needs exactly one of {', '.join(TEACHER_SOURCES)}"
        )
    unknown = sorted(set(spec) - {"model", *TEACHER_SOURCES, "sha256", "threat_model", "zoo"})
    if unknown:
        raise UserError(f"{where}: unknown key(s) {', '.join(unknown)} in [teacher.{name}]")
    source = sources[0]
    spec = dict(spec)
    if "zoo" in spec and (source != "robustbench" or spec["zoo"] not in RB_ZOOS):
        raise UserError(
            f"{where}: [teacher.{name}] zoo is a robustbench teacher's leaderboard, one of "
            f"{', '.join(RB_ZOOS)}; got {spec['zoo']!r}"
        )
    if "sha256" in spec:
        if source == "train":
            raise UserError(
                f"{where}: [teacher.{name}] is trained by the grid; sha256 is for checkpoint, "
                "url and robustbench teachers"
            )
        spec["sha256"] = check_sha256(spec["sha256"], f"{where}: [teacher.{name}] sha256")
    if source == "url":
        url = spec["url"]
        if not isinstance(url, str) or urlparse(url).scheme not in URL_SCHEMES:
            raise UserError(
                f"{where}: [teacher.{name}] url must start with "
                f"{', '.join(s + '://' for s in URL_SCHEMES)}, got {url!r}"
            )
        if "sha256" not in spec:
            raise UserError(f'{where}: [teacher.{name}] url needs sha256 = "<64 hex digits>"')
    return {"name": name, "model": spec["model"], "source": source, "spec": spec}


TeacherExpansion = tuple[TeacherRef, "RunSpec | None"]


def _trained_teacher(s: GridSettings, name: str, t: dict[str, Any]) -> TeacherExpansion:
    """``train = { method = "trades", ... }``: a run of the grid, trained before its students."""
    spec = t["spec"]
    recipe = dict(spec["train"]) if isinstance(spec["train"], dict) else None
    if recipe is None or "method" not in recipe:
        raise UserError(f'{s.where}: [teacher.{name}] train needs method = "pgd-at" or "trades"')
    method = recipe.pop("method")
    train_over = {k: recipe.pop(k) for k in list(recipe) if k in TRAIN_DEFAULTS}
    run = make_run(s, "teacher", method, method, recipe, t["model"], None, 0, train_over)
    return TeacherRef(name, t["model"], "run", run_id=run.run_id), run


def _checkpoint_teacher(s: GridSettings, name: str, t: dict[str, Any]) -> TeacherExpansion:
    """``checkpoint = "path"`` (relative to the grid file): its sha256 is part of the id."""
    spec = t["spec"]
    ckpt = Path(os.path.expanduser(str(spec["checkpoint"])))
    if not ckpt.is_absolute():
        ckpt = (s.path.parent / ckpt).resolve()
    if not is_file(ckpt):
        raise UserError(f"{s.where}: teacher {name!r} checkpoint not found: {ckpt}")
    digest = file_sha256(ckpt)
    if spec.get("sha256") and spec["sha256"] != digest:
        raise UserError(
            f"teacher {name!r} checkpoint {ckpt} has sha256 {digest}, expected {spec['sha256']}"
        )
    return TeacherRef(name, t["model"], "checkpoint", path=str(ckpt), sha256=digest), None


def _url_teacher(s: GridSettings, name: str, t: dict[str, Any]) -> TeacherExpansion:
    spec = t["spec"]
    return TeacherRef(name, t["model"], "url", url=spec["url"], sha256=spec["sha256"]), None


def _robustbench_teacher(s: GridSettings, name: str, t: dict[str, Any]) -> TeacherExpansion:
    """A pinned hash is part of the teacher's identity, as a checkpoint's is."""
    spec = t["spec"]
    ref = TeacherRef(
        name,
        t["model"],
        "robustbench",
        robustbench=spec["robustbench"],
        threat_model=spec.get("threat_model", "Linf"),
        sha256=spec.get("sha256"),
        zoo=spec.get("zoo"),
    )
    return ref, None


#: How each teacher source of ``[teacher.NAME]`` becomes a reference (and, for ``train``, a run).
TEACHER_EXPANDERS = {
    "train": _trained_teacher,
    "checkpoint": _checkpoint_teacher,
    "url": _url_teacher,
    "robustbench": _robustbench_teacher,
}


def expand_teachers(s: GridSettings, grid: Grid) -> dict[str, TeacherExpansion]:
    """Each listed teacher's reference; the runs of those the grid trains go to ``grid``."""
    refs = {}
    for name, t in s.teachers.items():
        ref, run = TEACHER_EXPANDERS[t["source"]](s, name, t)
        if run is not None:
            grid.teacher_runs[name] = run
        refs[name] = (ref, run)
    return refs
