"""Fuzzed bad input (hypothesis): CLI arguments, grid files and hyperparameter values.

Whatever the input, ``bench`` ends with exit code 0, or with exit code 2 and a clear error, never
a traceback, and a command that fails has written nothing to its store; the grid loader and the
method constructors either succeed or raise ``UserError``; no value is ever run as code.

The CLI is driven in-process through ``harness.cli.main``, the function the ``bench`` console
script calls (``[project.scripts]``), inside ``CliRunner.isolation`` for the streams. Two error
forms are accepted, both with exit code 2:

- a ``UserError``: stderr is exactly one line, ``error: <message>``;
- a usage error from click's own parser (unknown option, missing or ill-typed value), printed
  before any harness code runs: ``Usage: bench CMD [OPTIONS]``, ``Try 'bench CMD -h' for
  help.``, a blank line, then ``Error: <message>``, the only line that starts with ``Error:``;
- ``bench`` or ``bench store`` without a command: the group's help (click >= 8.2 exits 2).

Warnings count as output: Python would print them to stderr around the error line.

Nothing here trains or evaluates: ``run`` always ends with a ``--method`` that no grid knows,
and the entry points of training and evaluation are replaced by a guard that fails the test if
it is ever reached. Data sets that would be downloaded fail at once (the network probe is made
to fail), and ``--data-root``/``$BENCH_DATA`` point at an empty folder. Every example uses a
store folder of its own, so "nothing written on an error" is checked per example.

``bench rm``, ``runs``, ``compare`` and ``export`` run against stores that hold runs (copies of
templates made once per module: complete runs of three grids, a failed one, a damaged one, a
damaged or outdated index, a removal a killed process left half done) and against missing ones;
what they remove, list, compare or write must be exactly what their arguments name, and nothing
outside the store (rm) or the output folder (export) changes. What an example changed is put
back before the next one.

Payloads (``__import__('os').system('touch PWNED')``, ``$(touch PWNED)``, ...) are among the
values of every strategy: the file they would create must never appear, and every string that
reaches eval, exec or compile while the fuzz runs is checked for them. Arguments are NUL-free and
hold no lone surrogates (``argv`` can carry neither as text).

Every example counts in ``TRIED`` (and in ``REFUSED`` when it ends in an error); ``conftest.py``
prints the totals as "bad inputs tried: N". ``FUZZ_SCALE=10`` tries ten times as many.
"""

from __future__ import annotations

import ast
import builtins
import copy
import datetime
import itertools
import json
import math
import os
import shutil
import socket
import sqlite3
import sys
import tempfile
import warnings
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import harness
from harness.cli import bench, main
from harness.execution.executors import SLURM_KEYS, slurm_parameters
from harness.grid import suites
from harness.grid.load import (
    GRID_DIR,
    THREAT_DEFAULTS,
    TOP_KEYS,
    TRAIN_DEFAULTS,
    list_grids,
    load_grid,
)
from harness.publishing.export import validate
from harness.registry import DATASETS, METHODS, MODELS
from harness.store.store import Store
from harness.utils.errors import UserError
from harness.utils.names import is_name
from harness.utils.values import coerce, parse_number

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

REPO = Path(__file__).resolve().parent.parent

#: Inputs tried per test, and those of them refused with an error (the others were valid
#: after all); conftest.py prints both at the end of the session.
TRIED: Counter[str] = Counter()
REFUSED: Counter[str] = Counter()

#: ``FUZZ_SCALE=10 pytest tests/test_fuzz.py`` tries ten times as many inputs (a deeper search).
SCALE = float(os.environ.get("FUZZ_SCALE", "1"))


def examples(n: int) -> int:
    return max(1, round(n * SCALE))


FUZZ = settings(
    derandomize=True,
    database=None,
    deadline=None,
    print_blob=False,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
    ],
)

# -- vocabularies -----------------------------------------------------------------------------
METHOD_NAMES = METHODS.names()
MODEL_NAMES = MODELS.names()
DATASET_NAMES = DATASETS.names()
GRID_NAMES = list_grids()
GRID_RAW = {name: tomllib.loads((GRID_DIR / f"{name}.toml").read_text()) for name in GRID_NAMES}
TEACHER_NAMES = sorted({t for raw in GRID_RAW.values() for t in raw.get("teacher", {})})
VARIANT_NAMES = sorted({v for raw in GRID_RAW.values() for v in raw.get("variant", {})})
METHOD_FILES = sorted(os.listdir(REPO / "methods"))
HPARAM_NAMES = sorted({k for name in METHOD_NAMES for k in METHODS.get(name).defaults})

SENTINEL = "PWNED"
#: Values that would do something if anything evaluated them, or passed them to a shell.
PAYLOADS = [
    f"__import__('os').system('touch {SENTINEL}')",
    f"__import__('pathlib').Path('{SENTINEL}').touch()",
    f"exec(\"open('{SENTINEL}', 'w')\")",
    f"$(touch {SENTINEL})",
    f"`touch {SENTINEL}`",
    f"; touch {SENTINEL}",
    f"| touch {SENTINEL}",
    "{{ 7 * 7 }}",
    "{0.__class__}",
    "${HOME}",
    "<script>alert(1)</script>",
]
SPECIAL = [
    "",
    " ",
    "-",
    "--",
    ".",
    "..",
    "../",
    "../../etc/passwd",
    "/",
    "~",
    "~nobody/x",
    "'",
    '"',
    "\\",
    "a\nb",
    "\n",
    "\t",
    "%s%n",
    "{}",
    "é",
    "日本語",
    "🙂",
    "\u202e",
    "*",
    "?",
    "[",
    "[z-a]",
    "8/255",
    "1/0",
    "0/0",
    "nan",
    "inf",
    "-inf",
    "1e999",
    "-1",
    "0",
    "x.toml",
    "/nonexistent/x.toml",
    "npz:",
    "npz:/no/such.npz",
    "npz:../x",
    ":",
    "a" * 300,
    "é" * 200,
    *PAYLOADS,
]
TEXT = st.characters(exclude_categories=("Cs",), exclude_characters="\x00")


def weird(max_size: int = 20) -> st.SearchStrategy[str]:
    """Strings a user might type, or a script might pass, where a name or value is expected."""
    return st.one_of(
        st.sampled_from(SPECIAL),
        st.text(TEXT, max_size=max_size),
        st.text(TEXT, min_size=250, max_size=300),
    )


def mostly(valid: st.SearchStrategy[str], bad: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """``valid`` three times in four: a bad value must get past the other flags to go deep."""
    return st.integers(0, 3).flatmap(lambda i: bad if i == 0 else valid)


def named(valid: list[str], bad: list[str] | None = None) -> st.SearchStrategy[str]:
    """One of ``valid`` names, or (one time in four) a weird string or one of ``bad``."""
    return mostly(st.sampled_from(valid), weird() | st.sampled_from(bad) if bad else weird())


BAD_NUMBERS = st.one_of(
    st.integers(-(2**70), 2**70).map(str),
    st.sampled_from(
        ["0", "-1", "1.5", "1e3", "0x10", "nan", "inf", "", "+3", " 3", "٣", "1_000", "9" * 5000]
    ),
    weird(),
)


def count(low: int, high: int) -> st.SearchStrategy[str]:
    return mostly(st.integers(low, high).map(str), BAD_NUMBERS)


DEVICES = mostly(
    st.sampled_from(["auto", "cpu"]),
    st.sampled_from(["cuda", "cuda:0", "cuda:-1", "cpu:99999999999", "meta", "mps"]) | weird(),
)

# -- the sandbox ------------------------------------------------------------------------------


class ReachedWork(AssertionError):
    """The fuzz got past every check into training or evaluation: it must never."""


def _guard(*args: Any, **kwargs: Any) -> Any:
    raise ReachedWork("the fuzz reached training or evaluation")


def _no_network(*args: Any, **kwargs: Any) -> None:
    raise OSError("no network in the fuzz")


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Path]:
    """A temporary working directory, four levels deep so that ``../`` stays inside it."""
    with tempfile.TemporaryDirectory() as tmp, pytest.MonkeyPatch.context() as mp:
        root = Path(tmp)
        cwd = root / "a" / "b" / "c" / "cwd"
        cwd.mkdir(parents=True)
        (root / "data").mkdir()
        (root / "stores").mkdir()
        (root / "grids").mkdir()
        (cwd / "adir").mkdir()
        (cwd / "notes.txt").write_text("not a checkpoint\n")
        (cwd / "garbage.pt").write_bytes(b"\x80\x04not a pickle")
        (cwd / "garbage.npz").write_bytes(b"PK\x03\x04 not a zip")
        (cwd / "bad.toml").write_text('dataset = "digits"\nstudents = [\n')
        (root / "grids" / "teacher.pt").write_bytes(b"teacher weights")
        mp.chdir(cwd)
        mp.setenv("BENCH_DATA", str(root / "data"))
        mp.setenv("BENCH_STORE", str(root / "stores" / "default"))
        mp.delenv("BENCH_GRIDS", raising=False)
        mp.setattr("harness.execution.executors.run_local", _guard)
        mp.setattr("harness.execution.executors.run_submitit", _guard)
        mp.setattr("harness.execution.external.evaluate_run", _guard)
        mp.setattr("harness.data.torchvision_sets.probe", _no_network)
        yield root
        assert not (cwd / SENTINEL).exists(), "a payload was run"


