"""The run config as types: threat model, training schedule, teacher reference, and the run.

One resolved run is one frozen :class:`RunConfig`: the grid builds it (``harness.grid.load``),
``bench eval`` builds it for a checkpoint or RobustBench model (``harness.execution.external``),
the runner, the executors and the store writer read it by attribute. Its JSON form
(:meth:`RunConfig.to_json`) is what ``config.json`` holds and what the run id hashes; it is the
nested dict earlier versions built by hand, key for key, so stores written by them keep their
run ids (``tests/test_run_ids.py``). :meth:`RunConfig.from_json` reads it back.

The defaults, the unknown-key checks and the choices the CLI offers all come from here:
:data:`THREAT_DEFAULTS` (also the methods' threat hyperparameters), :data:`TRAIN_DEFAULTS`
(also :class:`harness.training.train.TrainConfig`'s), :data:`SELECT_ON`, :data:`TEACHER_SOURCES`.

Teachers are held by role (:attr:`RunConfig.teachers`): today every distilling method has one
teacher, of role :data:`TEACHER_ROLE`, whose JSON form is ``"teacher": {...}`` as it always
was. A method that distils from several (MTARD: a natural and a robust teacher) can name its
roles without changing the id of any single-teacher run: several roles are written as
``"teachers": {role: {...}}`` and their names joined with ``+`` in the run id.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from harness.utils.errors import UserError
from harness.utils.values import coerce, config_hash

#: Where a run selects its best checkpoint: the held-out validation split, or the test set (the
#: DGAD paper's protocol). The grid key ``select_on``, ``bench run --select-on`` and the trainer.
SELECT_ON = ("val", "test")
#: Where a teacher's weights come from: ``[teacher.NAME]`` names exactly one of these.
TEACHER_SOURCES = ("train", "checkpoint", "robustbench", "url")
#: The role of the one teacher every distilling method has today.
TEACHER_ROLE = "teacher"
#: Kinds of runs the grid expands, and kinds ``bench eval`` creates for models from elsewhere.
GRID_KINDS = ("student", "teacher", "surrogate")
EXTERNAL_KINDS = ("checkpoint", "robustbench")
#: Seeds are 0 <= seed < 2**31: every RNG API (torch, numpy, random, CUDA) takes them.
SEED_RANGE = (0, 2**31 - 1)


def _table(cls: type, given: Mapping[str, Any], where: str, table: str) -> dict[str, Any]:
    """``given`` checked against ``cls``'s fields (unknown keys refused, each value coerced to
    its default's type), with the defaults filled in."""
    defaults = cls.defaults()
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise UserError(
            f"{where}: unknown key(s) {', '.join(unknown)} in [{table}]; "
            f"valid: {', '.join(sorted(defaults))}"
        )
    out = {}
    for key, default in defaults.items():
        value = given.get(key, default)
        if isinstance(default, list):
            if not isinstance(value, list) or not all(
                isinstance(m, int) and not isinstance(m, bool) and m > 0 for m in value
            ):
                raise UserError(f"{where}: [{table}] {key} must be a list of positive integers")
            out[key] = sorted(value)
        else:
            out[key] = coerce(value, default, f"{where}: [{table}] {key}")
    return out


@dataclass(frozen=True)
class Threat:
    """The L-inf threat model a run trains against (and its white-box evaluation uses)."""

    eps: float = 8 / 255
    step_size: float = 2 / 255
    steps: int = 10

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        return {f.name: f.default for f in fields(cls)}

    @classmethod
    def from_table(cls, given: Mapping[str, Any], where: str) -> Threat:
        """A grid's ``[threat]`` table, checked: a bad value fails before any run starts."""
        threat = _table(cls, given, where, "threat")
        for key in ("eps", "step_size"):
            if not 0.0 <= threat[key] <= 1.0:
                raise UserError(
                    f"{where}: [threat] {key} = {threat[key]:g} is outside [0, 1]; inputs are in "
                    f'[0,1], so write {key} = "{threat[key]:g}/255"'
                )
        if not 0 <= threat["steps"] <= 100_000:
            raise UserError(
                f"{where}: [threat] steps must be in [0, 100000], got {threat['steps']}"
            )
        return cls(**threat)

    @classmethod
    def of(cls, hparams: Mapping[str, Any]) -> Threat:
        """The threat part of a method's resolved hyperparameters."""
        return cls(**{k: hparams[k] for k in cls.defaults()})

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


