"""Leaderboards from the store's SQLite index (read through pandas).

One table per (data set, teacher, student). A row is one configuration: the runs whose configs
differ only in the seed (the index's ``row_key``), as mean ± std over their seeds. Runs of one
method that differ in anything else (schedule, teacher checkpoint, hyperparameters, evaluation)
are separate rows, each labelled by what sets it apart (``dgad (short: 1/3 ep)``,
``dgad [gamma=10]``); a row's provenance also lists the hyperparameters its configuration sets
away from the method's defaults (``extra_passes=false``), whether or not another row differs.
A teacher the grid trained on a short schedule gets tables of its own, titled so. Teacher-free
methods (PGD-AT, TRADES, MART) appear in every teacher's table of their student, as the paper
prints them. A multi-teacher run (MTARD: a natural and a robust teacher) goes to the table of
its combination of teachers (``t-nat+t-at``), which has one column per role (``natural
teacher``, ``robust teacher``) in every format; a table without such rows has none.

Columns: Clean / FGSM / PGD / CW2 / AA, the transfer attacks, any extra attack a run was given
(``bench eval --attack pgd50``) and Worst (samples that survive every attack of the run's own
grid), in %. Beside Clean, PGD and AA, their worst-class accuracy (``Clean WC``, ``PGD WC``,
``AA WC``): the lowest per-class accuracy, as Fair-ARD and ABSLD report robust fairness; over
several seeds the mean ± std of each seed's worst class. A row whose runs were stored without
per-class accuracies shows none there, and the table's note names it. Rows are ranked by the
strongest attack every row of the table has, in the order of ``RANK_ORDER``; a row without an
attack of that order that another row has is marked with :data:`MARK` and named in the table's
note, never ordered silently. Each table also carries its threat model and each teacher's own
accuracy. One :class:`Table` feeds Markdown, CSV, LaTeX and
HTML (:mod:`harness.publishing.html`).
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
from tabulate import tabulate

from harness.grid import suites
from harness.grid.load import schedule_note, teacher_label
from harness.schema import TEACHER_ROLE
from harness.store.index import teacher_roles
from harness.store.listing import stale
from harness.store.queries import evaluations_of, failed_checks, run_configs
from harness.store.store import Store
from harness.utils.errors import UserError, one_line
from harness.utils.values import canonical_json, flatten

MAIN = {"clean": "Clean", "fgsm": "FGSM", "pgd10": "PGD", "cw2": "CW2", "autoattack": "AA"}
#: The attacks whose worst-class accuracy is a column beside their average (Fair-ARD, ABSLD).
WORST_CLASS = ("clean", "pgd10", "autoattack")
WC_PREFIX = "worst_class/"
#: Strongest first: a table is ranked by the first of these that every one of its rows has.
RANK_ORDER = ("autoattack", "worst_case", "pgd10", "fgsm", "clean")
#: Every grid's [threat] bounds perturbations in L∞ (CW2 is a column of its own, an L2 attack).
NORM = "L∞"
MARK = "†"
#: Marks a row with a run whose method code changed since it ran (:mod:`harness.method_code`).
STALE = "‡"
SCHEDULE_KEYS = ("train.epochs", "full_epochs", "schedule", "train.milestones")
#: Path prefixes left out of a label: ``method.hparams.gamma`` reads ``gamma``.
LABEL_PREFIXES = ("method.hparams.", "train.", "eval.attacks.")
LABEL_PARAMS = 3  # differences named in a label; more are counted
LABEL_ORDER = ("method.", "train.", "teacher.", "eval.", "dataset.")  # what a label names first


def wc_column(attack: str) -> str:
    """The key of ``attack``'s worst-class column: ``worst_class/pgd10``."""
    return WC_PREFIX + attack


def column_label(attack: str) -> str:
    """``transfer/resnet34/fgsm`` → ``resnet34 FGSM``; presets by their paper name;
    ``worst_class/pgd10`` → ``PGD WC``."""
    if attack.startswith(WC_PREFIX):
        return f"{column_label(attack[len(WC_PREFIX) :])} WC"
    if attack in MAIN:
        return MAIN[attack]
    if attack.startswith("transfer/"):
        _, surrogate, name = attack.split("/", 2)
        return f"{surrogate} {MAIN.get(name, name.upper())}"
    return {"worst_case": "Worst"}.get(attack, attack)