_store_ids = itertools.count()


def fresh_store(root: Path) -> Path:
    return root / "stores" / f"s{next(_store_ids)}"


def invoke(args: list[str]) -> tuple[int, str, str]:
    """``bench ARGS`` as the console script runs it: (exit code, stdout, stderr).

    Warnings count as stderr lines, as Python's default filters would print them.
    """
    with CliRunner().isolation() as (out, err, _), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        try:
            main(list(args))
            code = 0
        except SystemExit as exc:
            code = 0 if exc.code is None else exc.code if isinstance(exc.code, int) else 1
        sys.stdout.flush()
        sys.stderr.flush()
        hidden = (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning)
        shown = [w for w in caught if not issubclass(w.category, hidden)]  # Python's defaults
        printed = "".join(
            warnings.formatwarning(w.message, w.category, w.filename, w.lineno) for w in shown
        )
        return code, out.getvalue().decode(), printed + err.getvalue().decode()


def assert_clean_error(err: str) -> None:
    """One ``error:`` line (a UserError), or click's own usage error ending in one ``Error:``."""
    lines = err.strip("\n").split("\n")  # a terminal breaks lines at \n only
    assert lines, "exit code 2 without a message"
    if lines[0].startswith("error: "):
        assert len(lines) == 1, f"multi-line error:\n{err}"
        return
    if lines[0].startswith("Usage: bench") and "Commands:" in err and "Error:" not in err:
        return  # a group given no command: its help
    errors = [i for i, line in enumerate(lines) if line.startswith("Error: ")]
    assert errors == [len(lines) - 1], f"not a one-line error:\n{err}"
    assert all(
        line.startswith(("Usage: bench", "Try 'bench")) or not line.strip() for line in lines[:-1]
    ), f"unexpected output before click's error:\n{err}"


def check_cli(test: str, args: list[str], store: Path | None) -> int:
    """Run ``bench ARGS``; the property every invocation must have. Returns the exit code."""
    TRIED[test] += 1
    with watch_eval() as evaluated:
        code, out, err = invoke(args)
    assert not evaluated, evaluated
    assert "Traceback" not in out + err, (args, out, err)
    assert code in (0, 2), (args, code, out, err)
    if code == 2:
        REFUSED[test] += 1
        assert_clean_error(err)
        if store is not None:
            assert not store.exists() or not any(store.iterdir()), f"{args} wrote {store}"
    assert not Path(SENTINEL).exists(), f"{args} ran a payload"
    return code


def asked_for_help(args: list[str]) -> bool:
    return any(a in ("-h", "--help", "--version") for a in args)


@st.composite
def options(
    draw: st.DrawFn, table: dict[str, st.SearchStrategy[str] | None], always: tuple[str, ...] = ()
) -> list[str]:
    """Some of the options in ``table`` (None: a flag) in any order, with a stray token or two."""
    names = draw(st.lists(st.sampled_from(sorted(table)), max_size=len(table), unique=True))
    names += [name for name in always if name not in names and draw(st.integers(0, 19))]
    args: list[str] = []
    for name in draw(st.permutations(names)):
        value = table[name]
        args += [name] if value is None else [name, draw(value)]
    if draw(st.integers(0, 9)) == 0:
        stray = st.sampled_from(["--bogus", "-x", "extra", "--", "--help", "-h", "--store"])
        args.insert(draw(st.integers(0, len(args))), draw(stray | weird()))
    return args


GRID_FILES = ["bad.toml", "missing.toml", "adir", "notes.txt", "garbage.pt"]
DATASET_ARGS = ["npz:garbage.npz", "npz:adir", "npz:missing.npz", "cifar10:x", "npz"]
GRID_OPTIONS: dict[str, st.SearchStrategy[str] | None] = {
    "--grid": named(GRID_NAMES, GRID_FILES),
    "--method": named(METHOD_NAMES + VARIANT_NAMES),
    "--dataset": named(DATASET_NAMES, DATASET_ARGS),
    "--teacher": named(TEACHER_NAMES),
    "--student": named(MODEL_NAMES),
    "--epochs": count(1, 300),
    "--teacher-epochs": count(1, 300),
    "--seed": count(-5, 2**40),
    "--select-on": named(["val", "test"]),
}
RUN_OPTIONS: dict[str, st.SearchStrategy[str] | None] = {
    **GRID_OPTIONS,
    "--data-root": named(["adir", "."]),
    "--device": DEVICES,
    "--resume": None,
    "--no-resume": None,
    "--no-progress": None,
    "--executor": named(["local", "slurm", "submitit-local"]),
    "--workers": count(1, 8),
    "--partition": named(["gpu"]),
    "--time": count(1, 10**4),
    "--gpus": count(0, 8),
    "--cpus": count(1, 64),
    "--mem-gb": count(1, 512),
}
#: A --method no grid knows (not empty: an empty --method means "the grid's methods").
UNKNOWN_METHOD = weird().filter(
    lambda s: s.strip() and s not in METHOD_NAMES and s not in VARIANT_NAMES
)


# -- 1. the command line ----------------------------------------------------------------------


@settings(FUZZ, max_examples=examples(400))
@given(args=options(RUN_OPTIONS, ("--grid",)), poison=UNKNOWN_METHOD)
def test_fuzz_cli_run(sandbox, args, poison):
    store = fresh_store(sandbox)
    full = ["run", *args, "--store", str(store), "--method", poison]
    code = check_cli("cli run", full, store)
    assert code == 2 or asked_for_help(full)


@settings(FUZZ, max_examples=examples(400))
@given(
    command=st.sampled_from(["status", "plan", "teachers"]),
    args=options(GRID_OPTIONS, ("--grid",)),
)
def test_fuzz_cli_grid_commands(sandbox, command, args):
    store = fresh_store(sandbox)
    check_cli(f"cli {command}", [command, *args, "--store", str(store)], store)


EVAL_OPTIONS: dict[str, st.SearchStrategy[str] | None] = {
    "--suite": named(["config", "whitebox", "transfer", "all"]),
    "--attack": named(list(suites.PRESETS)),
    "--eval-subset": count(1, 10**4),
    "--surrogate": named(MODEL_NAMES),
    "--model": named(MODEL_NAMES),
    "--dataset": named(DATASET_NAMES, DATASET_ARGS),
    "--robustbench": None,
    "--data-root": named(["adir", "."]),
    "--device": DEVICES,
    "--no-progress": None,
}
TARGETS = mostly(
    st.sampled_from(["garbage.pt", "missing.pt", "adir", "notes.txt", "garbage.npz", "dgad"]),
    weird(),
)


@settings(FUZZ, max_examples=examples(250))
@given(target=TARGETS, args=options(EVAL_OPTIONS, ("--model", "--dataset")))
def test_fuzz_cli_eval(sandbox, target, args):
    store = fresh_store(sandbox)
    full = ["eval", target, *args, "--store", str(store)]
    code = check_cli("cli eval", full, store)
    assert code == 2 or asked_for_help(full)


OTHER_COMMANDS = st.one_of(
    st.tuples(
        st.just("list"), named(["methods", "models", "datasets", "attacks", "grids"])
    ).flatmap(lambda a: st.lists(weird(), max_size=2).map(lambda rest: [*a, *rest])),
    st.tuples(st.just("show"), weird()).map(list),
    st.builds(
        lambda grid, fmt, out: ["leaderboard", "--grid", grid, "--format", fmt, *out],
        named(GRID_NAMES, GRID_FILES),
        named(["md", "html", "csv", "latex"]),
        st.one_of(
            st.just([]),
            st.sampled_from(["adir", "notes.txt/x.md", "a" * 300]).map(lambda o: ["--output", o]),
            weird().map(lambda o: ["--output", "out/" + o]),
        ),
    ),
    st.builds(
        lambda paper, table, flags: ["report", "--paper", paper, *table, *flags],
        named(["dgad"]),
        st.one_of(st.just([]), named(["1", "4", "8"]).map(lambda t: ["--table", t])),
        st.lists(st.sampled_from(["--all", "--missing", "--format=md", "--format=tex"])),
    ),
    st.tuples(st.just("store"), named(["check", "rebuild"])).map(list),
)


