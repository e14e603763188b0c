"""A grid's runs: their specs (config, id, dependencies), the grid they form, and how a run's
config is resolved from the grid's settings. Pure data: no torch here.

A teacher with a ``train`` recipe and a transfer surrogate are runs like the students: a
student names the teacher run it distils from (``needs``) and the surrogate runs its transfer
evaluation attacks with (``surrogates``), and they run before it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.grid import suites
from harness.schema import (
    TEACHER_ROLE,
    Dataset,
    Evaluation,
    RunConfig,
    TeacherRef,
    Threat,
    Training,
    Transfer,
)
from harness.utils.errors import UserError

#: What a student distils from: one teacher, none, or one per role of its method (in the
#: method's order of ``teacher_roles``).
Teachers = TeacherRef | Mapping[str, TeacherRef] | None


def method_roles(method_name: str) -> tuple[str, ...]:
    """The teacher roles a method declares (``teacher_roles``, e.g. MTARD's ``natural`` and
    ``robust``); ``()`` for a method with one teacher or none."""
    from harness.registry import METHODS

    return tuple(getattr(METHODS.get(method_name), "teacher_roles", ()) or ())


@dataclass
class RunSpec:
    """One run: ``config`` is its resolved, typed configuration; ``needs`` the teacher run a
    single-teacher student distils from, ``surrogates`` the surrogate runs its transfer
    evaluation attacks with. :attr:`teacher_needs` has the teacher runs of every role."""

    run_id: str
    config: RunConfig
    needs: str | None = None
    surrogates: tuple[str, ...] = ()

    @property
    def kind(self) -> str:
        return self.config.kind

    @property
    def teacher_needs(self) -> tuple[str, ...]:
        """The teacher runs of the grid this run distils from: ``needs`` and, for a method with
        several teacher roles, the run of each role's teacher the grid trains (each once)."""
        ids = [self.needs] if self.needs else []
        ids += [ref.run_id for _, ref in self.config.teachers if ref.source == "run"]
        return tuple(dict.fromkeys(i for i in ids if i))

    @property
    def requires(self) -> tuple[str, ...]:
        """Every run that must be complete before this one starts."""
        return self.teacher_needs + self.surrogates

    @classmethod
    def of(cls, config: RunConfig, needs: str | None = None) -> RunSpec:
        return cls(run_id=config.run_id, config=config, needs=needs)


@dataclass
class Grid:
    name: str
    path: Path
    raw: dict[str, Any]
    teacher_runs: dict[str, RunSpec] = field(default_factory=dict)
    runs: list[RunSpec] = field(default_factory=list)
    #: The transfer surrogates the runs' evaluation needs, by run id (in first-needed order).
    surrogate_runs: dict[str, RunSpec] = field(default_factory=dict)
    #: ``deterministic = true``: bit-repeatable arithmetic (how runs are computed, not part of
    #: their ids; ``bench run --deterministic`` asks for it too).
    deterministic: bool = False

    def prerequisites(self) -> list[RunSpec]:
        """The teacher and surrogate runs the (selected) students need, teachers first: what
        runs before them, what ``bench plan`` and ``bench status`` list above them."""
        needed = {r for spec in self.runs for r in spec.requires}
        teachers = [r for r in self.teacher_runs.values() if r.run_id in needed]
        return teachers + [r for r in self.surrogate_runs.values() if r.run_id in needed]


@dataclass(frozen=True)
class GridSettings:
    """A grid file read and checked, with the selection applied: what runs are expanded from."""

    name: str
    path: Path
    raw: dict[str, Any]
    select_on: str
    dataset: Dataset
    threat: Threat
    train: Training
    evaluation: Evaluation
    seeds: list[int]
    methods: list[str]
    students: list[str]
    #: name → its checked ``[teacher.NAME]`` table (:func:`_teacher_source`), in listed order.
    teachers: dict[str, dict[str, Any]]
    epochs: int | None
    teacher_epochs: int | None
    deterministic: bool
    #: ``--teacher NAME``: only runs distilling from NAME (in any role).
    only_teacher: str | None = None

    @property
    def where(self) -> str:
        return str(self.path)


def make_run(
    s: GridSettings,
    kind: str,
    label: str,
    method_name: str,
    hparams: dict[str, Any],
    model: str,
    teacher: Teachers,
    seed: int,
    train_over: dict[str, Any],
    needs: str | None = None,
) -> RunSpec:
    """A teacher or student run of the grid: its schedule is the grid's ``[train]`` with the
    method's overrides, shortened by ``--epochs`` (``--teacher-epochs`` for a teacher)."""
    length = s.teacher_epochs if kind == "teacher" else s.epochs
    train = Training.from_table(
        {**s.train.to_json(), **train_over}, s.where, f"method.{method_name}.train"
    )
    config = resolve_run(
        kind,
        label,
        method_name,
        {**s.threat.to_json(), **hparams},
        model,
        teacher,
        seed,
        train.shortened(length),
        full_epochs=train.epochs,
        dataset=s.dataset,
        evaluation=s.evaluation,
        select_on=s.select_on,
        grid_name=s.name,
    )
    return RunSpec.of(config, needs)