def fraction(value: float) -> str:
    """``8/255`` for 8/255, else the number: threat models read as they are written."""
    scaled = value * 255
    if value and abs(scaled - round(scaled)) < 1e-6:
        return f"{round(scaled)}/255"
    return f"{value:g}"


@dataclass
class Row:
    method: str
    runs: list[str]
    mean: dict[str, float]
    std: dict[str, float]
    flags: list[str]
    schedule: str
    provenance: dict[str, Any]
    best: set[str] = field(default_factory=set)
    label: str = ""  # the method and what sets this configuration apart from its other rows
    key: str = ""  # the seedless config hash all its runs share
    worst_of: tuple[str, ...] = ()  # the attacks its Worst column is over
    missing: list[str] = field(default_factory=list)  # RANK_ORDER columns it lacks
    stale: bool = False  # a run of it was trained by method code that has changed since
    #: Per attack of WORST_CLASS: the accuracy (%) of each class, mean over the seeds (None: a
    #: class without test images).
    per_class: dict[str, list[float | None]] = field(default_factory=dict)
    #: Attacks of WORST_CLASS it has, but whose runs were stored without per-class accuracies.
    no_per_class: list[str] = field(default_factory=list)
    #: A multi-teacher row's teacher per role (role → label); empty for one teacher or none.
    teachers: dict[str, str] = field(default_factory=dict)

    @property
    def seeds(self) -> int:
        return len(self.runs)

    @property
    def name(self) -> str:
        """The row's label, marked when it lacks an attack another row of its table has."""
        return (
            (self.label or self.method)
            + (f" {MARK}" if self.missing else "")
            + (f" {STALE}" if self.stale else "")
        )

    def has(self, column: str) -> bool:
        value = self.mean.get(column)
        return value is not None and not math.isnan(value)


@dataclass
class Teacher:
    """A teacher as a table shows it: what it is, and its own accuracy (%) where stored."""

    label: str
    model: str
    source: str
    accuracy: dict[str, float] = field(default_factory=dict)
    run: str | None = None  # the stored run those numbers come from

    def summary(self, columns: list[str] | None = None) -> str:
        """``small-pgdat (small_cnn, trained by the grid: pgd-at, 3 ep): Clean 92.10, PGD …``."""
        head = f"{self.label} ({self.model}, {self.source})"
        if not self.accuracy:
            return f"{head}: not evaluated"
        order = [c for c in (columns or []) if c in self.accuracy]
        order += [c for c in _column_order(set(self.accuracy)) if c not in order]
        return f"{head}: " + ", ".join(f"{column_label(c)} {self.accuracy[c]:.2f}" for c in order)


