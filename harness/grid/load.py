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
import itertools
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.grid import suites
from harness.grid.runs import (
    Grid,
    GridSettings,
    RunSpec,
    default_transfer,
    expand_surrogates,
    make_run,
    method_roles,
    resolve_run,
    schedule_note,
    surrogate_run,
    surrogate_runs,
    teacher_label,
)
from harness.grid.teachers import (
    TEACHER_EXPANDERS,
    TeacherExpansion,
    expand_teachers,
    teacher_source,
)
from harness.schema import (
    SEED_RANGE,
    SELECT_ON,
    TEACHER_SOURCES,
    THREAT_DEFAULTS,
    TRAIN_DEFAULTS,
    Dataset,
    Evaluation,
    Threat,
    Training,
    Transfer,
)
from harness.utils.errors import UserError
from harness.utils.names import check_name
from harness.utils.resources import GRIDS, shipped
from harness.utils.values import coerce, parse_number

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

#: The shipped grids: ``leaderboards/`` of the repository, installed as package data.
GRID_DIR = shipped(GRIDS)

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
#: Kept under their old names: the least and largest values of each [train] number.
TRAIN_MINIMA = Training.MINIMA
TRAIN_MAXIMA = Training.MAXIMA


#: Importable from here too: the schema's defaults and the runs' types.
__all__ = [
    "SEED_RANGE",
    "TEACHER_EXPANDERS",
    "TEACHER_SOURCES",
    "THREAT_DEFAULTS",
    "TRAIN_DEFAULTS",
    "Grid",
    "RunSpec",
    "default_transfer",
    "resolve_run",
    "schedule_note",
    "surrogate_run",
    "surrogate_runs",
    "teacher_label",
]


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


def _eval_attacks(raw: dict[str, Any], threat: Threat, where: str) -> dict[str, Any]:
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
        resolved[name] = suites.resolve(name, params, threat.to_json())
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
) -> Dataset:
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
    return Dataset(name, options)


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


@dataclass(frozen=True)
class Selection:
    """What the command line narrows or changes in a grid (``bench run``'s flags)."""

    method: str | None = None
    dataset: str | None = None
    teacher: str | None = None
    student: str | None = None
    epochs: int | None = None
    seeds: list[int] | None = None
    select_on: str | None = None
    teacher_epochs: int | None = None


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

    The steps: read the file (:func:`read_grid`), check it and apply the selection
    (:func:`grid_settings`), expand the teachers through :data:`TEACHER_EXPANDERS`, then the
    students (:func:`expand_students`) and the surrogates their transfer evaluation needs.
    """
    path = grid_path(name)
    raw = read_grid(path)
    selection = Selection(
        method, dataset, teacher, student, epochs, seeds, select_on, teacher_epochs
    )
    settings = grid_settings(raw, path, selection)
    grid = Grid(name=settings.name, path=path, raw=raw, deterministic=settings.deterministic)
    refs = expand_teachers(settings, grid)
    expand_students(settings, grid, refs)
    expand_surrogates(grid)
    return grid


def read_grid(path: Path) -> dict[str, Any]:
    """The grid file's table: no dates, no unknown top-level key."""
    raw = read_toml(path)
    where = str(path)
    _no_dates(raw, where)
    unknown = sorted(set(raw) - TOP_KEYS)
    if unknown:
        raise UserError(
            f"{where}: unknown key(s) {', '.join(unknown)}; valid: {', '.join(sorted(TOP_KEYS))}"
        )
    return raw


def grid_settings(raw: dict[str, Any], path: Path, selection: Selection) -> GridSettings:
    """Every grid key checked (in the order a user meets the errors), the selection applied."""
    where = str(path)
    grid_name = check_name(path.stem, f"{where}: grid name")  # <store>/leaderboards/<name>.md
    select = selection.select_on or raw.get("select_on", "val")
    if select not in SELECT_ON:
        choices = " or ".join(map(repr, SELECT_ON))
        raise UserError(f"{where}: select_on must be {choices}, got {select!r}")
    data = _dataset(raw, where, selection.dataset, select, grid_name)
    threat = Threat.from_table(_table(raw, "threat", where), where)
    train = Training.from_table(_table(raw, "train", where), where, "train")
    evaluation = Evaluation(_eval_attacks(raw, threat, where), _transfer(raw, threat, train, where))
    seed_list = _seeds(raw, where, selection.seeds)
    methods = [selection.method] if selection.method else _names(raw, "methods", where)
    students = [selection.student] if selection.student else _names(raw, "students", where)
    teacher_names = _teacher_names(raw, where, grid_name, selection.teacher)
    _table(raw, "method", where)
    for flag, value in (
        ("--epochs", selection.epochs),
        ("--teacher-epochs", selection.teacher_epochs),
    ):
        if value is not None and not 1 <= value <= TRAIN_MAXIMA["epochs"]:
            raise UserError(f"{flag} must be in [1, {TRAIN_MAXIMA['epochs']}], got {value}")
    tables = _table(raw, "teacher", where)
    teachers = {t: teacher_source(t, tables[t], where) for t in teacher_names}
    _check_names(data, students + [t["model"] for t in teachers.values()], where)
    determinism = raw.get("deterministic", False)
    if not isinstance(determinism, bool):
        raise UserError(f"{where}: deterministic must be true or false, got {determinism!r}")
    return GridSettings(
        grid_name, path, raw, select, data, threat, train, evaluation, seed_list, methods,
        students, teachers, selection.epochs, selection.teacher_epochs, determinism,
        selection.teacher,
    )  # fmt: skip