@settings(FUZZ, max_examples=examples(400))
@given(args=OTHER_COMMANDS, store_kind=st.sampled_from(["fresh", "fresh", "file", "weird"]))
def test_fuzz_cli_other_commands(sandbox, args, store_kind):
    store: Path | None = fresh_store(sandbox)
    if store_kind == "file":
        store_arg = "notes.txt"
        store = None
    elif store_kind == "weird":
        store_arg = f"st/{args[-1][:300]}"
        store = None
    else:
        store_arg = str(store)
    if args[0] == "list":  # takes no --store
        check_cli("cli list", args, None)
        return
    check_cli(f"cli {args[0]}", [*args, "--store", store_arg], store)


def folder(special: list[str]) -> st.SearchStrategy[tuple[bool, str]]:
    """(special?, folder): a special folder as it is, any other under a folder of its own."""
    return st.one_of(
        st.sampled_from(special).map(lambda f: (True, f)), weird().map(lambda f: (False, f))
    )


@settings(FUZZ, max_examples=examples(150))
@given(
    name=st.one_of(st.sampled_from(["dgad", "my-method", "x", "a-b-c", "a" * 250]), weird()),
    methods_dir=folder(["OWN", "missing", "notes.txt", "notes.txt/m"]),
    tests_dir=folder(["OWN", "notes.txt", "notes.txt/t"]),
)
def test_fuzz_cli_new_method(sandbox, name, methods_dir, tests_dir):
    n = next(_store_ids)  # folders of its own: what one example writes cannot change another
    own = sandbox / "new" / str(n)
    (own / "methods").mkdir(parents=True)
    dirs = []
    for (special, path), kind in ((methods_dir, "methods"), (tests_dir, "tests")):
        dirs.append(str(own / kind) if path == "OWN" else path if special else f"{n}/{path}")
    args = ["new-method", name, "--methods-dir", dirs[0], "--tests-dir", dirs[1]]
    if check_cli("cli new-method", args, None) == 2:
        assert not [p for p in own.rglob("*.py")], "half-written method"
    assert sorted(os.listdir(REPO / "methods")) == METHOD_FILES


VOCABULARY = [
    "status",
    "plan",
    "teachers",
    "list",
    "show",
    "leaderboard",
    "report",
    "store",
    "check",
    "rebuild",
    "methods",
    "grids",
    "smoke",
    "dgad",
    "--grid",
    "--method",
    "--dataset",
    "--seed",
    "--epochs",
    "--teacher-epochs",
    "--format",
    "--paper",
    "--table",
    "--all",
    "--yes",
    "--kind",
    "student",
    "--output",
    "-h",
    "--version",
    "--",
    "-",
]


@settings(FUZZ, max_examples=examples(200))
@given(
    command=named(
        ["status", "plan", "teachers", "list", "show", "leaderboard", "report", "store"]
        + ["runs", "compare", "rm", "export"]
    ),
    tokens=st.lists(mostly(st.sampled_from(VOCABULARY), weird()), max_size=6),
    with_store=st.booleans(),
)
def test_fuzz_cli_token_soup(sandbox, command, tokens, with_store):
    """Any tokens after any command but run, eval and new-method (which would do work); the
    store (a fresh one, or $BENCH_STORE's) holds no run that rm could remove."""
    store = ["--store", str(fresh_store(sandbox))] if with_store else []
    check_cli("cli token soup", [command, *tokens, *store], None)


def test_console_script_is_main():
    """What the fuzz calls is what ``bench`` runs."""
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["bench"] == "harness.cli:main"


# -- runs of a store: rm, runs, compare, export -----------------------------------------------
#
# A folder ``own`` holds a working directory ``own/a/b/cwd`` (so that ``../`` stays in ``own``)
# with a file and folders in the way, a ``victim`` folder that looks like a store, and one
# store of each kind in ``stores/`` (copies of the templates below, or none, or a file). Every
# file of the working directory, the victim and the example's store is read before and after
# the command: what changed must be what the command may change, and the runs it removed or
# exported exactly those its arguments name (as click parses them, by the rules of
# ``Store.resolve`` and ``select_runs`` written out again here). What an example changed is put
# back before the next one (the store copied again from its template), so a ``bench rm`` that
# removed runs starves no later example.


@dataclass(frozen=True)
class Stored:
    """A run of the templates, as the commands must see it."""

    run_id: str
    grids: tuple[str, ...]
    method: str
    kind: str
    dataset: str
    complete: bool


def _template_configs() -> list[Any]:
    """The configs of the runs the templates hold: a few of three grids (students, variants',
    a teacher, a surrogate), and one of a checkpoint that ``bench eval`` made; the last one
    (a student) failed."""
    from harness.execution.external import external_config
    from harness.grid.load import load_grid
    from harness.schema import Dataset, method_label

    smoke, transfer, ablation = load_grid("smoke"), load_grid("transfer"), load_grid("ablation")
    label = {g.name: {method_label(r.config): r.config for r in g.runs} for g in (smoke, transfer)}
    variants = {method_label(r.config): r.config for r in ablation.runs}
    checkpoint = external_config(
        "checkpoint", "tiny_cnn", {"path": "m.pt", "sha256": "0" * 64}, Dataset("digits", {})
    )
    return [
        label["smoke"]["pgd-at"],
        label["smoke"]["trades"],
        label["smoke"]["dgad"],
        smoke.teacher_runs["small-pgdat"].config,
        label["transfer"]["pgd-at"],
        next(iter(transfer.surrogate_runs.values())).config,
        variants["dgad-map"],
        variants["dgad-map-pcr"],
        checkpoint,
        label["smoke"]["mart"],
    ]


TEMPLATE_CONFIGS = _template_configs()
TEMPLATE_IDS = [config.run_id for config in TEMPLATE_CONFIGS]


def _store_runs(store: Store) -> list[Stored]:
    """The runs of :data:`TEMPLATE_CONFIGS` in ``store``, as the runner leaves them (metrics
    made up; one run's method code stale; the last run failed)."""
    from harness.method_code import current_sha256
    from harness.schema import method_label

    out = []
    for i, config in enumerate(TEMPLATE_CONFIGS):
        run_id, cfg = config.run_id, config.to_json()
        failed = i == len(TEMPLATE_CONFIGS) - 1
        store.begin(run_id, cfg)
        if failed:
            store.fail(run_id, "diverged")
        else:
            sha = "0" * 64 if i == 1 else current_sha256(cfg["method"]["name"])  # one stale
            results = {
                name: {"accuracy": 0.9 - 0.01 * i - drop, "n": 100, "params": {"name": name}}
                for name, drop in (("clean", 0), ("fgsm", 0.3), ("pgd10", 0.4), ("autoattack", 0.5))
            }
            metrics = {
                "results": results,
                "checks": {"ordering": {"ok": True}},
                "provenance": {
                    "code": "abc",
                    "packages": {"torch": "2"},
                    "device": "cpu",
                    "method_code": {"sha256": sha, "dirty": False},
                },
                "wall_time_s": 12.5,
                "train": {"best_epoch": 1},
            }
            store.finish(run_id, metrics)
        grids, dataset = tuple(cfg.get("grids", [])), cfg["dataset"]["name"]
        out.append(Stored(run_id, grids, method_label(cfg), cfg["kind"], dataset, not failed))
    return out


#: Store kinds: a copy of a template (``runs`` the pristine one), ``fresh`` (no folder),
#: ``file`` (a file where the folder should be) or ``weird`` (a folder of a weird name).
STORE_KINDS = [
    *["runs"] * 6, "one", "empty", "runs-file", "index-garbage", "old-index", "pending",
    "damaged-run", "fresh", "file", "weird",
]  # fmt: skip
#: Store kinds whose index a read may rebuild (heal a killed change, an index of another version)
INDEX_REBUILT = {"old-index", "pending"}


@dataclass(frozen=True)
class Workspace:
    """The templates (``templates/KIND``, with the runs each holds), the folder ``own`` the
    commands run in, and ``damaged``: the run whose metrics.json the ``damaged-run`` store
    garbles."""

    templates: Path
    runs: dict[str, list[Stored]]
    damaged: str
    own: Path

    @property
    def cwd(self) -> Path:
        return self.own / "a" / "b" / "cwd"