@dataclass
class Table:
    dataset: str
    teacher: str
    student: str
    columns: list[str]
    rows: list[Row]
    threat: dict[str, str] = field(default_factory=dict)  # norm, eps (as fractions)
    teachers: list[Teacher] = field(default_factory=list)
    #: The teacher roles of its multi-teacher rows: one column each (none on a single-teacher
    #: table, whose formats are as they always were).
    roles: list[str] = field(default_factory=list)

    @property
    def title(self) -> str:
        return f"{self.dataset}: {self.teacher} → {self.student}"

    @property
    def rank_key(self) -> str | None:
        """The column the rows are ranked by (see :func:`rank_column`)."""
        return rank_column(self.columns, self.rows)[0]

    @property
    def ranked_on_common(self) -> bool:
        """Whether every row has the ranking column (else the rows without it come last)."""
        return rank_column(self.columns, self.rows)[1]

    @property
    def threat_text(self) -> str:
        if not self.threat:
            return ""
        return f"{self.threat['norm']}, ε = {self.threat['eps']}"

    def notes(self) -> list[str]:
        """What the ranking rests on and which rows lack what, in words (every format says it)."""
        key = self.rank_key
        if key is None:
            return []
        name = column_label(key)
        if self.ranked_on_common:
            out = [f"Ranked by {name}, the strongest attack every row was evaluated with."]
        else:
            out = [
                f"Ranked by {name}, which not every row was evaluated with: rows without it "
                f"come last, unranked ({MARK})."
            ]
        lacking: dict[str, list[str]] = {}
        for row in self.rows:
            for column in row.missing:
                lacking.setdefault(column, []).append(row.label or row.method)
        for column in [c for c in RANK_ORDER if c in lacking]:
            out.append(
                f"{MARK} not evaluated with {column_label(column)}: {', '.join(lacking[column])}."
            )
        stale = [row.label or row.method for row in self.rows if row.stale]
        if stale:
            out.append(
                f"{STALE} stale: the method's code changed since these runs were trained "
                f"(bench run --force reruns them): {', '.join(stale)}."
            )
        old = [r.label or r.method for r in self.rows if r.no_per_class]
        if old:
            out.append(
                f"No worst-class accuracy (stored before per-class accuracies were kept; "
                f"bench eval RUN --suite config adds them from the saved per-sample results): "
                f"{', '.join(old)}."
            )
        return out


def rank_column(columns: list[str], rows: list[Row]) -> tuple[str | None, bool]:
    """(column, whether every row has it): the first of ``RANK_ORDER`` that every row has.

    ``worst_case`` counts only when every row's is over the same attacks. With no such column,
    the one of ``RANK_ORDER`` (else of ``columns``, but never a JSMA towards the true class,
    :func:`harness.grid.suites.ranks`) that most rows have, and ``False``.
    """
    candidates = [c for c in RANK_ORDER if c in columns]
    for column in candidates:
        same = column != "worst_case" or len({r.worst_of for r in rows}) == 1
        if rows and same and all(r.has(column) for r in rows):
            return column, True
    pool = candidates or [c for c in columns if suites.ranks(c)]  # never jsma-paper
    if not pool:
        return None, False
    return max(pool, key=lambda c: sum(r.has(c) for r in rows)), False


def _column_order(attacks: set[str]) -> list[str]:
    """Paper columns first, each worst-class column right after its average, then transfer
    attacks, any other attack, Worst."""
    columns = []
    for c in MAIN:
        columns += [k for k in (c, wc_column(c)) if k in attacks]
    columns += sorted(c for c in attacks if c.startswith("transfer/"))
    columns += sorted(c for c in attacks if c not in columns and c != "worst_case")
    return columns + (["worst_case"] if "worst_case" in attacks else [])