THREAT_DEFAULTS: dict[str, Any] = Threat.defaults()


@dataclass(frozen=True)
class Training:
    """The optimisation schedule: a grid's ``[train]`` table, resolved."""

    epochs: int = 200
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    nesterov: bool = False
    milestones: tuple[int, ...] = (100, 150)
    lr_gamma: float = 0.1
    select_steps: int = 10
    eval_batch_size: int = 256
    #: Keep a weight-averaged student from the first milestone on (:mod:`harness.training.swa`).
    swa: bool = False

    #: The least value of each number the trainer, the data loader and SGD accept (lr and
    #: lr_gamma must be > 0).
    MINIMA = {
        "epochs": 1,
        "batch_size": 1,
        "eval_batch_size": 1,
        "momentum": 0,
        "weight_decay": 0,
        "select_steps": 0,
    }
    #: The largest value of each integer: every integer of a config must fit the 64-bit integers
    #: of the SQLite index and the 32-bit ones of the libraries it reaches.
    MAXIMA = {
        "epochs": 100_000,
        "batch_size": 2**31 - 1,
        "eval_batch_size": 2**31 - 1,
        "select_steps": 100_000,
    }

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        out = {f.name: f.default for f in fields(cls)}
        return out | {"milestones": list(out["milestones"])}

    @classmethod
    def from_table(cls, given: Mapping[str, Any], where: str, table: str) -> Training:
        """A ``[train]`` table with its defaults, in the ranges the trainer and SGD accept."""
        train = _table(cls, given, where, table)
        for key, low in cls.MINIMA.items():
            if train[key] < low:
                raise UserError(f"{where}: [{table}] {key} must be >= {low}, got {train[key]!r}")
        for key, high in cls.MAXIMA.items():
            if train[key] > high:
                raise UserError(f"{where}: [{table}] {key} must be <= {high}, got {train[key]!r}")
        if any(m > cls.MAXIMA["epochs"] for m in train["milestones"]):
            raise UserError(
                f"{where}: [{table}] milestones must be <= {cls.MAXIMA['epochs']} (the most epochs)"
            )
        for key in ("lr", "lr_gamma"):
            if not train[key] > 0:
                raise UserError(f"{where}: [{table}] {key} must be > 0, got {train[key]!r}")
        if train["nesterov"] and not train["momentum"] > 0:
            raise UserError(f"{where}: [{table}] nesterov = true needs momentum > 0")
        if train["swa"] and not any(m < train["epochs"] for m in train["milestones"]):
            raise UserError(
                f"{where}: [{table}] swa = true averages from the first milestone on: it needs "
                f"a milestone below epochs ({train['epochs']})"
            )
        return cls.from_json(train)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Training:
        """The schedule in ``data`` (other keys, such as a run's ``seed``, ignored)."""
        known = {k: data[k] for k in cls.defaults() if k in data}
        if "milestones" in known:
            known["milestones"] = tuple(known["milestones"])
        return cls(**known)

    def replace(self, **changes: Any) -> Training:
        if "milestones" in changes:
            changes["milestones"] = tuple(changes["milestones"])
        return dataclasses.replace(self, **changes)

    def shortened(self, length: int | None) -> Training:
        """The schedule run for ``length`` epochs, its milestones scaled to the same fractions."""
        if length is None or length == self.epochs:
            return self
        full = self.epochs
        scaled = sorted(
            {
                max(1, round(m * length / full))
                for m in self.milestones
                if round(m * length / full) < length
            }
        )
        return self.replace(epochs=length, milestones=scaled)

    def to_json(self) -> dict[str, Any]:
        """The schedule as JSON; ``swa`` only when on, so that every config written before it
        existed keeps its form, and its run its id."""
        out = dataclasses.asdict(self) | {"milestones": list(self.milestones)}
        if not out["swa"]:
            del out["swa"]
        return out