def _seeds(raw: dict[str, Any], where: str, override: list[int] | None) -> list[int]:
    seed_list = (
        override if override is not None else _names(raw, "seeds", where, [0], strings=False)
    )
    if not all(isinstance(s, int) and not isinstance(s, bool) for s in seed_list):
        raise UserError(f"{where}: seeds must be integers, got {seed_list!r}")
    low, high = SEED_RANGE
    for seed in seed_list:
        if not low <= seed <= high:
            raise UserError(f"seed {seed} is out of range: seeds are integers in [{low}, {high}]")
    return seed_list


def _teacher_names(raw: dict[str, Any], where: str, grid_name: str, only: str | None) -> list[str]:
    """The teachers the grid lists (each with its table), or the one ``--teacher`` names."""
    tables = _table(raw, "teacher", where)
    names = _names(raw, "teachers", where, [], allow_empty=True)
    for t in names:
        if t not in tables:
            raise UserError(f"{where}: teacher {t!r} is listed but has no [teacher.{t}] table")
    if only:
        if only not in tables:
            valid = ", ".join(tables) or "(none)"
            raise UserError(f"unknown teacher {only!r} in grid {grid_name}; valid: {valid}")
        # a teacher only roles name (not listed) selects runs of multi-teacher methods only
        names = [only] if only in names else []
    return names


def _check_names(data: Dataset, models: list[Any], where: str) -> None:
    """The data set and every model are registered: names fail before any work."""
    from harness.registry import DATASETS, MODELS

    DATASETS.get(data.name)
    for model in models:
        if not isinstance(model, str):
            raise UserError(f"{where}: model names must be strings, got {model!r}")
        MODELS.get(model)


# -- students --------------------------------------------------------------------------------------
def expand_students(s: GridSettings, grid: Grid, refs: dict[str, TeacherExpansion]) -> None:
    """One run per (method or variant, student, seed), and per teacher for a distilling one
    (per combination of its roles' teachers for a method with teacher roles)."""
    from harness.registry import METHODS

    variants = _table(s.raw, "variant", s.where)
    for label in variants:
        check_name(label, f"{s.where}: variant name")  # part of the run id, a folder name
    expanded = dict(refs)  # the listed teachers and those roles name, each expanded once
    for label in s.methods:
        check_name(label, f"{s.where}: method or variant")
        method_name, hparams_of, train_over, role_names = _method_tables(s, label, variants)
        needs_teacher = METHODS.get(method_name).needs_teacher
        combos = role_teachers(s, grid, expanded, label, method_name, role_names)
        for model in s.students:
            for seed in s.seeds:
                common = (label, method_name, hparams_of(model), model)
                if combos is not None:
                    for combo in combos:
                        roles = {role: ref for role, (ref, _) in combo.items()}
                        grid.runs.append(make_run(s, "student", *common, roles, seed, train_over))
                    continue
                if not needs_teacher:
                    grid.runs.append(make_run(s, "student", *common, None, seed, train_over))
                    continue
                if not refs and s.only_teacher:  # --teacher selected a role's teacher only
                    continue
                if not refs:
                    raise UserError(
                        f"method {label!r} needs a teacher, and grid {s.name} lists none"
                    )
                for ref, run in refs.values():
                    needs = run.run_id if run is not None else None
                    student = make_run(s, "student", *common, ref, seed, train_over, needs)
                    grid.runs.append(student)


def _method_tables(
    s: GridSettings, label: str, variants: dict[str, Any]
) -> tuple[str, Any, dict[str, Any], dict[str, Any] | None]:
    """(method name, student model → its hyperparameters, train overrides, the ``teachers``
    role table or None) of a method or variant: ``[method.NAME]``, its ``student.MODEL``
    tables, then the variant's own keys (its ``teachers`` replaces the method's)."""
    from harness.registry import METHODS

    method_name, vparams, vtrain = _variant(label, variants, s.where)
    METHODS.get(method_name)  # an unknown method fails before its tables are read
    header = f"method.{method_name}"
    mtable = dict(_table(_table(s.raw, "method", s.where), method_name, s.where, header))
    train_over = {**_table(mtable, "train", s.where, f"{header}.train"), **vtrain}
    per_student = _table(mtable, "student", s.where, f"{header}.student")
    role_names = mtable.get("teachers")
    if "teachers" in vparams:
        role_names, header = vparams.pop("teachers"), f"variant.{label}"
    if role_names is not None and not isinstance(role_names, dict):
        raise UserError(
            f'{s.where}: [{header}] teachers must be a table role = "teacher name", '
            f"got {role_names!r}"
        )
    mtable = {k: v for k, v in mtable.items() if k not in ("train", "student", "teachers")}

    def hparams_of(model: str) -> dict[str, Any]:
        own = _table(per_student, model, s.where, f"{header}.student.{model}")
        return {**mtable, **own, **vparams}

    return method_name, hparams_of, train_over, role_names