@pytest.fixture(scope="module")
def workspace(sandbox) -> Workspace:
    folder = sandbox / "templates"
    pristine = Store(folder / "runs")
    runs = _store_runs(pristine)
    held = {"runs": runs, "one": runs[:1], "empty": [], "runs-file": []}
    one = Store(folder / "one")
    shutil.copytree(pristine.run_dir(runs[0].run_id), one.run_dir(runs[0].run_id))
    one.rebuild_index()
    (folder / "empty").mkdir()
    (folder / "runs-file").mkdir()
    (folder / "runs-file" / "runs").write_text("not a folder\n")
    for kind in ("index-garbage", "old-index", "pending", "damaged-run"):
        shutil.copytree(folder / "runs", folder / kind)
        held[kind] = runs
    (folder / "index-garbage" / "index.sqlite").write_bytes(b"SQLite format 2\x00 garbage" * 9)
    with sqlite3.connect(folder / "old-index" / "index.sqlite") as conn:
        conn.execute("PRAGMA user_version = 4")
    conn.close()
    dead = {"host": socket.gethostname(), "pid": 2**22 + 12345, "token": "t"}
    (folder / "pending" / "pending" / runs[2].run_id).write_text(json.dumps(dead))
    damaged = runs[1].run_id
    (folder / "damaged-run" / "runs" / damaged / "metrics.json").write_text('{"results": [')

    ws = Workspace(folder, held, damaged, sandbox / "own")
    (ws.cwd / "adir").mkdir(parents=True)
    (ws.cwd / "notes.txt").write_text("not a folder\n")
    (ws.cwd / "out-exists").mkdir()
    (ws.cwd / "out-exists" / "keep.json").write_text("{}\n")
    for dataset in ("digits", "cifar10"):  # a file where export's <dataset> folder goes
        (ws.cwd / f"blocked-{dataset}").mkdir()
        (ws.cwd / f"blocked-{dataset}" / dataset).write_text("in the way\n")
    victim = ws.own / "victim" / "runs" / runs[0].run_id
    victim.mkdir(parents=True)
    (victim / "config.json").write_text("{}\n")
    (ws.own / "stores").mkdir()
    return ws


@dataclass
class Place:
    """An example's store (of ``kind``; ``store_arg`` its --store) and the runs it holds."""

    ws: Workspace
    kind: str
    store: Path
    store_arg: str
    runs: list[Stored]
    #: The run whose metrics.json is garbled (a ``damaged-run`` store), else None.
    damaged: str | None

    @property
    def rel(self) -> str:
        """The store's path in ``own``."""
        return os.path.relpath(self.store, self.ws.own)

    def holds(self, path: str) -> bool:
        """Whether ``path`` (in ``own``) is the store or in it."""
        return path == self.rel or path.startswith(f"{self.rel}/")

    def ids(self) -> list[str]:
        return [r.run_id for r in self.runs]


def place(ws: Workspace, kind: str, weird_name: str) -> Place:
    """The store of ``kind`` in ``own/stores``, made from its template on first use."""
    store = ws.own / "stores" / kind
    store_arg = str(store)
    if kind == "weird":
        name = weird_name[:300]
        inside = not os.path.normpath(os.path.join("x", name)).startswith("..")
        store_arg = f"{store}/{name if inside else 'x'}"
    elif kind == "file" and not store.exists():
        store.write_text("a file\n")
    elif kind in ws.runs and not store.exists():
        shutil.copytree(ws.templates / kind, store)
    damaged = ws.damaged if kind == "damaged-run" else None
    return Place(ws, kind, store, store_arg, ws.runs.get(kind, []), damaged)


def snapshot(own: Path, parts: list[str]) -> dict[str, bytes | None]:
    """Every file (its bytes) and folder (None) under ``own/PART``, by path in ``own``."""
    out: dict[str, bytes | None] = {}
    for part in parts:
        top = own / part
        if top.is_file():
            out[part] = top.read_bytes()
        for dirpath, _, filenames in os.walk(top):
            rel = os.path.relpath(dirpath, own)
            out[rel] = None
            for f in filenames:
                out[os.path.join(rel, f)] = Path(dirpath, f).read_bytes()
    return out


def changes(before: dict[str, bytes | None], after: dict[str, bytes | None]) -> set[str]:
    """The paths added, removed or rewritten."""
    return {p for p in before.keys() | after.keys() if before.get(p, 0) != after.get(p, 0)}


def put_back(p: Place, before: dict[str, bytes | None], after: dict[str, bytes | None]) -> None:
    """Undo what an example changed: its store copied again, every other path as it was."""
    changed = changes(before, after)
    if any(p.holds(c) for c in changed):
        if p.store.is_dir():
            shutil.rmtree(p.store)
        else:
            p.store.unlink(missing_ok=True)
        if p.kind in ("file", *p.ws.runs):
            place(p.ws, p.kind, "")
    for c in sorted(changed, key=len, reverse=True):  # deepest first
        path = p.ws.own / c
        if c in before or p.holds(c):
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    for c in sorted(changed):  # a change of the folders that were there: a bug, undone too
        if c in before and not p.holds(c):
            if before[c] is None:
                (p.ws.own / c).mkdir(parents=True, exist_ok=True)
            else:
                (p.ws.own / c).write_bytes(before[c])  # type: ignore[arg-type]


def parsed(args: list[str]) -> dict[str, Any] | None:
    """The parameters click gives ``bench ARGS``'s command; None where click refuses the
    arguments or prints the help (then the command must do nothing)."""
    command = bench.commands[args[0]]
    parent = click.Context(bench, info_name="bench", **bench.context_settings)
    with CliRunner().isolation():
        try:
            with command.make_context(args[0], list(args[1:]), parent=parent) as ctx:
                return dict(ctx.params)
        except (click.exceptions.ClickException, click.exceptions.Exit):
            return None


def named_run(ref: str, ids: list[str]) -> str | None:
    """The run ``ref`` names: an id, or a non-empty prefix of exactly one id."""
    if ref in ids:
        return ref
    hits = [i for i in ids if ref and i.startswith(ref)]
    return hits[0] if len(hits) == 1 else None


def in_grid(grid: str, run: Stored) -> bool:
    """``--grid`` names a grid by name or by its file (``leaderboards/smoke.toml``)."""
    return grid in run.grids or (
        grid.endswith(".toml") and any(grid.rsplit("/", 1)[-1] == f"{g}.toml" for g in run.grids)
    )


@dataclass
class Outcome:
    """What ``bench ARGS`` did: exit code, stdout, click's parameters (None: refused by
    click), and the paths of ``own`` before and after."""

    code: int
    out: str
    params: dict[str, Any] | None
    before: dict[str, bytes | None]
    after: dict[str, bytes | None]

    def changed(self) -> set[str]:
        return changes(self.before, self.after)

    def on_own_store(self, p: Place) -> bool:
        """Whether click gave the command the example's store (not $BENCH_STORE: a ``--``
        before --store)."""
        return self.params is not None and (
            os.path.abspath(self.params["store"]) == os.path.abspath(p.store_arg)
        )


def store_command(ws: Workspace, test: str, args: list[str], kind: str, weird: str) -> tuple:
    """Run ``bench ARGS --store <the store of KIND>`` in ``own``'s working directory, with the
    invariants of every command (one clean line on an error; no payload run; no temporary
    file left; refused by click: nothing changed); then put ``own`` back. Returns the place
    and the :class:`Outcome`."""
    p = place(ws, kind, weird)
    args = [a.replace("{runs}", str(p.store / "runs")) for a in args]
    full = [*args, "--store", p.store_arg]
    parts = ["a", "victim", p.rel]
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(ws.cwd)
        params = parsed(full)
        before = snapshot(ws.own, parts)
        TRIED[test] += 1
        try:
            with watch_eval() as evaluated:
                code, out, err = invoke(full)
        finally:
            after = snapshot(ws.own, parts)
            put_back(p, before, after)
    o = Outcome(code, out, params, before, after)
    assert not Path(SENTINEL).exists(), f"{full} ran a payload"
    assert not evaluated, evaluated
    assert "Traceback" not in out + err, (full, out, err)
    if code == 130:  # bench rm of a selection, no --yes, and no one to say yes: documented
        assert err == "aborted\n" and args[0] == "rm", (full, code, out, err)
    else:
        assert code in (0, 2), (full, code, out, err)
    if code == 2:
        REFUSED[test] += 1
        assert_clean_error(err)
    if params is None:
        assert code in (0, 2) and not o.changed(), (full, code, out, err, o.changed())
    if kind in ("fresh", "weird"):
        assert not any(p.holds(c) for c in o.changed()), f"{full} created its store"
    left = [c for c in after if c.endswith(".tmp") or "/.removed-" in c]
    assert not left, f"{full} left {left}"
    return p, o


