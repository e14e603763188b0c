"""The run ids every shipped grid expands to, under the overrides the CLI offers.

``python tests/golden/run_ids.py`` writes ``tests/golden/run_ids.json``; ``tests/test_run_ids.py``
recomputes the same dump and compares it. The file was first written from the code before the
run config became typed (one schema module), so it pins that a store written then keeps its
run ids: students', teachers', transfer surrogates' (those a grid plans, and those
``bench eval --suite transfer`` trains) and ``bench eval``'s own ids of checkpoints and
RobustBench models. An override the grid refuses is recorded as its error line. ``requires``
pins, per case, what each run that waits for more than its one teacher waits for (the
teachers of a multi-teacher run, the transfer surrogates).

Nothing outside the repository is read: the synthetic grids (a URL teacher, a checkpoint
teacher) are written to a temporary folder, and a checkpoint's path is replaced by a
placeholder before its config is hashed (the id otherwise holds the folder's path).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
GOLDEN = HERE / "run_ids.json"
ROOT = HERE.parent.parent

#: Environment the shipped grids read (cifar10-mini's npz comes from $BENCH_CIFAR10_MINI).
ENV = {"BENCH_CIFAR10_MINI": "data/cifar10_mini.npz"}

#: The synthetic grids: every teacher source the shipped ones do not use.
SYNTHETIC = {
    "url-teacher": """
dataset = "digits"
students = ["tiny_cnn"]
teachers = ["remote"]
methods = ["pgd-at", "dgad"]
seeds = [0, 1]
[train]
epochs = 4
milestones = [2, 3]
[eval]
attacks = ["clean", "pgd10"]
transfer = { surrogates = ["tiny_cnn"], attacks = ["fgsm"], epochs = 2 }
[teacher.remote]
model = "small_cnn"
url = "https://example.org/teacher.pt"
sha256 = "SHA_AB"
""".replace("SHA_AB", "ab" * 32),
    "checkpoint-teacher": """
dataset = "digits"
students = ["tiny_cnn"]
teachers = ["local", "rb"]
methods = ["rslad", "trades"]
select_on = "test"
[threat]
eps = "4/255"
step_size = "1/255"
steps = 5
[train]
batch_size = 64
[teacher.local]
model = "small_cnn"
checkpoint = "teacher.pt"
[teacher.rb]
model = "small_cnn"
robustbench = "Chen2021LTD_WRN34_10"
sha256 = "SHA_CD"
""".replace("SHA_CD", "cd" * 32),
}


def overrides(raw: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The override combinations tried on a grid (its raw TOML decides some of them)."""
    select = raw.get("select_on", "val")
    out: dict[str, dict[str, Any]] = {
        "": {},
        "epochs=1": {"epochs": 1},
        "teacher_epochs=1": {"teacher_epochs": 1},
        "epochs=2,teacher_epochs=2": {"epochs": 2, "teacher_epochs": 2},
        f"select_on={'test' if select == 'val' else 'val'}": {
            "select_on": "test" if select == "val" else "val"
        },
        "student=resnet18": {"student": "resnet18"},
        "dataset=npz:data/other.npz": {"dataset": "npz:data/other.npz"},
        "seeds=1,7": {"seeds": [1, 7]},
        "epochs=1,teacher_epochs=1,select_on=test,seeds=2": {
            "epochs": 1,
            "teacher_epochs": 1,
            "select_on": "test",
            "seeds": [2],
        },
    }
    listed = set(raw.get("methods", []))
    for variant in raw.get("variant", {}):
        if variant not in listed:
            out[f"method={variant}"] = {"method": variant}
    teachers = raw.get("teachers", [])
    if len(teachers) > 1:
        out[f"teacher={teachers[-1]}"] = {"teacher": teachers[-1]}
    return out


def _ids(grid: Any, replace: dict[str, str]) -> dict[str, Any]:
    """A grid's teacher, student and surrogate ids (with ``needs``), and a hash of the JSON form
    of every config it expands to (``grids`` included: what config.json holds)."""
    from harness.grid.load import default_transfer, surrogate_run
    from harness.utils.values import canonical_json, config_hash

    def rid(spec: Any) -> str:
        return _placeholder_id(spec, replace) if replace else spec.run_id

    teachers = {name: rid(spec) for name, spec in sorted(grid.teacher_runs.items())}
    runs = [[rid(spec), spec.needs] for spec in grid.runs]
    planned, on_demand = set(), set()
    for spec in grid.runs:
        cfg = spec.config.to_json()
        transfer = cfg["eval"].get("transfer")
        eval_transfer = default_transfer(spec.config).to_json()
        for which, tcfg in (("planned", transfer), ("eval", eval_transfer)):
            if not tcfg:
                continue
            train = {**tcfg["train"], "select_on": "val"}
            for model in tcfg["surrogates"]:
                sid = surrogate_run(model, cfg["dataset"], train).run_id
                (planned if which == "planned" else on_demand).add(sid)
    planned_specs = {s.run_id for s in grid.surrogate_runs.values()}
    assert planned_specs == planned, "the grid's surrogate runs are those its transfer needs"
    configs = [spec.config.to_json() for spec in [*grid.teacher_runs.values(), *grid.runs]]
    text = canonical_json(configs)
    for old, new in replace.items():
        text = text.replace(json.dumps(old)[1:-1], new)
    return {
        "configs": config_hash(json.loads(text)),
        "teachers": teachers,
        "runs": runs,
        "surrogates": sorted(planned),
        "eval_surrogates": sorted(on_demand),
    }