def resolve_run(
    kind: str,
    label: str,
    method_name: str,
    hparams: dict[str, Any],
    model: str,
    teacher: Teachers,
    seed: int,
    train: Training,
    *,
    full_epochs: int,
    dataset: Dataset,
    evaluation: Evaluation,
    select_on: str = "val",
    grid_name: str | None = None,
) -> RunConfig:
    """A run's config, its method's hyperparameters resolved (defaults filled, values checked).

    ``teacher``: a method with teacher roles takes a mapping with exactly its roles (kept in
    the method's order, which the run id's ``+``-joined names follow); any other one teacher."""
    from harness.registry import METHODS

    m = METHODS.create(method_name, **hparams)
    if m.needs_teacher and not teacher:
        raise UserError(f"method {method_name!r} needs a teacher, and grid {grid_name} has none")
    roles = method_roles(method_name)
    if isinstance(teacher, Mapping):
        if sorted(teacher) != sorted(roles):
            raise UserError(
                f"method {method_name!r} takes teachers of roles {', '.join(roles) or '(none)'}, "
                f"got {', '.join(teacher) or '(none)'}"
            )
        teachers = tuple((role, teacher[role]) for role in roles)
    elif roles and teacher is not None:
        raise UserError(
            f"method {method_name!r} needs one teacher per role ({', '.join(roles)}), got one"
        )
    else:
        teachers = ((TEACHER_ROLE, teacher),) if teacher is not None else ()
    return RunConfig(
        kind=kind,
        method=method_name,
        hparams=m.hparams,
        dataset=dataset,
        model=model,
        seed=seed,
        train=train,
        evaluation=evaluation,
        full_epochs=full_epochs,
        select_on=select_on,
        variant=label if label != method_name else None,
        teachers=teachers,
        grids=(grid_name,) if grid_name else (),
    )


def surrogate_run(
    model: str, dataset: Dataset | dict[str, Any], train: Training | dict[str, Any]
) -> RunSpec:
    """The naturally trained surrogate ``model`` of the transfer evaluation on ``dataset``.

    A surrogate selects its checkpoint on the held-out split, so where the students' data holds
    out nothing (``val_fraction`` 0, selection on test) it keeps the loader's default split.
    Its id depends on the data set and the schedule only: every grid on them shares it.
    """
    dataset = dataset if isinstance(dataset, Dataset) else Dataset.from_json(dataset)
    train = train if isinstance(train, Training) else Training.from_json(train)
    train = train.replace(select_steps=0, swa=False)  # a plain naturally trained network
    if dataset.options.get("val_fraction") == 0:
        options = {k: v for k, v in dataset.options.items() if k != "val_fraction"}
        dataset = Dataset(dataset.name, options)
    config = resolve_run(
        "surrogate",
        "natural",
        "natural",
        {},
        model,
        None,
        0,
        train,
        full_epochs=train.epochs,
        dataset=dataset,
        evaluation=Evaluation({"clean": None}),
    )
    return RunSpec.of(config)


def surrogate_runs(dataset: Dataset, transfer: Transfer) -> list[RunSpec]:
    """The surrogate runs a transfer evaluation on ``dataset`` attacks with, in its order."""
    return [surrogate_run(model, dataset, transfer.train) for model in transfer.surrogates]


def default_transfer(config: RunConfig) -> Transfer:
    """The transfer evaluation ``bench eval --suite transfer`` gives a run whose grid has none:
    the paper's surrogates and attacks under the run's threat model, trained on the run's
    schedule (an external model, which has none, gets 100 epochs with milestones 50, 75)."""
    threat = config.threat.to_json()
    attacks = {
        n: suites.resolve(n, suites.TRANSFER_ATTACKS[n], threat) for n in suites.TRANSFER_DEFAULT
    }
    train = config.train
    if not train.epochs:  # an external model: no schedule of its own to borrow
        train = Training(epochs=100, milestones=(50, 75))
    return Transfer(tuple(suites.SURROGATES), attacks, train)


def expand_surrogates(grid: Grid) -> None:
    """Each run with a transfer evaluation needs its surrogates: they become runs of the grid
    (trained once, before the students), and each student names those it needs."""
    for i, spec in enumerate(grid.runs):
        transfer = spec.config.evaluation.transfer
        if transfer is None:
            continue
        needed = surrogate_runs(spec.config.dataset, transfer)
        for surrogate in needed:
            grid.surrogate_runs.setdefault(surrogate.run_id, surrogate)
        grid.runs[i] = RunSpec(
            spec.run_id, spec.config, spec.needs, tuple(s.run_id for s in needed)
        )


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