def resolved(p: Place, refs: tuple[str, ...]) -> list[str] | None:
    """The runs ``refs`` name, or None when one of them names none or several."""
    names = [named_run(ref, p.ids()) for ref in refs]
    return None if None in names else sorted(set(names))  # type: ignore[arg-type]


def store_changes(p: Place, changed: set[str]) -> set[str]:
    """``changed`` less what a read may do to the store: rebuild the index (an old one) and
    heal (re-index the run of a pending marker, then drop the marker)."""
    index = tuple(f"{p.rel}/{name}" for name in ("index.sqlite", "pending"))
    return {c for c in changed if not c.startswith(index)}


RUN_KINDS = ["student", "teacher", "surrogate", "checkpoint", "robustbench"]
STORE_GRIDS = ["smoke", "transfer", "ablation", "smoke.toml", "leaderboards/transfer.toml"]
STORE_METHODS = ["pgd-at", "trades", "dgad", "dgad-map", "mart", "natural", "checkpoint"]
SELECT_OPTIONS: dict[str, st.SearchStrategy[str] | None] = {
    "--grid": named(STORE_GRIDS, ["", "cifar10", "../smoke", "smoke/", "SMOKE", ".toml"]),
    "--method": named(STORE_METHODS, ["", "dgad-", "robustbench", "natural "]),
    "--kind": named(RUN_KINDS),
}
RM_OPTIONS: dict[str, st.SearchStrategy[str] | None] = {**SELECT_OPTIONS, "--yes": None, "-y": None}


@st.composite
def run_ref(draw: st.DrawFn) -> str:
    """Mostly a run id or a long prefix of one; else a prefix of any length (ambiguous,
    empty), one made to leave the store or nearly right, or a weird string. ``{runs}`` stands
    for the store's runs folder."""
    run_id = draw(st.sampled_from(TEMPLATE_IDS))
    near = [
        *(f"{run_id}/", f"{run_id}\n", f" {run_id}", run_id.upper(), f"../{run_id}"),
        *(f"runs/{run_id}", f"../victim/runs/{run_id}", f"{{runs}}/{run_id}"),
        *(f".removed-{run_id}", "dgad", "dgad-map", "eval-", "pgd-at-", "*", ".", "..", "runs"),
    ]
    prefix = st.integers(0, len(run_id)).map(lambda n: run_id[:n])
    long_prefix = st.integers(len(run_id) - 12, len(run_id)).map(lambda n: run_id[:n])
    bad = st.one_of(prefix, st.sampled_from(near + PATH_NAMES), weird())
    return draw(mostly(st.one_of(st.just(run_id), long_prefix), bad))


def run_refs(low: int, high: int) -> st.SearchStrategy[list[str]]:
    return st.lists(run_ref(), min_size=low, max_size=high)


def joined(parts: st.SearchStrategy[tuple[list[str], list[str]]]) -> st.SearchStrategy[list[str]]:
    """RUN arguments and options, in either order."""
    return st.tuples(parts, st.booleans()).map(
        lambda t: t[0][0] + t[0][1] if t[1] else t[0][1] + t[0][0]
    )


#: ``bench rm``'s arguments: RUN ids; a selection (mostly with --yes); or any mix.
RM_ARGS = st.one_of(
    joined(st.tuples(run_refs(1, 3), options({"--yes": None}))),
    st.sampled_from(
        [("--grid", "--yes"), ("--method", "--yes"), ("--kind", "--yes"), ("--grid",), ()]
        + [("--grid", "--method", "--yes"), ("--grid", "--kind", "-y")]
    ).flatmap(lambda always: options(RM_OPTIONS, always)),
    joined(st.tuples(run_refs(0, 3), options(RM_OPTIONS))),
)


@settings(FUZZ, max_examples=examples(150))
@given(args=RM_ARGS, kind=st.sampled_from(STORE_KINDS), weird_name=weird())
def test_fuzz_cli_rm(workspace, args, kind, weird_name):
    """``bench rm`` removes exactly the runs its arguments name, a selection only with --yes,
    and nothing else: no other run's file, nothing outside its store."""
    args = ["rm", *args]
    p, o = store_command(workspace, "cli rm", args, kind, weird_name)
    removed = {i for i in p.ids() if f"{p.rel}/runs/{i}" not in o.after}
    gone = [f"{p.rel}/runs/{i}" for i in removed]
    others = {
        c
        for c in store_changes(p, o.changed())
        if not any(c == g or c.startswith(f"{g}/") for g in gone)
    }
    assert not others, f"{args} changed {sorted(others)}"
    if not o.on_own_store(p):
        assert not removed, (args, removed)
        return
    want, code = expected_rm(p, o.params)  # type: ignore[arg-type]
    assert (o.code, removed) == (code, want), (args, o.code, o.out, removed, want)
    if removed:
        assert o.out.endswith(f"{len(removed)} run(s) removed from {p.store_arg}\n"), o.out


def expected_rm(p: Place, params: dict[str, Any]) -> tuple[set[str], int]:
    """(the runs ``bench rm`` removes, its exit code) for click's ``params``."""
    refs, grid, method, kinds = (params[k] for k in ("run_refs", "grid_name", "method", "kinds"))
    selection = grid is not None or method is not None or bool(kinds)
    if refs and selection or p.kind == "index-garbage" and (refs or selection):
        return set(), 2
    if refs:
        ids = resolved(p, refs)
        return (set(), 2) if ids is None else (set(ids), 0)
    if not selection or grid == "" or method == "":  # an empty name selects nothing
        return set(), 2
    picked = {
        r.run_id
        for r in p.runs
        if (grid is None or in_grid(grid, r))
        and (method is None or r.method == method)
        and (not kinds or r.kind in kinds)
    }
    if not picked:
        return set(), 2
    return (picked, 0) if params["yes"] else (set(), 130)


#: --output values where the folder cannot be made (a file in the way, no such place).
UNWRITABLE = {"notes.txt/x", "blocked-digits", "blocked-cifar10", "/dev/null", "/dev/null/x",
              "/proc/nope", "a" * 300}  # fmt: skip
OUTPUTS = mostly(
    st.one_of(
        st.sampled_from(["out", "out/deep/er", ".", "adir", "out-exists", "../../../victim"])
        | st.sampled_from(["{runs}", "{runs}/..", "~", "-", ""]),
        weird().map(lambda o: f"out/{o}"),
    ),
    st.sampled_from(["blocked-digits", "blocked-cifar10", *sorted(UNWRITABLE), "notes.txt"]),
)
EXPORT_OPTIONS: dict[str, st.SearchStrategy[str] | None] = {
    "--grid": SELECT_OPTIONS["--grid"],
    "--method": SELECT_OPTIONS["--method"],
    "--output": OUTPUTS,
}


def within_own(output: str) -> str:
    """``output``, or ``out`` where it would lead out of ``own``."""
    if os.path.isabs(output) or output.startswith("{"):
        return output
    inside = not os.path.normpath(os.path.join("a/b/cwd", output)).startswith("..")
    return output if inside else "out"


#: Runs of both data sets, whose files go to two folders, one of them blocked by a file.
BLOCKED = st.sampled_from(["blocked-digits", "blocked-cifar10"])
COMPLETE_IDS = st.lists(st.sampled_from(TEMPLATE_IDS[:-1]), min_size=2, max_size=6, unique=True)
#: ``bench export``'s arguments: RUN ids; a grid (mostly with --output); or any mix.
EXPORT_ARGS = st.one_of(
    joined(st.tuples(run_refs(1, 3), options({"--output": OUTPUTS}, ("--output",)))),
    joined(st.tuples(COMPLETE_IDS, options({"--output": BLOCKED | OUTPUTS}, ("--output",)))),
    st.sampled_from(
        [("--grid", "--output"), ("--grid", "--method", "--output"), ("--grid",)]
    ).flatmap(lambda always: options(EXPORT_OPTIONS, always)),
    joined(st.tuples(run_refs(0, 3), options(EXPORT_OPTIONS))),
)