TRAIN_DEFAULTS: dict[str, Any] = Training.defaults()


@dataclass(frozen=True)
class TeacherRef:
    """Where a teacher's weights come from: a run of the grid (``source = "run"``), a
    checkpoint file (its sha256 is part of the student's id), a URL pinned by sha256, or
    RobustBench by name (with an optional pin)."""

    name: str
    model: str
    source: str
    run_id: str | None = None
    path: str | None = None
    url: str | None = None
    robustbench: str | None = None
    threat_model: str | None = None
    sha256: str | None = None
    zoo: str | None = None  # a RobustBench model's leaderboard, where the data set is another

    #: The keys of each source's JSON form besides name, model and source (``sha256`` of a
    #: RobustBench model only when pinned, its ``zoo`` only when given).
    KEYS = {
        "run": ("run_id",),
        "checkpoint": ("path", "sha256"),
        "url": ("url", "sha256"),
        "robustbench": ("robustbench", "threat_model", "sha256", "zoo"),
    }
    OPTIONAL = ("sha256", "zoo")

    def to_json(self) -> dict[str, Any]:
        out = {"name": self.name, "model": self.model, "source": self.source}
        for key in self.KEYS[self.source]:
            value = getattr(self, key)
            if value is not None or key not in self.OPTIONAL:
                out[key] = value
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TeacherRef:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass(frozen=True)
class Dataset:
    """A data set by registered name, with its loader options (``val_fraction``, ``path``)."""

    name: str
    options: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "options": dict(self.options)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Dataset:
        return cls(data["name"], dict(data.get("options", {})))


@dataclass(frozen=True)
class Transfer:
    """Transfer evaluation: attacks made on naturally trained surrogates, trained on ``train``."""

    surrogates: tuple[str, ...]
    attacks: Mapping[str, Any]
    train: Training

    def to_json(self) -> dict[str, Any]:
        return {
            "surrogates": list(self.surrogates),
            "attacks": dict(self.attacks),
            "train": self.train.to_json(),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Transfer:
        return cls(
            tuple(data["surrogates"]), dict(data["attacks"]), Training.from_json(data["train"])
        )


@dataclass(frozen=True)
class Evaluation:
    """The attacks a run is evaluated with (name → attack config, ``None`` for clean)."""

    attacks: Mapping[str, Any] = field(default_factory=dict)
    transfer: Transfer | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"attacks": dict(self.attacks)}
        if self.transfer is not None:
            out["transfer"] = self.transfer.to_json()
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Evaluation:
        transfer = data.get("transfer")
        return cls(
            dict(data.get("attacks", {})), Transfer.from_json(transfer) if transfer else None
        )


def method_label(config: Mapping[str, Any]) -> str:
    """A run's label from its JSON form: the variant's name, else the method's."""
    method = config["method"]
    return method.get("variant") or method["name"]