def role_teachers(
    s: GridSettings,
    grid: Grid,
    refs: dict[str, TeacherExpansion],
    label: str,
    method_name: str,
    given: dict[str, Any] | None,
) -> list[dict[str, TeacherExpansion]] | None:
    """For a method with teacher roles, every combination of the teachers its grid names per
    role (``teachers = { natural = "t-nat", robust = ["t-at", "t-trades"] }`` in its method or
    variant table): one student run each. None for a method without roles.

    A role's teacher is any ``[teacher.NAME]`` of the grid, listed in ``teachers`` or not (a
    teacher only one role uses need not be every single-teacher method's teacher too); each is
    expanded once (:data:`TEACHER_EXPANDERS`), a trained one becoming a run of the grid.
    ``--teacher NAME`` keeps the combinations that use NAME in some role.
    """
    roles = method_roles(method_name)
    where = f"{s.where}: [method.{method_name}]" if label == method_name else f"{s.where}: {label}"
    if not roles:
        if given is not None:
            raise UserError(
                f"{where} teachers: method {method_name!r} has one teacher (no roles); "
                "list it in the grid's teachers"
            )
        return None
    wanted = ", ".join(f'{r} = "NAME"' for r in roles)
    if given is None:
        raise UserError(
            f"{where}: method {method_name!r} needs a teacher per role: teachers = {{ {wanted} }}"
        )
    unknown = sorted(set(given) - set(roles))
    missing = [r for r in roles if r not in given]
    if unknown or missing:
        what = f"unknown role(s) {', '.join(unknown)}" if unknown else ""
        what += "; " if unknown and missing else ""
        what += f"no teacher for role(s) {', '.join(missing)}" if missing else ""
        raise UserError(f"{where} teachers: {what}; {method_name}'s roles: {', '.join(roles)}")
    tables = _table(s.raw, "teacher", s.where)
    per_role = []
    for role in roles:
        names = given[role] if isinstance(given[role], list) else [given[role]]
        if not names or not all(isinstance(n, str) for n in names):
            raise UserError(f"{where} teachers: {role} must be a teacher name or a list of them")
        for name in names:
            if name not in tables:
                valid = ", ".join(tables) or "(none)"
                raise UserError(
                    f"{where} teachers: {role} = {name!r} has no [teacher.{name}] table; "
                    f"valid: {valid}"
                )
            if name not in refs:
                refs[name] = _expand_teacher(s, grid, name, tables[name])
        per_role.append([(role, name) for name in names])
    combos = [dict(c) for c in itertools.product(*per_role)]
    if s.only_teacher is not None:
        combos = [c for c in combos if s.only_teacher in c.values()]
    return [{role: refs[name] for role, name in c.items()} for c in combos]


def _expand_teacher(s: GridSettings, grid: Grid, name: str, table: Any) -> TeacherExpansion:
    """A teacher only a role names, checked and expanded as a listed one is."""
    t = teacher_source(name, table, s.where)
    _check_names(s.dataset, [t["model"]], s.where)
    ref, run = TEACHER_EXPANDERS[t["source"]](s, name, t)
    if run is not None:
        grid.teacher_runs.setdefault(name, run)
    return ref, run


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
    params = {k: v for k, v in spec.items() if k not in ("method", "train")}  # and teachers
    train = _table(spec, "train", where, f"variant.{label}.train")
    return spec["method"], params, dict(train)


def _transfer(raw: dict[str, Any], threat: Threat, base: Training, where: str) -> Transfer | None:
    """``[eval] transfer = true`` or ``[eval.transfer]`` → the transfer part of a run's config."""
    spec = _table(raw, "eval", where).get("transfer", False)
    if spec is False:
        return None
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
    attacks = {n: suites.resolve(n, suites.TRANSFER_ATTACKS[n], threat.to_json()) for n in names}
    epochs = coerce(spec.get("epochs", base.epochs), 1, f"{where}: [eval.transfer] epochs")
    if epochs < 1:
        raise UserError(f"{where}: [eval.transfer] epochs must be >= 1, got {epochs}")
    train = base.replace(epochs=epochs, milestones=[m for m in base.milestones if m < epochs])
    return Transfer(tuple(surrogates), attacks, train)