@settings(FUZZ, max_examples=examples(150))
@given(args=EXPORT_ARGS, kind=st.sampled_from(STORE_KINDS), weird_name=weird())
def test_fuzz_cli_export(workspace, args, kind, weird_name):
    """``bench export`` writes exactly one valid JSON file per run its arguments name, under
    its --output and nowhere else, or (an error) nothing at all; it changes no run."""
    args = ["export", *args]
    if "--output" in args[:-1]:
        i = args.index("--output") + 1
        args[i] = within_own(args[i])
    p, o = store_command(workspace, "cli export", args, kind, weird_name)
    if o.params is None:
        return
    output = o.params["output"]
    own = workspace.own
    folder = Path(os.path.normpath(workspace.cwd / output)) if output else p.store / "export"
    written = {}
    for c in store_changes(p, o.changed()):
        path = own / c
        assert path == folder or folder in path.parents or path in folder.parents, (
            f"{args} changed {c}, outside its output {folder}"
        )
        assert c in o.after, f"{args} removed {c}"
        if o.after[c] is not None:
            written[path] = json.loads(o.after[c])  # type: ignore[arg-type]
    if o.code == 2:
        assert not written, f"{args} failed, yet wrote {sorted(map(str, written))}"
    by_id = {r.run_id: r for r in p.runs}
    for path, entry in written.items():
        assert validate(entry) == [], (path, validate(entry))
        run = by_id[entry["run_id"]]
        assert path == folder / run.dataset / "Linf" / f"{run.run_id}.json", path
        assert (entry["dataset"], entry["kind"]) == (run.dataset, run.kind), entry
    if o.code == 0:
        told = Path(output) if output else folder
        assert o.out.endswith(f"{len(written)} run(s) exported to {told}\n"), o.out
    if not o.on_own_store(p):
        return
    ids, code = expected_export(p, o.params)
    if code == 0 and (
        output in UNWRITABLE or any(len(part.encode()) > 255 for part in Path(output or "").parts)
    ):
        code = o.code  # the file system's error, in one line (checked above)
    got = {entry["run_id"] for entry in written.values()}
    assert (o.code, got) == (code, set(ids) if code == 0 else set()), (args, o.code, o.out, ids)


def expected_export(p: Place, params: dict[str, Any]) -> tuple[list[str], int]:
    """(the runs ``bench export`` writes, its exit code) for click's ``params``."""
    refs, grid, method = params["run_refs"], params["grid_name"], params["method"]
    if bool(refs) == (grid is not None) or refs and method is not None:
        return [], 2
    if refs:
        ids = resolved(p, refs)
    elif p.kind == "index-garbage" or grid == "" or method == "":
        ids = None
    else:
        ids = sorted(
            r.run_id
            for r in p.runs
            if in_grid(grid, r) and (method is None or r.method == method)
            and r.kind == "student" and r.complete
        )  # fmt: skip
    complete = {r.run_id for r in p.runs if r.complete}
    if not ids or not set(ids) <= complete or p.damaged in ids:
        return [], 2
    return ids, 0


@settings(FUZZ, max_examples=examples(150))
@given(
    command=st.sampled_from(["runs", "compare"]),
    refs=st.one_of(run_refs(2, 2), run_refs(0, 3)),
    opts=options(SELECT_OPTIONS),
    kind=st.sampled_from(STORE_KINDS),
    weird_name=weird(),
)
def test_fuzz_cli_runs_compare(workspace, command, refs, opts, kind, weird_name):
    """``bench runs`` lists exactly the runs its filters select, ``bench compare`` the two its
    arguments name; neither writes to the store (a read may heal or rebuild the index)."""
    args = ["runs", *opts] if command == "runs" else ["compare", *refs]
    p, o = store_command(workspace, f"cli {command}", args, kind, weird_name)
    changed = o.changed()
    assert not store_changes(p, changed), f"{args} changed {sorted(changed)}"
    assert kind in INDEX_REBUILT or not changed, f"{args} changed {sorted(changed)}"
    if not o.on_own_store(p):
        return
    params: dict[str, Any] = o.params  # type: ignore[assignment]
    if kind == "weird":
        try:
            Path(p.store_arg).exists()
        except OSError:  # a name too long for the file system: one line
            assert o.code == 2
            return
    if command == "compare":
        a, b = (named_run(params[k], p.ids()) for k in ("run_a", "run_b"))
        code = 2 if a is None or b is None or p.damaged in (a, b) else 0
        assert o.code == code, (args, o.code, o.out)
        if code == 0:
            assert o.out.startswith(f"A  {a}  (") and f"\nB  {b}  (" in o.out, o.out
        return
    if kind == "index-garbage":
        assert o.code == 2, (args, o.out)
        return
    grid, method, kinds = params["grid_name"], params["method"], params["kinds"]
    want = {
        r.run_id
        for r in p.runs
        if (grid is None or in_grid(grid, r))
        and (not method or r.method == method)
        and (not kinds or r.kind in kinds)
    }
    listed = {line.split("|")[1].strip() for line in o.out.splitlines() if line.startswith("| ")}
    assert o.code == 0 and listed - {"run"} == want, (args, o.code, o.out, want)
    assert o.out.endswith(f"{len(want)} run(s)\n"), o.out


# -- 2. grid files ----------------------------------------------------------------------------

SMOKE = tomllib.loads((GRID_DIR / "smoke.toml").read_text())
#: Every part of the schema: a trained, a checkpoint and a RobustBench teacher, per-method and
#: per-student tables, a variant, attack tables, a transfer table, data set options, [slurm].
RICH: dict[str, Any] = {
    "description": "every part of the schema",
    "dataset": "digits",
    "dataset_options": {"val_fraction": 0.2},
    "students": ["tiny_cnn", "small_cnn"],
    "teachers": ["trained", "file", "zoo"],
    "methods": ["pgd-at", "dgad", "dgad-no-pcr", "gacd", "iad"],
    "seeds": [0, 1],
    "select_on": "test",
    "threat": {"eps": "8/255", "step_size": "2/255", "steps": 2},
    "train": {"epochs": 4, "batch_size": 16, "lr": 0.1, "nesterov": True, "milestones": [2, 3]},
    "eval": {
        "attacks": {
            "fgsm": {"attack": "fgsm"},
            "pgd5": {"attack": "pgd", "steps": 5, "eps": "4/255", "step_size": 0.01},
        },
        "transfer": {"surrogates": ["tiny_cnn"], "attacks": ["fgsm", "pgd10"], "epochs": 2},
    },
    "teacher": {
        "trained": {"model": "small_cnn", "train": {"method": "trades", "epochs": 2, "beta": 3.0}},
        "file": {"model": "tiny_cnn", "checkpoint": "teacher.pt"},
        "zoo": {"model": "wrn34_10", "robustbench": "Chen2021LTD_WRN34_10", "threat_model": "Linf"},
    },
    "method": {
        "dgad": {
            "gamma": 4.0,
            "train": {"epochs": 2, "milestones": [1]},
            "student": {"tiny_cnn": {"gamma": 3.0}},
        },
        "gacd": {"feat_dim": 16, "queue_size": 64},
        "iad": {"warmup_epochs": 1},
    },
    "variant": {"dgad-no-pcr": {"method": "dgad", "pcr": False}},
    "slurm": {"partition": "gpu", "time": 60},
}

KEYS = sorted(
    TOP_KEYS
    | set(TRAIN_DEFAULTS)
    | set(THREAT_DEFAULTS)
    | set(SLURM_KEYS)
    | set(HPARAM_NAMES)
    | {"attacks", "transfer", "surrogates", "attack", "model", "checkpoint", "robustbench"}
    | {"sha256", "threat_model", "student", "path", "name", "self", "kwargs", "val_fraction"}
)
SCALARS = st.one_of(
    st.integers(-(2**63), 2**63 - 1),
    st.sampled_from([0, -1, 1, 2**63 - 1, -(2**63)]),
    st.floats(),
    st.sampled_from([0.0, -0.0, 1e308, -1e-308, math.nan, math.inf, -math.inf]),
    st.booleans(),
    st.text(max_size=10),
    st.sampled_from(SPECIAL),
    st.sampled_from(METHOD_NAMES + MODEL_NAMES + DATASET_NAMES + list(suites.PRESETS)),
    st.sampled_from(["small-pgdat", "trained", "file", "zoo", "dgad-no-pcr", "teacher.pt"]),
    st.builds(lambda a, b: f"{a}/{b}", st.integers(-300, 300), st.integers(-3, 300)),
    st.one_of(
        st.dates(),
        st.times(),
        st.datetimes(timezones=st.sampled_from([None, datetime.timezone.utc])),
    ),
)
TOML_VALUES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=6,
)


def toml_str(s: str) -> str:
    escaped = "".join(
        "\\" + c if c in '"\\' else f"\\u{ord(c):04X}" if ord(c) < 0x20 or ord(c) == 0x7F else c
        for c in s
    )
    return f'"{escaped}"'


def toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return "nan" if v != v else ("inf" if v > 0 else "-inf") if math.isinf(v) else repr(v)
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str):
        return toml_str(v)
    if isinstance(v, datetime.date | datetime.time):
        return v.isoformat()
    if isinstance(v, list):
        return "[" + ", ".join(map(toml_value, v)) + "]"
    return "{" + ", ".join(f"{toml_str(k)} = {toml_value(x)}" for k, x in v.items()) + "}"


def toml_document(doc: dict[str, Any], prefix: tuple[str, ...] = ()) -> str:
    """``doc`` as TOML: scalars and arrays as ``key = value``, sub-tables as ``[a.b]``."""
    lines = []
    tables = {k: v for k, v in doc.items() if isinstance(v, dict)}
    if prefix and (len(tables) < len(doc) or not doc):
        lines.append("[" + ".".join(map(toml_str, prefix)) + "]")
    lines += [f"{toml_str(k)} = {toml_value(v)}" for k, v in doc.items() if k not in tables]
    lines += [toml_document(v, (*prefix, k)) for k, v in tables.items()]
    return "\n".join(lines)


def tables(node: Any, prefix: tuple = ()) -> Iterator[tuple]:
    """The paths of every table and array in ``node``."""
    if isinstance(node, dict | list):
        yield prefix
    items = (
        node.items()
        if isinstance(node, dict)
        else enumerate(node)
        if isinstance(node, list)
        else ()
    )
    for key, child in items:
        yield from tables(child, (*prefix, key))


def children(node: Any) -> list[Any]:
    return list(node.values()) if isinstance(node, dict) else node if isinstance(node, list) else []


def at(doc: Any, path: tuple) -> Any:
    for key in path:
        doc = doc[key]
    return doc


@st.composite
def mutated(draw: st.DrawFn, base: dict[str, Any]) -> dict[str, Any]:
    """``base`` with one to three values replaced, keys deleted, or keys / items added.

    The table (or array) to change is drawn first, then the key: every table of the schema gets
    an equal share, however many values it holds. A new value is a random one, or one taken from
    elsewhere in the grid, or the old one wrapped in a list, or unwrapped from its list or table.
    """
    doc = copy.deepcopy(base)
    elsewhere = [value for path in tables(base) for value in children(at(base, path))]
    for _ in range(draw(st.integers(1, 3))):
        node = at(doc, draw(st.sampled_from(list(tables(doc)))))
        keys = list(node) if isinstance(node, dict) else list(range(len(node)))
        op = draw(st.sampled_from(["replace", "replace", "delete", "add"] if keys else ["add"]))
        if op == "add" and isinstance(node, dict):
            node[draw(st.sampled_from(KEYS) | st.text(max_size=8))] = draw(TOML_VALUES)
        elif op == "add":
            node.append(draw(TOML_VALUES))
        elif op == "delete":
            del node[draw(st.sampled_from(keys))]
        else:
            key = draw(st.sampled_from(keys))
            old = node[key]
            values = [TOML_VALUES, st.sampled_from(elsewhere).map(copy.deepcopy), st.just([old])]
            if children(old):
                values.append(st.sampled_from(children(old)))
            node[key] = draw(st.one_of(values))
    return doc


def test_toml_writer_round_trips_the_bases():
    for base in (SMOKE, RICH):
        assert tomllib.loads(toml_document(base)) == base


def test_bases_load(sandbox):
    for base in (SMOKE, RICH):
        path = sandbox / "grids" / "base.toml"
        path.write_text(toml_document(base))
        assert load_grid(str(path)).runs


#: What the trainer, the data loader and SGD accept: a grid that loads must fit them.
TRAIN_RANGES = {
    "epochs": lambda v: v >= 1,
    "batch_size": lambda v: v >= 1,
    "eval_batch_size": lambda v: v >= 1,
    "lr": lambda v: v > 0,
    "momentum": lambda v: v >= 0,
    "weight_decay": lambda v: v >= 0,
    "lr_gamma": lambda v: v > 0,
    "select_steps": lambda v: v >= 0,
}


def check_grid_file(sandbox: Path, test: str, path: Path) -> None:
    """load_grid succeeds (with a sane config) or raises a one-line UserError; so does the CLI."""
    TRIED[test] += 1
    try:
        with watch_eval() as evaluated:
            grid = load_grid(str(path))
    except UserError as exc:
        REFUSED[test] += 1
        assert str(exc) and "\n" not in str(exc), repr(str(exc))
    else:
        for run in [*grid.runs, *grid.teacher_runs.values()]:
            train = run.config["train"]
            bad = [k for k, ok in TRAIN_RANGES.items() if not ok(train[k])]
            assert not bad, f"accepted [train] {', '.join(f'{k} = {train[k]}' for k in bad)}"
            assert not (train["nesterov"] and train["momentum"] == 0), "nesterov without momentum"
        try:
            slurm = slurm_parameters(grid, {})
        except UserError as exc:
            REFUSED[test] += 1
            assert str(exc) and "\n" not in str(exc), repr(str(exc))
        else:
            for key, value in slurm.items():
                kind = str if key in ("slurm_partition", "slurm_account", "slurm_qos") else int
                assert type(value) is kind, f"accepted [slurm] {key} = {value!r}"
    assert not evaluated, evaluated
    store = fresh_store(sandbox)
    for command in ("status", "teachers"):
        invoke_args = [command, "--grid", str(path), "--store", str(store)]
        code, out, err = invoke(invoke_args)
        assert "Traceback" not in out + err and code in (0, 2), (invoke_args, code, out, err)
        if code == 2:
            assert_clean_error(err)
            assert not store.exists()
    assert not Path(SENTINEL).exists()


@settings(FUZZ, max_examples=examples(900))
@given(doc=st.one_of(mutated(SMOKE), mutated(RICH)))
def test_fuzz_grid_mutations(sandbox, doc):
    text = toml_document(doc)
    tomllib.loads(text)  # valid TOML: what is fuzzed is the content, not the syntax
    path = sandbox / "grids" / "mutant.toml"
    path.write_text(text)
    check_grid_file(sandbox, "grid mutations", path)


SMOKE_TEXT = (GRID_DIR / "smoke.toml").read_text()


@st.composite
def mangled_smoke(draw: st.DrawFn) -> bytes:
    """smoke.toml with a few characters deleted, replaced or inserted: mostly invalid TOML."""
    text = SMOKE_TEXT
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(text)))
        j = draw(st.integers(i, min(len(text), i + 3)))
        text = (
            text[:i]
            + draw(st.sampled_from(["", "[", "]", "=", '"', "\n", "{", ",", "."]))
            + text[j:]
        )
    return text.encode()


BROKEN_TOML = st.one_of(
    st.text(TEXT, max_size=200).map(str.encode),
    st.binary(max_size=200),
    mangled_smoke(),
    st.integers(1, 5000).map(lambda n: f"seeds = {'[' * n}0{']' * n}\n".encode()),
    st.integers(1, 3000).map(lambda n: f"dataset = {'{a = ' * n}1{'}' * n}\n".encode()),
    st.integers(300, 6000).map(
        lambda n: SMOKE_TEXT.replace("steps = 10", f"steps = {'9' * n}").encode()
    ),
    st.integers(300, 400).map(lambda n: SMOKE_TEXT.replace('"8/255"', "9" * n).encode()),
    st.sampled_from([b"", b"\xef\xbb\xbf", b"\xff\xfe", "é".encode("latin-1"), b"[[train]]\n"]),
)


@settings(FUZZ, max_examples=examples(400))
@given(data=BROKEN_TOML)
def test_fuzz_grid_text(sandbox, data):
    path = sandbox / "grids" / "text.toml"
    path.write_bytes(data)
    check_grid_file(sandbox, "grid text", path)


# -- names that become paths ------------------------------------------------------------------

#: Names aimed at leaving the store, splitting lines or hiding files.
PATH_NAMES = [
    "../../../x",
    "../../T",
    "../../../tmp/x",
    "/tmp/x",
    "/",
    "..",
    ".",
    ".hidden",
    "a/b",
    "a\\b",
    "a\nb",
    "a|b",
    "-rf",
    "x" * 49,
    "ok-name",
    "ok.name_1",
    "_private",
]
NAME_SPOTS = ("variant", "teacher", "attack", "grid")