# -- labels: what sets the rows of one method apart ---------------------------------------------
def _value_text(path: str, value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return fraction(value) if path.endswith(("eps", "step_size")) else f"{value:g}"
    if isinstance(value, str):
        if path.endswith("run_id"):  # a teacher run: its config hash
            return value.rsplit("-", 1)[-1]
        if len(value) == 64 and all(c in "0123456789abcdef" for c in value.lower()):
            return value[:8]  # a sha256
        return value if len(value) <= 20 else value[:19] + "…"
    text = canonical_json(value)
    return text if len(text) <= 20 else text[:19] + "…"


def config_labels(method: str, configs: dict[str, dict[str, Any]]) -> dict[str, str]:
    """A label per seedless config (row key) of one method in one table: the method, then what
    differs between its configs: ``dgad (short: 1/3 ep)``, ``dgad [gamma=10]``, ``dgad [cw2]``
    beside ``dgad [no cw2]`` (a part only some configs have). Unique."""
    if len(configs) <= 1:
        return dict.fromkeys(configs, method)
    flat = {key: flatten(config) for key, config in configs.items()}
    absent = object()

    def has(f: dict[str, Any], prefix: str) -> bool:
        return any(p == prefix or p.startswith(prefix + ".") for p in f)

    def where(path: str) -> str:
        """``path``, or its shortest prefix that only some configs have."""
        parts = path.split(".")
        for i in range(1, len(parts)):
            prefix = ".".join(parts[:i])
            if len({has(f, prefix) for f in flat.values()}) > 1:
                return prefix
        return path

    differ = []
    for path in sorted(set().union(*flat.values())):
        seen = {canonical_json(f[path]) if path in f else absent for f in flat.values()}
        if len(seen) > 1 and where(path) not in differ:
            differ.append(where(path))
    differ.sort(
        key=lambda p: (next((i for i, a in enumerate(LABEL_ORDER) if p.startswith(a)), 9), p)
    )
    by_schedule = any(p in differ for p in SCHEDULE_KEYS[:3])
    params = [p for p in differ if not (by_schedule and p in SCHEDULE_KEYS)]
    full_differs = "full_epochs" in differ
    labels = {}
    for key, config in configs.items():
        label = method
        if by_schedule:
            note = schedule_note(config)
            if full_differs and not note:
                note = f"{(config.get('train') or {}).get('epochs')} ep"
            label += f" ({note})" if note else ""
        shown = []
        for path in params[:LABEL_PARAMS]:
            name = next((path[len(p) :] for p in LABEL_PREFIXES if path.startswith(p)), path)
            if path in flat[key] or not any(has(f, path) for f in flat.values()):
                shown.append(f"{name}={_value_text(path, flat[key].get(path))}")
            else:  # a part (an attack, a table) some configs have and others lack
                shown.append(name if has(flat[key], path) else f"no {name}")
        if len(params) > LABEL_PARAMS:
            shown.append(f"+{len(params) - LABEL_PARAMS}")
        label += f" [{', '.join(shown)}]" if shown else ""
        labels[key] = label
    counts = Counter(labels.values())
    return {k: f"{v} #{k[:6]}" if counts[v] > 1 else v for k, v in labels.items()}


def settings(config: dict[str, Any]) -> list[str]:
    """The config's hyperparameters that differ from its method's defaults, ``k=v`` by name.

    A speed switch (``extra_passes=false``) or a grid's choice (``gamma=10``) stays visible
    even where no other row of the method differs from it, which a label would not show.
    """
    from harness.registry import METHODS

    method = config.get("method") or {}
    hparams = method.get("hparams") or {}
    try:
        defaults = METHODS.create(method["name"]).hparams
    except (KeyError, UserError):  # a method no longer installed: every value is shown
        defaults = {}
    return [
        f"{key}={_value_text(key, value)}"
        for key, value in sorted(hparams.items())
        if key not in defaults or canonical_json(defaults[key]) != canonical_json(value)
    ]


# -- rows and tables ------------------------------------------------------------------------------
def _row(method: str, key: str, runs: pd.DataFrame, results: pd.DataFrame) -> Row:
    mine = results[results["run_id"].isin(runs["run_id"])]
    acc = mine.pivot_table(index="run_id", columns="attack", values="accuracy", aggfunc="first")
    mean = (acc.mean() * 100).to_dict()
    std = (acc.std(ddof=1) * 100).to_dict() if len(acc) > 1 else {}
    flags = failed_checks(runs["flags"])
    schedules = sorted(set(runs["schedule"].dropna()))
    provs = [json.loads(p or "{}") for p in runs["provenance"]]
    wall = float(runs["wall_time_s"].fillna(0).sum())
    on_gpu = any("gpu" in p for p in provs)
    provenance = {
        "config": sorted(runs["config_hash"]),
        "code": sorted({str(p.get("code") or p.get("harness")) for p in provs}),
        "torch": sorted({str(p.get("packages", {}).get("torch", p.get("torch"))) for p in provs}),
        "device": sorted({p.get("gpu") or p.get("device", "?") for p in provs}),
        "train_images": sorted({str(p.get("train_images", "?")) for p in provs}),
        "wall_h": wall / 3600,
        "gpu_h": wall / 3600 if on_gpu else 0.0,
    }
    worst = mine.loc[mine["attack"] == "worst_case", "params"]
    worst_of = sorted({canonical_json((json.loads(p or "null") or {}).get("of")) for p in worst})
    per_class, no_per_class = _worst_class(mine, mean, std)
    return Row(
        method,
        sorted(runs["run_id"]),
        mean,
        std,
        flags,
        "/".join(schedules),
        provenance,
        key=key,
        worst_of=tuple(worst_of),
        per_class=per_class,
        no_per_class=no_per_class,
    )


def _worst_class(
    results: pd.DataFrame, mean: dict[str, float], std: dict[str, float]
) -> tuple[dict[str, list[float | None]], list[str]]:
    """Add each WORST_CLASS attack's worst-class accuracy (%) to ``mean`` and ``std``: over
    the row's runs, mean ± std of each run's worst class, and only where every run evaluated
    with the attack has per-class accuracies (a partial mean would mix seeds silently).
    Returns the per-class accuracies (%) averaged over the runs, and the attacks without."""
    per_class: dict[str, list[float | None]] = {}
    lacking = []
    for attack in WORST_CLASS:
        mine = results[results["attack"] == attack]
        if mine.empty:
            continue
        if mine["worst_class"].isna().any():
            lacking.append(attack)
            continue
        values = mine["worst_class"].astype(float) * 100
        mean[wc_column(attack)] = float(values.mean())
        if len(values) > 1:
            std[wc_column(attack)] = float(values.std(ddof=1))
        lists = [json.loads(p) for p in mine["per_class"]]
        size = max(len(v) for v in lists)
        per_class[attack] = []
        for c in range(size):
            seen = [v[c] for v in lists if c < len(v) and v[c] is not None]
            per_class[attack].append(100 * sum(seen) / len(seen) if seen else None)
    return per_class, lacking


def _eps(config: dict[str, Any]) -> float | None:
    eps = config.get("method", {}).get("hparams", {}).get("eps")
    if eps is None:
        found = [a.get("eps") for a in config.get("eval", {}).get("attacks", {}).values() if a]
        eps = next((e for e in found if e is not None), None)
    return eps


def _teacher(
    ref: dict[str, Any], label: str, dataset: str, runs: pd.DataFrame, results: pd.DataFrame
) -> Teacher:
    """The teacher ``ref`` (a run config's ``teacher``) with its own accuracy from the store:
    its training run's for a teacher the grid trained, a ``bench eval`` of the same weights for
    any other (a checkpoint or URL by sha256, RobustBench by name), else none."""
    source = ref.get("source")
    run_id = None
    if source == "run":
        run_id = ref.get("run_id")
        config = run_configs(runs).get(run_id, {})
        what = (config.get("method") or {}).get("name", "?")
        epochs = (config.get("train") or {}).get("epochs", "?")
        text = f"trained by the grid: {what}, {epochs} ep"
        text += f" ({schedule_note(config)})" if schedule_note(config) else ""
    else:
        sha = ref.get("sha256")
        if source == "robustbench":
            text = f"RobustBench {ref.get('robustbench')}"
        else:
            text = f"{'URL' if source == 'url' else 'checkpoint'} sha256 {str(sha)[:8]}"
        name = ref.get("robustbench") if source == "robustbench" else None
        weights = {"robustbench": name, "sha256": sha}
        evaluated = evaluations_of(run_configs(runs), weights, dataset)
        if evaluated:  # the evaluation with the most attacks
            counts = results[results["run_id"].isin(evaluated)].groupby("run_id").size()
            run_id = max(evaluated, key=lambda r: (counts.get(r, 0), r))
    mine = results[results["run_id"] == run_id]
    accuracy = {a: 100 * float(v) for a, v in zip(mine["attack"], mine["accuracy"])}
    return Teacher(label, str(ref.get("model", "?")), text, accuracy, run_id if accuracy else None)


def leaderboard_tables(store: Store, grid: str) -> list[Table]:
    every = store.frame("runs")
    all_results = store.frame("results")
    runs = store.frame("runs", grid)
    results = store.frame("results", grid)
    runs = runs[(runs["kind"] == "student") & (runs["status"] == "complete")]
    if runs.empty:
        return []
    configs = run_configs(runs)
    every_config = run_configs(every)
    code_now: dict[str, Any] = {}  # method name → its code's hash today

    def role_labels(run_id: str) -> list[tuple[str, str]]:
        """(role, teacher label) of a run: its teacher marked when trained short."""
        return [
            (role, teacher_label(ref.get("name", "?"), every_config.get(ref.get("run_id", ""))))
            for role, ref in teacher_roles(configs[run_id])
        ]

    def teacher_of(run_id: str) -> str:
        """The table a run goes to: its teacher, a multi-teacher run's ``+``-joined."""
        return "+".join(label for _, label in role_labels(run_id)) or "—"

    runs = runs.assign(teacher=[teacher_of(r) for r in runs["run_id"]])
    tables = []
    for (dataset, student), group in runs.groupby(["dataset", "student"], sort=True):
        teachers = sorted(t for t in group["teacher"].unique() if t != "—") or ["—"]
        free = group[group["teacher"] == "—"]
        for teacher in teachers:
            cell = pd.concat([group[group["teacher"] == teacher], free]).drop_duplicates("run_id")
            rows, roles = [], []
            for method, of_method in cell.groupby("method", sort=True):
                keys = {k: configs[r["run_id"].iloc[0]] for k, r in of_method.groupby("row_key")}
                labels = config_labels(method, keys)
                for key, r in of_method.groupby("row_key", sort=True):
                    row = _row(method, key, r, results)
                    row.label = labels[key]
                    row.provenance["settings"] = settings(keys[key])
                    row.stale = any(
                        stale(configs[i], json.loads(p or "{}"), code_now)
                        for i, p in zip(r["run_id"], r["provenance"])
                    )
                    named = role_labels(r["run_id"].iloc[0])
                    if [role for role, _ in named] not in ([], [TEACHER_ROLE]):
                        row.teachers = dict(named)
                        roles += [role for role, _ in named if role not in roles]
                    rows.append(row)
            columns = _column_order(set().union(*(r.mean for r in rows)))
            rank_rows(columns, rows)
            refs = {}
            for run_id in cell["run_id"]:
                for role, ref in teacher_roles(configs[run_id]):
                    refs.setdefault(canonical_json([role, ref]), (role, ref))
            infos = _teacher_infos(
                list(refs.values()), teacher, dataset, every, all_results, every_config
            )
            eps = sorted({e for r in cell["run_id"] if (e := _eps(configs[r])) is not None})
            threat = {"norm": NORM, "eps": " or ".join(fraction(e) for e in eps)} if eps else {}
            tables.append(Table(dataset, teacher, student, columns, rows, threat, infos, roles))
    return tables


def _teacher_infos(
    refs: list[tuple[str, dict[str, Any]]],
    table_teacher: str,
    dataset: str,
    runs: pd.DataFrame,
    results: pd.DataFrame,
    configs: dict[str, dict[str, Any]],
) -> list[Teacher]:
    """Each (role, teacher) of a table's runs with its own accuracy; a role's teacher is
    labelled ``natural: t-nat`` (its name marked when trained short), the one teacher of a
    single-teacher table by the table's teacher. ``configs``: every stored run's config."""
    out = []
    for role, ref in refs:
        label = table_teacher
        if role != TEACHER_ROLE:
            name = teacher_label(ref.get("name", "?"), configs.get(ref.get("run_id", "")))
            label = f"{role}: {name}"
        out.append(_teacher(ref, label, dataset, runs, results))
    return out


def rank_rows(columns: list[str], rows: list[Row]) -> None:
    """Order ``rows`` by the table's ranking column, mark what each lacks and the best values."""
    key, _ = rank_column(columns, rows)
    for row in rows:
        row.missing = [c for c in RANK_ORDER if c in columns and not row.has(c)]
    after = [c for c in RANK_ORDER if c in columns and c != key]

    def order(row: Row) -> tuple:
        values = [-row.mean[c] if row.has(c) else math.inf for c in [key, *after] if c]
        return (key is not None and not row.has(key), *values, row.label or row.method)

    rows.sort(key=order)
    for c in columns:
        best = max((r.mean[c] for r in rows if r.has(c)), default=None)
        for r in rows:
            if best is not None and r.has(c) and r.mean[c] == best:
                r.best.add(c)


# -- formats ----------------------------------------------------------------------------------
def cell_text(row: Row, column: str, bold: tuple[str, str] = ("**", "**")) -> str:
    if not row.has(column):
        return "—"
    text = f"{row.mean[column]:.2f}"
    if column in row.std and not math.isnan(row.std[column]):
        text += f" ± {row.std[column]:.2f}"
    return f"{bold[0]}{text}{bold[1]}" if column in row.best else text


def _records(table: Table, bold: tuple[str, str]) -> list[dict[str, str]]:
    out = []
    for row in table.rows:
        record = {"method": row.name}
        record |= {role_header(role): row.teachers.get(role, "—") for role in table.roles}
        record |= {column_label(c): cell_text(row, c, bold) for c in table.columns}
        record |= {
            "seeds": str(row.seeds),
            "schedule": row.schedule,
            "checks": ", ".join(row.flags) or "ok",
        }
        out.append(record)
    return out


def role_header(role: str) -> str:
    """The column of a teacher role: ``natural teacher``."""
    return f"{role} teacher"


def _provenance_records(table: Table) -> list[dict[str, str]]:
    return [
        {
            "method": r.label or r.method,
            "settings": ", ".join(r.provenance.get("settings", [])) or "defaults",
            "config": ", ".join(r.provenance["config"]),
            "code": ", ".join(r.provenance["code"]),
            "torch": ", ".join(r.provenance["torch"]),
            "device": ", ".join(r.provenance["device"]),
            "train images": ", ".join(r.provenance.get("train_images", [])),
            "wall h": f"{r.provenance['wall_h']:.2f}",
            "GPU-h": f"{r.provenance['gpu_h']:.2f}",
        }
        for r in table.rows
    ]


def context_lines(table: Table) -> list[str]:
    """The threat model and each teacher's own accuracy, a sentence each."""
    lines = [f"Threat model: {table.threat_text}."] if table.threat else []
    lines += [f"Teacher {t.summary(table.columns)}." for t in table.teachers]
    return lines


#: Characters Markdown (CommonMark, GitHub) would act on in a name: a row break (``|``), HTML,
#: code, emphasis (``_`` only outside a word), entities; ``]`` only where it would open a link.
_MD_SPECIAL = set("\\`*<>|&~")


def md_escape(text: Any) -> str:
    """``text`` as Markdown that renders as itself on one line: control characters and line
    breaks escaped (:func:`harness.utils.errors.one_line`), the characters Markdown would act on
    backslash-escaped, so a name can neither split a table row nor forge one (the HTML page
    escapes through Jinja instead)."""
    text = one_line(str(text))
    out = []
    for i, c in enumerate(text):
        before, after = text[i - 1 : i], text[i + 1 : i + 2]
        special = (
            c in _MD_SPECIAL
            or (c == "_" and not (before.isalnum() and after.isalnum()))
            or (c == "]" and after == "(")
        )
        out.append("\\" + c if special else c)
    return "".join(out)


def _md_records(records: list[dict[str, str]], cells: set[str]) -> list[dict[str, str]]:
    """``records`` with every header and every value but the ``cells`` (accuracies, already
    Markdown) escaped."""
    return [
        {md_escape(k): v if k in cells else md_escape(v) for k, v in r.items()} for r in records
    ]


def to_markdown(tables: list[Table], grid: str) -> str:
    grid = md_escape(grid)
    if not tables:
        return f"# Leaderboard: {grid}\n\nNo completed runs yet.\n"
    parts = [
        f"# Leaderboard: {grid}\n",
        "Accuracy (%) on the test set; a row is one configuration, mean ± std over its seeds "
        "(rows of one method that differ in anything else are labelled by the difference); "
        "best per column in bold; ranked by the strongest attack every row of the table was "
        "evaluated with (AA, else Worst, PGD, FGSM, Clean), and a row missing an attack "
        f"another row has is marked {MARK}. Worst: samples that survive every attack of the "
        "run's grid (an extra attack is a column of its own). Clean WC, PGD WC, AA WC: "
        "worst-class accuracy, the lowest accuracy of any one class (robust fairness, as "
        "Fair-ARD and ABSLD report it), mean ± std of each seed's worst class. `checks` lists "
        "failed reliability checks; `short` marks runs on a shorter schedule than the grid's.\n",
    ]
    for table in tables:
        parts.append(f"## {md_escape(table.title)}\n")
        context = [md_escape(line) for line in context_lines(table)]
        if context:
            parts.append("\n".join(context) + "\n")
        cells = {column_label(c) for c in table.columns}
        parts.append(
            tabulate(
                _md_records(_records(table, ("**", "**")), cells),
                headers="keys",
                tablefmt="github",
                disable_numparse=True,
            )
            + "\n"
        )
        if table.notes():
            parts.append(md_escape(" ".join(table.notes())) + "\n")
        parts.append("<details><summary>provenance</summary>\n")
        parts.append(
            tabulate(
                _md_records(_provenance_records(table), set()),
                headers="keys",
                tablefmt="github",
                disable_numparse=True,
            )
            + "\n\n</details>\n"
        )
    return "\n".join(parts)


def to_csv(tables: list[Table]) -> str:
    """Long format: one line per (table, row, attack), with mean, std and seeds; the teachers'
    own accuracies as lines with ``role`` = teacher."""
    records = []
    for t in tables:
        common = {
            "dataset": t.dataset,
            "teacher": t.teacher,
            "student": t.student,
            "norm": t.threat.get("norm"),
            "eps": t.threat.get("eps"),
            "ranked_by": t.rank_key,
        }
        for rank, r in enumerate(t.rows, 1):
            for c in t.columns:
                records.append(
                    common
                    | {
                        "role": "student",
                        "method": r.method,
                        "label": r.label or r.method,
                        **{f"teacher_{role}": r.teachers.get(role) for role in t.roles},
                        "rank": rank if t.ranked_on_common or r.has(t.rank_key or "") else None,
                        "attack": c,
                        "mean": r.mean.get(c),
                        "std": r.std.get(c),
                        "seeds": r.seeds,
                        "schedule": r.schedule,
                        "checks": ";".join(r.flags) or "ok",
                        "missing": ";".join(r.missing),
                        "stale": r.stale,
                        "runs": ";".join(r.runs),
                    }
                )
        for teacher in t.teachers:
            for c, value in teacher.accuracy.items():
                records.append(
                    common
                    | {
                        "role": "teacher",
                        "method": teacher.model,
                        "label": teacher.label,
                        "attack": c,
                        "mean": value,
                        "seeds": 1,
                        "runs": teacher.run,
                    }
                )
    return pd.DataFrame(records).to_csv(index=False, float_format="%.4f")


def _latex_text(text: str) -> str:
    return (
        text.replace("_", r"\_")
        .replace("→", r"$\to$")
        .replace("ε", r"$\varepsilon$")
        .replace("∞", r"$\infty$")
        .replace(MARK, r"$^\dagger$")
        .replace(STALE, r"$^\ddagger$")
    )


def to_latex(tables: list[Table]) -> str:
    parts = []
    for table in tables:
        body = tabulate(
            _records(table, (r"\textbf{", "}")),
            headers="keys",
            tablefmt="latex_booktabs",
            disable_numparse=True,
        )
        body = body.replace(r"\textbackslash{}textbf\{", r"\textbf{").replace(r"\}", "}")
        body = body.replace("±", r"$\pm$").replace("→", r"$\to$").replace("—", "--")
        body = body.replace(MARK, r"$^\dagger$").replace(STALE, r"$^\ddagger$")
        caption = " ".join([table.title + ".", *context_lines(table), *table.notes()])
        parts.append(
            f"% {table.title}\n\\begin{{table}}\n\\centering\n\\caption{{{_latex_text(caption)}}}\n"
            f"{body}\n\\end{{table}}\n"
        )
    return "\n".join(parts)


def leaderboard_markdown(store: Store, grid: str) -> str:
    return to_markdown(leaderboard_tables(store, grid), grid)
