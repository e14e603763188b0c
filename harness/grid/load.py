"""Grid files (``leaderboards/*.toml``) → runs with stable ids. Pure data: no torch here.

A grid names a data set, students, teachers, methods and seeds, a threat model, a training
schedule and the evaluation attacks; its keys mirror the ``bench run`` flags. Every
(method, teacher, student, seed) becomes one run whose id is a hash of its resolved config.
Teacher-free methods (PGD-AT, TRADES, MART) run once per (student, seed), not once per teacher.
A teacher with a ``train`` recipe is itself a run the grid executes first.
"""

from __future__ import annotations

import datetime
import inspect
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from harness.grid import suites
from harness.utils.errors import UserError
from harness.utils.names import check_name
from harness.utils.values import (
    check_sha256,
    coerce,
    config_hash,
    file_sha256,
    is_file,
    parse_number,
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

GRID_DIR = Path(__file__).resolve().parents[2] / "leaderboards"

TOP_KEYS = {
    "description",
    "dataset",
    "dataset_options",
    "students",
    "teachers",
    "methods",
    "seeds",
    "select_on",
    "threat",
    "train",
    "eval",
    "teacher",
    "method",
    "variant",
    "slurm",
    "deterministic",
}
TRAIN_DEFAULTS: dict[str, Any] = {
    "epochs": 200,
    "batch_size": 128,
    "lr": 0.1,
    "momentum": 0.9,
    "weight_decay": 5e-4,
    "nesterov": False,
    "milestones": [100, 150],
    "lr_gamma": 0.1,
    "select_steps": 10,
    "eval_batch_size": 256,
}
#: The least value of each [train] number the trainer, the data loader and SGD accept (lr and
#: lr_gamma must be > 0).
TRAIN_MINIMA = {
    "epochs": 1,
    "batch_size": 1,
    "eval_batch_size": 1,
    "momentum": 0,
    "weight_decay": 0,
    "select_steps": 0,
}
#: The largest value of each integer of [train]: every integer of a config must fit the
#: 64-bit integers of the SQLite index and the 32-bit ones of the libraries it reaches.
TRAIN_MAXIMA = {
    "epochs": 100_000,
    "batch_size": 2**31 - 1,
    "eval_batch_size": 2**31 - 1,
    "select_steps": 100_000,
}
#: Seeds are 0 <= seed < 2**31: every RNG API (torch, numpy, random, CUDA) takes them.
SEED_RANGE = (0, 2**31 - 1)
THREAT_DEFAULTS: dict[str, Any] = {"eps": 8 / 255, "step_size": 2 / 255, "steps": 10}
TEACHER_SOURCES = ("train", "checkpoint", "robustbench", "url")
URL_SCHEMES = ("https", "http", "file")


@dataclass
class RunSpec:
    """One run: ``config`` is the resolved, hashed configuration; ``needs`` the teacher run."""

    run_id: str
    config: dict[str, Any]
    needs: str | None = None

    @property
    def kind(self) -> str:
        return self.config["kind"]


@dataclass
class Grid:
    name: str
    path: Path
    raw: dict[str, Any]
    teacher_runs: dict[str, RunSpec] = field(default_factory=dict)
    runs: list[RunSpec] = field(default_factory=list)
    #: ``deterministic = true``: bit-repeatable arithmetic (how runs are computed, not part of
    #: their ids; ``bench run --deterministic`` asks for it too).
    deterministic: bool = False


def grid_path(name: str) -> Path:
    """A grid by name (``smoke`` → leaderboards/smoke.toml, or $BENCH_GRIDS) or by file path."""
    p = Path(name)
    try:
        if p.suffix == ".toml" or p.exists():
            if not p.is_file():
                raise UserError(f"grid file not found: {name}")
            return p
        for folder in [os.environ.get("BENCH_GRIDS"), GRID_DIR]:
            if folder and (Path(folder) / f"{name}.toml").is_file():
                return Path(folder) / f"{name}.toml"
    except OSError as exc:  # a name too long for the file system, a folder we may not read
        raise UserError(f"grid {name!r}: {exc.strerror}") from None
    raise UserError(f"unknown grid {name!r}; valid grids: {', '.join(list_grids()) or '(none)'}")


def list_grids() -> list[str]:
    names: set[str] = set()
    for folder in [os.environ.get("BENCH_GRIDS"), GRID_DIR]:
        if folder and Path(folder).is_dir():
            names.update(p.stem for p in Path(folder).glob("*.toml"))
    return sorted(names)


def read_toml(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        msg = str(exc)
        if "(at end of document)" in msg:
            last = len(path.read_text(errors="replace").splitlines())
            msg = msg.replace("(at end of document)", f"(at line {last}, end of document)")
        raise UserError(f"{path}: invalid TOML: {msg}") from None
    except UnicodeDecodeError:
        raise UserError(f"{path}: not a UTF-8 text file") from None
    except ValueError:  # tomllib refuses integers over 4300 digits with a bare ValueError
        raise UserError(f"{path}: invalid TOML: an integer with too many digits") from None
    except RecursionError:
        raise UserError(f"{path}: invalid TOML: arrays or tables nested too deeply") from None


def _no_dates(node: Any, where: str, key: str = "") -> None:
    """Refuse TOML dates and times: no grid key takes one, and a run's config must be JSON."""
    if isinstance(node, datetime.date | datetime.time):
        raise UserError(f"{where}: {key} = {node.isoformat()}: a grid takes no dates or times")
    if isinstance(node, dict):
        for k, value in node.items():
            _no_dates(value, where, f"{key}.{k}" if key else str(k))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            _no_dates(value, where, f"{key}[{i}]")


def _table(raw: dict[str, Any], key: str, where: str, name: str | None = None) -> dict[str, Any]:
    """``raw[key]`` (default empty), which must be a table; ``name`` is its ``[header]``."""
    value = raw.get(key, {})
    if not isinstance(value, dict):
        raise UserError(f"{where}: [{name or key}] must be a table, got {value!r}")
    return value


def _names(
    raw: dict[str, Any],
    key: str,
    where: str,
    default: list | None = None,
    allow_empty: bool = False,
    strings: bool = True,
) -> list:
    """``raw[key]`` as a list (a lone value is a list of one); ``strings``: of names."""
    given = value = raw.get(key, default)
    if value is None:
        raise UserError(f"{where}: missing key {key!r}")
    if isinstance(value, str | int):
        value = [value]
    if not isinstance(value, list) or not (value or allow_empty):
        raise UserError(f"{where}: {key!r} must be a non-empty list, got {value!r}")
    if strings and not all(isinstance(v, str) for v in value):
        raise UserError(f"{where}: {key!r} must be a list of names (strings), got {given!r}")
    return value


def _resolve_keys(
    given: dict[str, Any], defaults: dict[str, Any], where: str, table: str
) -> dict[str, Any]:
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise UserError(
            f"{where}: unknown key(s) {', '.join(unknown)} in [{table}]; "
            f"valid: {', '.join(sorted(defaults))}"
        )
    out = {}
    for key, default in defaults.items():
        value = given.get(key, default)
        if key == "milestones":
            if not isinstance(value, list) or not all(
                isinstance(m, int) and not isinstance(m, bool) and m > 0 for m in value
            ):
                raise UserError(
                    f"{where}: [{table}] milestones must be a list of positive integers"
                )
            out[key] = sorted(value)
        else:
            out[key] = coerce(value, default, f"{where}: [{table}] {key}")
    return out


def _train(given: dict[str, Any], where: str, table: str) -> dict[str, Any]:
    """A ``[train]`` table with its defaults, in the ranges the trainer and SGD accept.

    Checked here so that a bad value fails before any run starts, not after a teacher trained.
    """
    train = _resolve_keys(given, TRAIN_DEFAULTS, where, table)
    for key, low in TRAIN_MINIMA.items():
        if train[key] < low:
            raise UserError(f"{where}: [{table}] {key} must be >= {low}, got {train[key]!r}")
    for key, high in TRAIN_MAXIMA.items():
        if train[key] > high:
            raise UserError(f"{where}: [{table}] {key} must be <= {high}, got {train[key]!r}")
    if any(m > TRAIN_MAXIMA["epochs"] for m in train["milestones"]):
        raise UserError(
            f"{where}: [{table}] milestones must be <= {TRAIN_MAXIMA['epochs']} (the most epochs)"
        )
    for key in ("lr", "lr_gamma"):
        if not train[key] > 0:
            raise UserError(f"{where}: [{table}] {key} must be > 0, got {train[key]!r}")
    if train["nesterov"] and not train["momentum"] > 0:
        raise UserError(f"{where}: [{table}] nesterov = true needs momentum > 0")
    return train


def _threat(raw: dict[str, Any], where: str) -> dict[str, Any]:
    threat = _resolve_keys(_table(raw, "threat", where), THREAT_DEFAULTS, where, "threat")
    for key in ("eps", "step_size"):
        if not 0.0 <= threat[key] <= 1.0:
            raise UserError(
                f"{where}: [threat] {key} = {threat[key]:g} is outside [0, 1]; inputs are in "
                f'[0,1], so write {key} = "{threat[key]:g}/255"'
            )
    if not 0 <= threat["steps"] <= 100_000:
        raise UserError(f"{where}: [threat] steps must be in [0, 100000], got {threat['steps']}")
    return threat


def _eval_attacks(raw: dict[str, Any], threat: dict[str, Any], where: str) -> dict[str, Any]:
    spec = _table(raw, "eval", where)
    unknown = sorted(set(spec) - {"attacks", "transfer"})
    if unknown:
        raise UserError(
            f"{where}: unknown key(s) {', '.join(unknown)} in [eval]; valid: attacks, transfer"
        )
    attacks = spec.get("attacks", suites.WHITEBOX)  # the paper's protocol unless a grid says less
    if isinstance(attacks, list):
        out = {}
        for name in attacks:
            if not isinstance(name, str) or name not in suites.PRESETS:
                raise UserError(
                    f"{where}: unknown eval attack {name!r}; valid presets: "
                    f"{', '.join(suites.PRESETS)} (or a table [eval.attacks.NAME] attack = ...)"
                )
            out[name] = suites.PRESETS[name]
    elif isinstance(attacks, dict):
        out = {}
        for name, params in attacks.items():
            check_name(name, f"{where}: [eval.attacks] name")  # eval/<name>.pt in the store
            if not isinstance(params, dict) or "attack" not in params:
                raise UserError(f'{where}: [eval.attacks.{name}] needs attack = "<name>"')
            out[name] = dict(params)
    else:
        raise UserError(f"{where}: [eval] attacks must be a list of presets or a table")
    resolved = {}
    for name, params in out.items():
        if params is not None:
            params = {
                k: parse_number(v, f"{where}: eval {name}.{k}") if k in ("eps", "step_size") else v
                for k, v in params.items()
            }
        resolved[name] = suites.resolve(name, params, threat)
        if resolved[name] is not None:
            _check_attack(name, resolved[name], where)
    return resolved


def _check_attack(name: str, config: dict[str, Any], where: str) -> None:
    """Build the attack once: a bad parameter fails when the grid loads, not after training."""
    from harness.attacks.base import build_attack

    try:
        build_attack(config, seed=0)
    except UserError as exc:
        raise UserError(f"{where}: eval attack {name!r}: {exc}") from None
    except (TypeError, ValueError, ArithmeticError) as exc:
        raise UserError(f"{where}: eval attack {name!r}: {type(exc).__name__}: {exc}") from None


def _dataset(
    raw: dict[str, Any], where: str, override: str | None, select: str, grid_name: str
) -> dict[str, Any]:
    """The run's data set: name and loader options, with what is held out from train explicit.

    With ``select`` = "test" (the DGAD paper's protocol, and the official code's) nothing is held
    out unless the grid asks for it: ``val_fraction`` is resolved to 0 here, so the run's config
    says so and its id depends on it. With "val" the options stay as the grid gives them (the
    loaders' default split, 10 %), so those run ids are what they always were.

    A ``dataset_options`` value ``{ env = "NAME" }`` is read from the environment variable NAME;
    ``--dataset`` (``override``) replaces the grid's data set and options altogether.
    """
    from harness.registry import DATASETS

    options = dict(_table(raw, "dataset_options", where))
    name = raw.get("dataset")
    if override:
        name, _, arg = override.partition(":")
        options = {"path": arg} if arg else {}
    if not isinstance(name, str) or not name:
        raise UserError(f"{where}: missing key 'dataset'")
    for key, value in options.items():
        if isinstance(value, dict):
            options[key] = _from_env(value, key, name, where, grid_name)
    param = inspect.signature(DATASETS.get(name)).parameters.get("val_fraction")
    if select == "test" and param is not None:
        options.setdefault("val_fraction", 0.0)
    if select == "val" and param is not None and options.get("val_fraction", param.default) == 0:
        raise UserError(
            f"{where}: select_on = 'val' needs a validation split, and val_fraction = 0 holds "
            "out nothing; give val_fraction > 0 or select on 'test'"
        )
    return {"name": name, "options": options}


def _from_env(value: dict[str, Any], key: str, dataset: str, where: str, grid_name: str) -> Any:
    """``{ env = "NAME" }`` → the value of $NAME; unset: a one-line error naming both ways."""
    var = value.get("env")
    if set(value) != {"env"} or not isinstance(var, str) or not var:
        raise UserError(
            f'{where}: [dataset_options] {key} must be a value or {{ env = "NAME" }}, got {value!r}'
        )
    found = os.environ.get(var)
    if not found:
        hint = "npz:FILE" if dataset == "npz" else f"{dataset}:{key.upper()}"
        raise UserError(
            f"grid {grid_name} needs its data set's {key}: pass --dataset {hint} or set {var}"
        )
    return found


def _teacher_source(name: str, spec: Any, where: str) -> dict[str, Any]:
    check_name(name, f"{where}: teacher name")  # part of the run id, a folder name
    if not isinstance(spec, dict) or "model" not in spec:
        raise UserError(f'{where}: [teacher.{name}] needs model = "<model name>"')
    sources = [s for s in TEACHER_SOURCES if s in spec]
    if len(sources) != 1:
        raise UserError(
            f"{where}: [teacher.{name}] needs exactly one of {', '.join(TEACHER_SOURCES)}"
        )
    unknown = sorted(set(spec) - {"model", *TEACHER_SOURCES, "sha256", "threat_model"})
    if unknown:
        raise UserError(f"{where}: unknown key(s) {', '.join(unknown)} in [teacher.{name}]")
    source = sources[0]
    spec = dict(spec)
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


def load_grid(
    name: str,
    *,
    method: str | None = None,
    dataset: str | None = None,
    teacher: str | None = None,
    student: str | None = None,
    epochs: int | None = None,
    seeds: list[int] | None = None,
    select_on: str | None = None,
    teacher_epochs: int | None = None,
) -> Grid:
    """Read a grid file and expand it (with the CLI's overrides) into runs.

    ``epochs`` shortens (or lengthens) the students' schedule, ``teacher_epochs`` that of the
    teachers the grid trains: a student run on a short teacher is distilled from another model,
    so shortening a teacher is asked for on its own, and its label says so (:func:`schedule_note`).
    """
    from harness.registry import DATASETS, METHODS, MODELS  # names are checked before any work

    path = grid_path(name)
    raw = read_toml(path)
    where = str(path)
    _no_dates(raw, where)
    unknown = sorted(set(raw) - TOP_KEYS)
    if unknown:
        raise UserError(
            f"{where}: unknown key(s) {', '.join(unknown)}; valid: {', '.join(sorted(TOP_KEYS))}"
        )
    grid_name = check_name(path.stem, f"{where}: grid name")  # <store>/leaderboards/<name>.md
    select = select_on or raw.get("select_on", "val")
    if select not in ("val", "test"):
        raise UserError(f"{where}: select_on must be 'val' or 'test', got {select!r}")
    data = _dataset(raw, where, dataset, select, grid_name)
    threat = _threat(raw, where)
    base_train = _train(_table(raw, "train", where), where, "train")
    eval_attacks = _eval_attacks(raw, threat, where)
    transfer = _transfer(raw, threat, where)
    seed_list = seeds if seeds is not None else _names(raw, "seeds", where, [0], strings=False)
    if not all(isinstance(s, int) and not isinstance(s, bool) for s in seed_list):
        raise UserError(f"{where}: seeds must be integers, got {seed_list!r}")
    low, high = SEED_RANGE
    for seed in seed_list:
        if not low <= seed <= high:
            raise UserError(f"seed {seed} is out of range: seeds are integers in [{low}, {high}]")
    methods = [method] if method else _names(raw, "methods", where)
    students = [student] if student else _names(raw, "students", where)
    teacher_tables = _table(raw, "teacher", where)
    teacher_names = _names(raw, "teachers", where, [], allow_empty=True)
    for t in teacher_names:
        if t not in teacher_tables:
            raise UserError(f"{where}: teacher {t!r} is listed but has no [teacher.{t}] table")
    if teacher:
        if teacher not in teacher_tables:
            valid = ", ".join(teacher_tables) or "(none)"
            raise UserError(f"unknown teacher {teacher!r} in grid {grid_name}; valid: {valid}")
        teacher_names = [teacher]
    method_tables = _table(raw, "method", where)
    for flag, value in (("--epochs", epochs), ("--teacher-epochs", teacher_epochs)):
        if value is not None and not 1 <= value <= TRAIN_MAXIMA["epochs"]:
            raise UserError(f"{flag} must be in [1, {TRAIN_MAXIMA['epochs']}], got {value}")
    sources = {t: _teacher_source(t, teacher_tables[t], where) for t in teacher_names}

    DATASETS.get(data["name"])
    for model in students + [sources[t]["model"] for t in teacher_names]:
        if not isinstance(model, str):
            raise UserError(f"{where}: model names must be strings, got {model!r}")
        MODELS.get(model)
    determinism = raw.get("deterministic", False)
    if not isinstance(determinism, bool):
        raise UserError(f"{where}: deterministic must be true or false, got {determinism!r}")
    grid = Grid(name=grid_name, path=path, raw=raw, deterministic=determinism)

    def schedule(
        overrides: dict[str, Any], what: str, length: int | None
    ) -> tuple[dict[str, Any], int]:
        train = _train({**base_train, **overrides}, where, what)
        full = train["epochs"]
        if length is not None and length != full:
            train["milestones"] = sorted(
                {
                    max(1, round(m * length / full))
                    for m in train["milestones"]
                    if round(m * length / full) < length
                }
            )
            train["epochs"] = length
        train["select_on"] = select
        return train, full

    def make_run(
        kind: str,
        label: str,
        method_name: str,
        hparams: dict,
        model: str,
        teacher_ref: dict | None,
        seed: int,
        train_over: dict,
        needs: str | None,
    ) -> RunSpec:
        length = teacher_epochs if kind == "teacher" else epochs
        train, full = schedule(train_over, f"method.{method_name}.train", length)
        return run_spec(
            kind,
            label,
            method_name,
            {**threat, **hparams},
            model,
            teacher_ref,
            seed,
            train,
            full_epochs=full,
            dataset=data,
            eval_cfg={"attacks": eval_attacks, **transfer},
            grid_name=grid_name,
            needs=needs,
        )

    teacher_refs: dict[str, tuple[dict[str, Any], str | None]] = {}
    for tname in teacher_names:
        t = sources[tname]
        spec = t["spec"]
        if t["source"] == "train":
            recipe = dict(spec["train"]) if isinstance(spec["train"], dict) else None
            if recipe is None or "method" not in recipe:
                raise UserError(
                    f'{where}: [teacher.{tname}] train needs method = "pgd-at" or "trades"'
                )
            tmethod = recipe.pop("method")
            train_over = {k: recipe.pop(k) for k in list(recipe) if k in TRAIN_DEFAULTS}
            run = make_run(
                "teacher", tmethod, tmethod, recipe, t["model"], None, 0, train_over, None
            )
            grid.teacher_runs[tname] = run
            ref = {"name": tname, "model": t["model"], "source": "run", "run_id": run.run_id}
            teacher_refs[tname] = (ref, run.run_id)
        elif t["source"] == "checkpoint":
            ckpt = Path(os.path.expanduser(str(spec["checkpoint"])))
            if not ckpt.is_absolute():
                ckpt = (path.parent / ckpt).resolve()
            if not is_file(ckpt):
                raise UserError(f"{where}: teacher {tname!r} checkpoint not found: {ckpt}")
            digest = file_sha256(ckpt)
            if spec.get("sha256") and spec["sha256"] != digest:
                raise UserError(
                    f"teacher {tname!r} checkpoint {ckpt} has sha256 {digest}, "
                    f"expected {spec['sha256']}"
                )
            ref = {
                "name": tname,
                "model": t["model"],
                "source": "checkpoint",
                "path": str(ckpt),
                "sha256": digest,
            }
            teacher_refs[tname] = (ref, None)
        elif t["source"] == "url":
            ref = {
                "name": tname,
                "model": t["model"],
                "source": "url",
                "url": spec["url"],
                "sha256": spec["sha256"],
            }
            teacher_refs[tname] = (ref, None)
        else:  # a pinned hash is part of the teacher's identity, as a checkpoint's is
            ref = {
                "name": tname,
                "model": t["model"],
                "source": "robustbench",
                "robustbench": spec["robustbench"],
                "threat_model": spec.get("threat_model", "Linf"),
            } | ({"sha256": spec["sha256"]} if "sha256" in spec else {})
            teacher_refs[tname] = (ref, None)

    variants = _table(raw, "variant", where)
    for label in variants:
        check_name(label, f"{where}: variant name")  # part of the run id, a folder name
    for label in methods:
        check_name(label, f"{where}: method or variant")
        method_name, vparams, vtrain = _variant(label, variants, where)
        cls = METHODS.get(method_name)
        header = f"method.{method_name}"
        mtable = dict(_table(method_tables, method_name, where, header))
        train_over = {**_table(mtable, "train", where, f"{header}.train"), **vtrain}
        per_student = _table(mtable, "student", where, f"{header}.student")
        mtable = {k: v for k, v in mtable.items() if k not in ("train", "student")}
        for model in students:
            own = _table(per_student, model, where, f"{header}.student.{model}")
            hparams = {**mtable, **own, **vparams}
            for seed in seed_list:
                common = (label, method_name, hparams, model)
                if not cls.needs_teacher:
                    run = make_run("student", *common, None, seed, train_over, None)
                    grid.runs.append(run)
                    continue
                if not teacher_refs:
                    raise UserError(
                        f"method {label!r} needs a teacher, and grid {grid_name} lists none"
                    )
                for tname in teacher_names:
                    ref, needs = teacher_refs[tname]
                    grid.runs.append(make_run("student", *common, ref, seed, train_over, needs))
    return grid


def schedule_note(config: dict[str, Any]) -> str:
    """``short: 1/3 ep`` for a run on a shorter schedule than its grid's (``long: ...`` for a
    longer one), ``""`` on the grid's own schedule: what labels a short teacher everywhere."""
    epochs = (config.get("train") or {}).get("epochs")
    full = config.get("full_epochs")
    if not epochs or not full or epochs == full:
        return ""
    return f"{'short' if epochs < full else 'long'}: {epochs}/{full} ep"


def teacher_label(name: str, teacher_config: dict[str, Any] | None) -> str:
    """A teacher's name, and ``(short: 1/3 ep)`` when the grid trained it on a short schedule."""
    note = schedule_note(teacher_config or {})
    return f"{name} ({note})" if note else name


def _variant(
    label: str, variants: dict[str, Any], where: str
) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """``[variant.dgad-no-pcr] method = "dgad", pcr = false`` → ("dgad", {"pcr": False}, {}).

    A variant may carry its own ``train = {...}`` (e.g. a method's repository schedule): it
    overrides the method's ``train`` table, key by key; the other keys are hyperparameters.
    """
    if label not in variants:
        return label, {}, {}
    spec = variants[label]
    if not isinstance(spec, dict) or not isinstance(spec.get("method"), str):
        raise UserError(f'{where}: [variant.{label}] needs method = "<method name>"')
    params = {k: v for k, v in spec.items() if k not in ("method", "train")}
    train = _table(spec, "train", where, f"variant.{label}.train")
    return spec["method"], params, dict(train)


def run_spec(
    kind: str,
    label: str,
    method_name: str,
    hparams: dict[str, Any],
    model: str,
    teacher_ref: dict[str, Any] | None,
    seed: int,
    train: dict[str, Any],
    *,
    full_epochs: int,
    dataset: dict[str, Any],
    eval_cfg: dict[str, Any],
    grid_name: str | None = None,
    needs: str | None = None,
) -> RunSpec:
    """A run with its resolved config and the id derived from it."""
    from harness.registry import METHODS

    m = METHODS.create(method_name, **hparams)
    if m.needs_teacher and teacher_ref is None:
        raise UserError(f"method {method_name!r} needs a teacher, and grid {grid_name} has none")
    epochs = train["epochs"]
    config = {
        "kind": kind,
        "method": {"name": method_name, "hparams": m.hparams}
        | ({"variant": label} if label != method_name else {}),
        "dataset": dataset,
        "model": model,
        "teacher": teacher_ref,
        "seed": seed,
        "train": {**train, "seed": seed},
        "eval": eval_cfg,
        "full_epochs": full_epochs,
        "schedule": "short" if epochs < full_epochs else "long" if epochs > full_epochs else "full",
    }
    tname = (teacher_ref or {}).get("name", "none")
    run_id = f"{label}-{dataset['name']}-{model}-{tname}-s{seed}-{config_hash(config)}"
    config["grids"] = [grid_name] if grid_name else []
    return RunSpec(run_id=run_id, config=config, needs=needs)


def surrogate_run(model: str, dataset: dict[str, Any], train: dict[str, Any]) -> RunSpec:
    """The naturally trained surrogate ``model`` of the transfer evaluation on ``dataset``.

    A surrogate selects its checkpoint on the held-out split, so where the students' data holds
    out nothing (``val_fraction`` 0, selection on test) it keeps the loader's default split.
    """
    train = {**train, "select_steps": 0}
    options = dataset.get("options", {})
    if options.get("val_fraction") == 0:
        options = {k: v for k, v in options.items() if k != "val_fraction"}
        dataset = {**dataset, "options": options}
    return run_spec(
        "surrogate",
        "natural",
        "natural",
        {},
        model,
        None,
        0,
        train,
        full_epochs=train["epochs"],
        dataset=dataset,
        eval_cfg={"attacks": {"clean": None}},
    )


def _transfer(raw: dict[str, Any], threat: dict[str, Any], where: str) -> dict[str, Any]:
    """``[eval] transfer = true`` or ``[eval.transfer]`` → the transfer part of a run's config."""
    spec = _table(raw, "eval", where).get("transfer", False)
    if spec is False:
        return {}
    if spec is True:
        spec = {}
    if not isinstance(spec, dict):
        raise UserError(f"{where}: [eval] transfer must be true/false or a table")
    unknown = sorted(set(spec) - {"surrogates", "attacks", "epochs"})
    if unknown:
        raise UserError(f"{where}: unknown key(s) {', '.join(unknown)} in [eval.transfer]")
    from harness.registry import MODELS

    surrogates = _names(spec, "surrogates", f"{where}: [eval.transfer]", suites.SURROGATES)
    for model in surrogates:
        MODELS.get(model)
    names = _names(spec, "attacks", f"{where}: [eval.transfer]", suites.TRANSFER_DEFAULT)
    bad = [n for n in names if n not in suites.TRANSFER_ATTACKS]
    if bad:
        raise UserError(
            f"{where}: unknown transfer attack(s) {', '.join(bad)}; "
            f"valid: {', '.join(suites.TRANSFER_ATTACKS)}"
        )
    attacks = {n: suites.resolve(n, suites.TRANSFER_ATTACKS[n], threat) for n in names}
    base = _train(_table(raw, "train", where), where, "train")
    epochs = coerce(spec.get("epochs", base["epochs"]), 1, f"{where}: [eval.transfer] epochs")
    if epochs < 1:
        raise UserError(f"{where}: [eval.transfer] epochs must be >= 1, got {epochs}")
    train = {**base, "epochs": epochs, "milestones": [m for m in base["milestones"] if m < epochs]}
    return {"transfer": {"surrogates": surrogates, "attacks": attacks, "train": train}}