def named_grid(spot: str, name: str) -> dict[str, Any]:
    """A one-epoch grid with ``name`` as a variant, a teacher or an evaluation attack."""
    doc: dict[str, Any] = {
        "dataset": "digits",
        "students": ["tiny_cnn"],
        "methods": ["pgd-at"],
        "train": {"epochs": 1},
        "eval": {"attacks": ["clean"]},
    }
    if spot == "variant":
        doc["methods"] = [name]
        doc["variant"] = {name: {"method": "pgd-at"}}
    elif spot == "teacher":
        doc["methods"] = ["ard"]
        doc["teachers"] = [name]
        doc["teacher"] = {name: {"model": "tiny_cnn", "train": {"method": "pgd-at"}}}
    elif spot == "attack":
        doc["eval"] = {"attacks": {name: {"attack": "fgsm"}}}
    return doc


def inside(path: Path, folder: Path) -> bool:
    return path.resolve().parent == folder.resolve()


@settings(FUZZ, max_examples=examples(400))
@given(
    spot=st.sampled_from(NAME_SPOTS),
    name=st.one_of(st.sampled_from(PATH_NAMES), weird(60)),
)
def test_fuzz_names_stay_in_the_store(sandbox, spot, name):
    """Every name that becomes a path is refused with one line when the grid loads, or keeps
    each run's directory and each attack's state file directly inside their folders."""
    folder = sandbox / "grids" / "names"
    folder.mkdir(exist_ok=True)
    path = folder / (f"{name}.toml" if spot == "grid" else "g.toml")
    try:
        if not inside(path, folder):
            path = folder / "g.toml"  # a grid file cannot be named so: try the name elsewhere
            spot = "variant"
        path.write_text(toml_document(named_grid(spot, name)))
    except (OSError, ValueError):  # a name no file may have (too long, NUL)
        path = folder / "g.toml"
        spot = "variant"
        path.write_text(toml_document(named_grid(spot, name)))
    TRIED["names"] += 1
    try:
        grid = load_grid(str(path))
    except UserError as exc:
        REFUSED["names"] += 1
        assert str(exc) and "\n" not in str(exc)
        return
    finally:
        path.unlink()
    assert is_name(name), f"{spot} {name!r} accepted"
    store = Store(sandbox / "stores" / "names")
    for run in [*grid.runs, *grid.teacher_runs.values()]:
        run_dir = store.run_dir(run.run_id)
        assert inside(run_dir, store.runs_dir) and not run.run_id.startswith("."), run.run_id
        assert len(run.run_id.encode()) <= 255
        for attack in run.config["eval"]["attacks"]:
            assert inside(run_dir / "eval" / f"{attack}.pt", run_dir / "eval"), attack


# -- 3. hyperparameter values -----------------------------------------------------------------

HPARAM_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from([0, -1, 10**30, -(10**30), 10**400, -(10**400), 2**1024]),
    st.floats(),
    st.sampled_from([math.nan, math.inf, -math.inf, -0.0, 1e-320]),
    st.text(max_size=10),
    st.sampled_from(SPECIAL),
    st.builds(lambda a, b: f"{a}/{b}", st.integers(-300, 10**400), st.integers(-3, 300)),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    st.sampled_from([(1,), b"8", 1j, object(), float, print]),
)
BAD_KEYS = st.one_of(
    st.sampled_from(["self", "name", "kwargs", "hparams", "cls", "", "eps "]), st.text(max_size=8)
)


@settings(FUZZ, max_examples=examples(800))
@given(data=st.data())
def test_fuzz_method_hparams(sandbox, data):
    name = data.draw(st.sampled_from(METHOD_NAMES), "method")
    cls = METHODS.get(name)
    keys = sorted({**THREAT_DEFAULTS, **cls.defaults})
    hparams = data.draw(
        st.dictionaries(st.sampled_from(keys) | BAD_KEYS, HPARAM_VALUES, max_size=4), "hparams"
    )
    TRIED["method hparams"] += 1
    with watch_eval() as evaluated:
        try:
            m = harness.create_method(name, **hparams)
        except UserError as exc:
            REFUSED["method hparams"] += 1
            assert str(exc) and "\n" not in str(exc)
        else:
            for key, default in {**THREAT_DEFAULTS, **cls.defaults}.items():
                value = getattr(m, key)
                assert type(value) is type(default), (key, value)
                assert not isinstance(value, float) or math.isfinite(value), (key, value)
    assert not evaluated
    assert not Path(SENTINEL).exists()


@contextmanager
def watch_eval() -> Iterator[list[str]]:
    """Record every string that reaches eval/exec/compile and holds one of the payloads."""
    seen: list[str] = []
    real = {name: getattr(builtins, name) for name in ("eval", "exec", "compile")}

    def spy(name: str) -> Any:
        def call(source: Any, *args: Any, **kwargs: Any) -> Any:
            importing = "importlib" in sys._getframe(1).f_code.co_filename  # a module's own text
            if not importing and any(p in str(source) for p in [SENTINEL, "8/255", "1/0"]):
                seen.append(f"{name}({source!r})")
            if name != "compile" and not args and not kwargs:  # the caller's names, not ours
                caller = sys._getframe(1)
                args = (caller.f_globals, caller.f_locals)
            return real[name](source, *args, **kwargs)

        return call

    with pytest.MonkeyPatch.context() as mp:
        for name in real:
            mp.setattr(builtins, name, spy(name))
        yield seen


NUMBER_TEXT = st.one_of(
    st.text(TEXT, max_size=30),
    st.sampled_from(SPECIAL),
    st.from_regex(
        r"\s*[0-9]*\.?[0-9]+([eE][-+]?[0-9]+)?\s*(/\s*[0-9]*\.?[0-9]+)?\s*", fullmatch=True
    ),
    st.builds(lambda a, b: f"{a}/{b}", st.integers(0, 10**400), st.integers(0, 300)),
)


@settings(FUZZ, max_examples=examples(500))
@given(value=st.one_of(NUMBER_TEXT, HPARAM_VALUES))
def test_fuzz_parse_number(sandbox, value):
    TRIED["parse_number"] += 1
    with watch_eval() as evaluated:
        try:
            out = parse_number(value, "x")
        except UserError as exc:
            REFUSED["parse_number"] += 1
            assert str(exc) and "\n" not in str(exc)
        else:
            assert isinstance(out, float)
    assert not evaluated
    assert not Path(SENTINEL).exists()


@settings(FUZZ, max_examples=examples(400))
@given(
    value=HPARAM_VALUES | NUMBER_TEXT,
    default=st.sampled_from([True, 3, 0.5, "swap", [1, 2], None, {"a": 1}]),
    choices=st.one_of(st.none(), st.lists(HPARAM_VALUES, max_size=3).map(tuple)),
)
def test_fuzz_coerce(sandbox, value, default, choices):
    TRIED["coerce"] += 1
    try:
        out = coerce(value, default, "x", choices)
    except UserError as exc:
        REFUSED["coerce"] += 1
        assert str(exc) and "\n" not in str(exc)
    else:
        if isinstance(default, bool | int | float | str):
            assert type(out) is type(default), (value, default, out)


def test_no_code_evaluates_strings():
    """No eval, exec, compile or literal_eval in the harness or the methods; no unpickling."""
    found = []
    for path in sorted([*(REPO / "harness").rglob("*.py"), *(REPO / "methods").rglob("*.py")]):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call):
                continue
            f, where = node.func, f"{path.relative_to(REPO)}:{node.lineno}"
            if isinstance(f, ast.Name) and f.id in ("eval", "exec", "compile", "__import__"):
                found.append(f"{where}: {f.id}")
            elif isinstance(f, ast.Attribute) and f.attr == "literal_eval":
                found.append(f"{where}: literal_eval")
            elif (
                isinstance(f, ast.Attribute)
                and f.attr == "load"
                and ast.unparse(f.value)
                in (
                    "torch",
                    "pickle",
                )
            ):
                safe = any(
                    k.arg == "weights_only" and getattr(k.value, "value", None) is True
                    for k in node.keywords
                )
                if not safe:
                    found.append(f"{where}: {ast.unparse(f)} without weights_only=True")
    assert not found, found


def test_payload_values_are_data(sandbox):
    """A payload in every kind of value ends as a UserError or as the string itself."""
    for payload in PAYLOADS:
        with pytest.raises(UserError):
            parse_number(payload, "eps")
        with pytest.raises(UserError):
            harness.create_method("dgad", gamma=payload)
        assert harness.create_method("dgad", label_fix="swap").label_fix == "swap"
        path = sandbox / "grids" / "payload.toml"
        path.write_text(SMOKE_TEXT.replace('"8/255"', toml_str(payload)))
        with pytest.raises(UserError, match="must be a number"):
            load_grid(str(path))
    assert not Path(SENTINEL).exists()