def _placeholder_id(spec: Any, replace: dict[str, str]) -> str:
    """``spec``'s id with the config's local paths replaced (what it is on any machine)."""
    from harness.utils.values import canonical_json, config_hash

    text = canonical_json({k: v for k, v in spec.config.to_json().items() if k != "grids"})
    for old, new in replace.items():
        text = text.replace(json.dumps(old)[1:-1], new)
    head = spec.run_id.rsplit("-", 1)[0]
    return f"{head}-{config_hash(json.loads(text))}"


def _case(name: str, selection: dict[str, Any], replace: dict[str, str]) -> tuple[Any, Any]:
    """(the case's ids, or its error line; the dependencies :func:`_requires` pins)."""
    from harness.grid.load import load_grid
    from harness.utils.errors import UserError

    try:
        grid = load_grid(name, **selection)
    except UserError as exc:
        return f"error: {exc}".replace(str(Path(name).parent), "<grids>"), {}
    return _ids(grid, replace), _requires(grid, replace)


def _requires(grid: Any, replace: dict[str, str]) -> dict[str, list[str]]:
    """Run id → every run it waits for, for the runs that wait for more than their one
    ``needs`` (a multi-teacher student's teacher of each role, a student's transfer
    surrogates): the order a grid trains in, and the Slurm dependencies."""

    def rid(spec: Any) -> str:
        return _placeholder_id(spec, replace) if replace else spec.run_id

    ids = {spec.run_id: rid(spec) for spec in [*grid.teacher_runs.values(), *grid.runs]}
    ids |= {spec.run_id: spec.run_id for spec in grid.surrogate_runs.values()}
    return {
        rid(spec): [ids[r] for r in spec.requires]
        for spec in grid.runs
        if list(spec.requires) != ([spec.needs] if spec.needs else [])
    }


def external_ids() -> dict[str, str]:
    """``bench eval``'s ids of a RobustBench model and of a checkpoint file, and the ids of the
    surrogates ``bench eval --suite transfer`` trains for them."""
    from harness.execution.external import external_config
    from harness.grid.load import default_transfer, surrogate_run
    from harness.utils.values import config_hash

    out = {}
    cases = {
        "robustbench": ("Chen2021LTD_WRN34_10", {"robustbench": "Chen2021LTD_WRN34_10"}, {}),
        "checkpoint": (
            "resnet18",
            {"path": "<dir>/teacher.pt", "sha256": "ef" * 32},
            {"path": "data/x.npz"},
        ),
    }
    for kind, (model, source, options) in cases.items():
        dataset = {"name": "npz" if options else "cifar10", "options": options}
        typed = external_config(kind, model, source, dataset)
        config = typed.to_json()
        out[kind] = f"eval-{config['model']}-{dataset['name']}-{config_hash(config)}"
        assert typed.run_id == out[kind]
        transfer = default_transfer(typed).to_json()
        train = {**transfer["train"], "select_on": "val"}
        for s in transfer["surrogates"]:
            out[f"{kind}/surrogate/{s}"] = surrogate_run(s, config["dataset"], train).run_id
    return out


def dump() -> dict[str, Any]:
    """Every case: ``<grid>|<overrides>`` → its ids, or the one-line error it ends in."""
    import tomllib

    from harness.grid.load import GRID_DIR

    saved = {k: os.environ.get(k) for k in [*ENV, "BENCH_GRIDS"]}
    os.environ.update(ENV)
    os.environ.pop("BENCH_GRIDS", None)
    cases: dict[str, Any] = {}
    requires: dict[str, Any] = {}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / "teacher.pt").write_bytes(b"not a real checkpoint, only hashed")
            paths = {p.stem: (p, {}) for p in sorted(GRID_DIR.glob("*.toml"))}
            for stem, text in SYNTHETIC.items():
                path = Path(tmp) / f"{stem}.toml"
                path.write_text(text)
                paths[stem] = (path, {str(Path(tmp).resolve() / "teacher.pt"): "<dir>/teacher.pt"})
            for stem, (path, replace) in paths.items():
                raw = tomllib.loads(path.read_text())
                for label, selection in overrides(raw).items():
                    name = str(path) if replace or stem in SYNTHETIC else stem
                    ids, waits = _case(name, selection, replace)
                    cases[f"{stem}|{label}"] = ids
                    if waits:
                        requires[f"{stem}|{label}"] = waits
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return {"cases": cases, "external": external_ids(), "requires": requires}


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    GOLDEN.write_text(json.dumps(dump(), indent=1, sort_keys=True) + "\n")
    print(f"wrote {GOLDEN}")