@dataclass(frozen=True)
class RunConfig(Mapping):
    """One resolved run. Read it by attribute; its JSON form (:meth:`to_json`) is also what
    ``config[key]`` gives, for code that reads configs back from the store the same way."""

    kind: str
    method: str
    hparams: Mapping[str, Any]
    dataset: Dataset
    model: str
    seed: int
    train: Training
    evaluation: Evaluation
    full_epochs: int
    select_on: str = "val"
    variant: str | None = None
    teachers: tuple[tuple[str, TeacherRef], ...] = ()
    #: Where an external model's weights come from (``bench eval`` of a file or RobustBench).
    source: Mapping[str, Any] | None = None
    grids: tuple[str, ...] = ()

    # -- derived ---------------------------------------------------------------------------------
    @property
    def label(self) -> str:
        """The variant's name, else the method's: what tables and run ids call the run."""
        return self.variant or self.method

    @property
    def threat(self) -> Threat:
        return Threat.of(self.hparams)

    @property
    def teacher(self) -> TeacherRef | None:
        """The one teacher (role :data:`TEACHER_ROLE`), ``None`` for a teacher-free run."""
        roles = dict(self.teachers)
        if set(roles) - {TEACHER_ROLE}:
            raise ValueError(f"run has teachers of roles {', '.join(roles)}, not one teacher")
        return roles.get(TEACHER_ROLE)

    @property
    def teacher_name(self) -> str:
        """The teacher's name in the run id: ``none`` without one, names joined by ``+``."""
        return "+".join(ref.name for _, ref in self.teachers) or "none"

    @property
    def external(self) -> bool:
        return self.kind in EXTERNAL_KINDS

    @property
    def schedule(self) -> str:
        if self.external:
            return "none"
        epochs, full = self.train.epochs, self.full_epochs
        return "short" if epochs < full else "long" if epochs > full else "full"

    @property
    def run_id(self) -> str:
        """The store's key: a readable head and the hash of the JSON form (without ``grids``,
        which only says where the run is listed; with it, empty, for an external model)."""
        arch = self.model.replace(":", "-")  # timm:resnet18 -> timm-resnet18 (a folder name)
        if self.external:
            return f"eval-{arch}-{self.dataset.name}-{config_hash(self.to_json())}"
        body = {k: v for k, v in self.to_json().items() if k != "grids"}
        head = f"{self.label}-{self.dataset.name}-{arch}-{self.teacher_name}-s{self.seed}"
        return f"{head}-{config_hash(body)}"

    def replace(self, **changes: Any) -> RunConfig:
        return dataclasses.replace(self, **changes)

    # -- JSON form -------------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        """What ``config.json`` holds: the shape every earlier version wrote."""
        method = {"name": self.method, "hparams": dict(self.hparams)}
        if self.variant is not None:
            method["variant"] = self.variant
        if self.external:
            train = {"epochs": self.train.epochs, "eval_batch_size": self.train.eval_batch_size}
        else:
            train = self.train.to_json() | {"select_on": self.select_on, "seed": self.seed}
        out = {
            "kind": self.kind,
            "method": method,
            "dataset": self.dataset.to_json(),
            "model": self.model,
            "teacher": None,
            "seed": self.seed,
            "train": train,
            "eval": self.evaluation.to_json(),
            "full_epochs": self.full_epochs,
            "schedule": self.schedule,
            "grids": list(self.grids),
        }
        roles = [role for role, _ in self.teachers]
        if roles == [TEACHER_ROLE]:
            out["teacher"] = self.teachers[0][1].to_json()
        elif roles:
            out["teachers"] = {role: ref.to_json() for role, ref in self.teachers}
        if self.source is not None:
            out["source"] = dict(self.source)
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RunConfig:
        """A config read back from ``config.json`` (``data``, the split sizes a run observed,
        is not part of it)."""
        method, train = data["method"], data.get("train") or {}
        teachers: list[tuple[str, TeacherRef]] = []
        if data.get("teacher"):
            teachers.append((TEACHER_ROLE, TeacherRef.from_json(data["teacher"])))
        for role, ref in (data.get("teachers") or {}).items():
            teachers.append((role, TeacherRef.from_json(ref)))
        return cls(
            kind=data.get("kind", "student"),
            method=method["name"],
            hparams=dict(method.get("hparams", {})),
            dataset=Dataset.from_json(data["dataset"]),
            model=data["model"],
            seed=data.get("seed", 0),
            train=Training.from_json(train),
            evaluation=Evaluation.from_json(data.get("eval") or {}),
            full_epochs=data.get("full_epochs", train.get("epochs", 0)),
            select_on=train.get("select_on", "val"),
            variant=method.get("variant"),
            teachers=tuple(teachers),
            source=data.get("source"),
            grids=tuple(data.get("grids", ())),
        )

    # -- read-only mapping over the JSON form -----------------------------------------------------
    def __getitem__(self, key: str) -> Any:
        return self.to_json()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.to_json())

    def __len__(self) -> int:
        return len(self.to_json())

    __hash__ = None  # type: ignore[assignment]  # holds dicts


def as_json(config: RunConfig | Mapping[str, Any]) -> dict[str, Any]:
    """The JSON form of a typed config, or a config already in that form (read from a store)."""
    return config.to_json() if isinstance(config, RunConfig) else dict(config)
