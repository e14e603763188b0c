"""Multi-teacher runs: a method that declares teacher roles gets a teacher per role from its
grid table; the grid expands one run per combination, every role's teacher run is a dependency
(plan, status, the executors, Slurm), the store indexes the teachers by role and the
leaderboard gives each role a column. Single-teacher grids are as they were
(``tests/golden``)."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest

from harness.execution.executors import blocker, ordered_runs, run_submitit
from harness.execution.status import plan_table, status_table, teachers_table
from harness.grid.load import load_grid
from harness.publishing.html import render_html
from harness.publishing.leaderboard import leaderboard_tables, to_csv, to_latex, to_markdown
from harness.registry import METHODS
from harness.store.store import Store
from harness.utils.errors import UserError
from methods.base import Method
from tests.test_leaderboard import acc, finish
from tests.test_surrogates import FakeExecutor, quiet

ROLES = ("natural", "robust")

GRID = """
dataset = "digits"
students = ["tiny_cnn"]
teachers = ["t-at"]
methods = {methods}
seeds = [0]

[train]
epochs = 1
batch_size = 64
milestones = []

[eval]
attacks = ["clean", "fgsm", "pgd10"]

[teacher.t-at]
model = "tiny_cnn"
train = {{ method = "pgd-at", epochs = 1 }}

[teacher.t-nat]
model = "tiny_cnn"
train = {{ method = "natural", epochs = 1 }}

[teacher.t-trades]
model = "tiny_cnn"
train = {{ method = "trades", epochs = 1 }}
{tables}
"""
ROLE_TABLE = '[method.two-teachers]\nteachers = { natural = "t-nat", robust = "t-at" }\n'


class TwoTeachers(Method):
    """A stand-in for MTARD's contract: a teacher per role, distilled from the robust one."""

    teacher_roles = ROLES

    def perturb(self, student, teacher, x, y):
        return x.detach()

    def loss(self, student, teacher, x, x_adv, y, epoch=0):
        return (student(x) - teacher["robust"](x)).pow(2).mean(), {}


@pytest.fixture
def two_teachers():
    METHODS.register("two-teachers")(TwoTeachers)
    yield "two-teachers"
    METHODS._entries.pop("two-teachers")


def grid_path(tmp_path: Path, methods: list[str], tables: str = ROLE_TABLE) -> str:
    path = tmp_path / "multi.toml"
    path.write_text(GRID.format(methods=repr(methods).replace("'", '"'), tables=tables))
    return str(path)


def test_a_role_method_gets_one_run_with_a_teacher_per_role(tmp_path, two_teachers):
    grid = load_grid(grid_path(tmp_path, ["two-teachers", "ard", "pgd-at"]))
    nat, at = grid.teacher_runs["t-nat"], grid.teacher_runs["t-at"]
    assert set(grid.teacher_runs) == {"t-at", "t-nat"}  # t-trades: named by nobody
    assert nat.config.method == "natural" and at.config.method == "pgd-at"
    multi, ard, pgdat = grid.runs
    assert [(r, t.name) for r, t in multi.config.teachers] == [
        ("natural", "t-nat"),
        ("robust", "t-at"),
    ]
    assert multi.teacher_needs == (nat.run_id, at.run_id) and multi.needs is None
    assert multi.run_id.startswith("two-teachers-digits-tiny_cnn-t-nat+t-at-s0-")
    json_form = multi.config.to_json()
    assert json_form["teacher"] is None and list(json_form["teachers"]) == list(ROLES)
    # the single-teacher method keeps the listed teacher only; the natural one is not its
    assert ard.teacher_needs == (at.run_id,) and ard.config.teacher.name == "t-at"
    assert pgdat.teacher_needs == ()
    # both teachers run before the students, each once
    first, _ = ordered_runs(grid, Store(tmp_path / "store"))
    assert [r.run_id for r in first] == [at.run_id, nat.run_id]


def test_a_role_listing_several_teachers_gives_a_run_per_combination(tmp_path, two_teachers):
    tables = (
        '[method.two-teachers]\nteachers = { natural = "t-nat", robust = ["t-at", "t-trades"] }\n'
    )
    grid = load_grid(grid_path(tmp_path, ["two-teachers"], tables))
    assert [r.config.teacher_name for r in grid.runs] == ["t-nat+t-at", "t-nat+t-trades"]
    assert len({r.run_id for r in grid.runs}) == 2
    assert len(grid.teacher_runs) == 3
    # --teacher keeps the combinations that use it in some role
    only = load_grid(grid_path(tmp_path, ["two-teachers", "ard"], tables), teacher="t-trades")
    assert [r.config.teacher_name for r in only.runs] == ["t-nat+t-trades"]
    both = load_grid(grid_path(tmp_path, ["two-teachers", "ard"], tables), teacher="t-at")
    assert [r.config.teacher_name for r in both.runs] == ["t-nat+t-at", "t-at"]


def test_a_variant_names_its_own_teachers(tmp_path, two_teachers):
    tables = ROLE_TABLE + (
        '[variant.two-trades]\nmethod = "two-teachers"\n'
        'teachers = { natural = "t-nat", robust = "t-trades" }\n'
    )
    grid = load_grid(grid_path(tmp_path, ["two-teachers", "two-trades"], tables))
    assert [r.config.teacher_name for r in grid.runs] == ["t-nat+t-at", "t-nat+t-trades"]
    assert grid.runs[1].config.label == "two-trades"


@pytest.mark.parametrize(
    ("tables", "message"),
    [
        ("", "method 'two-teachers' needs a teacher per role: "
             'teachers = { natural = "NAME", robust = "NAME" }'),
        ('[method.two-teachers]\nteachers = { natural = "t-nat" }\n',
         "teachers: no teacher for role(s) robust; two-teachers's roles: natural, robust"),
        ('[method.two-teachers]\nteachers = { natural = "t-nat", robust = "t-at", x = "t-at" }\n',
         "teachers: unknown role(s) x; two-teachers's roles: natural, robust"),
        ('[method.two-teachers]\nteachers = { natural = "nobody", robust = "t-at" }\n',
         "natural = 'nobody' has no [teacher.nobody] table; valid: t-at, t-nat, t-trades"),
        ('[method.two-teachers]\nteachers = "t-at"\n',
         "teachers must be a table role = \"teacher name\", got 't-at'"),
        ('[method.ard]\nteachers = { robust = "t-at" }\n',
         "teachers: method 'ard' has one teacher (no roles); list it in the grid's teachers"),
    ],
)  # fmt: skip
def test_role_errors_are_one_line(tmp_path, two_teachers, tables, message):
    methods = ["ard"] if "method.ard" in tables else ["two-teachers"]
    with pytest.raises(UserError) as err:
        load_grid(grid_path(tmp_path, methods, tables))
    assert message in str(err.value) and "\n" not in str(err.value)


def test_plan_status_and_teachers_show_every_role(tmp_path, two_teachers):
    grid = load_grid(grid_path(tmp_path, ["two-teachers"]))
    store = tmp_path / "store"
    status = status_table(grid, store)
    assert "natural: t-nat, robust: t-at" in status
    kinds = [line.split("|")[1].strip() for line in status.splitlines()[2:] if line.startswith("|")]
    assert kinds == ["teacher", "teacher", "student"] and "3 pending" in status
    plan = plan_table(grid, store)
    assert "natural: t-nat, robust: t-at" in plan
    (line,) = [x for x in plan.splitlines() if x.startswith("| student")]
    assert "bench run --grid multi --method two-teachers --student tiny_cnn --seed 0" in line
    assert "--teacher" not in line  # the method selects its run, whatever its roles
    table = teachers_table(grid, store)
    assert "t-nat [natural]" in table and "t-at [robust]" in table
    assert "t-trades" not in table


def test_the_student_waits_for_every_teacher_and_slurm_depends_on_all(
    tmp_path, two_teachers, monkeypatch
):
    grid = load_grid(grid_path(tmp_path, ["two-teachers"]))
    store = Store(tmp_path / "store")
    (student,) = grid.runs
    nat, at = grid.teacher_runs["t-nat"], grid.teacher_runs["t-at"]
    finish(store, at, acc(90, 50, 40, 39))
    assert blocker(student, store) == f"its teacher run {nat.run_id} is not complete"
    finish(store, nat, acc(95, 20, 1, 1))
    assert blocker(student, store) is None

    submitit = pytest.importorskip("submitit")
    monkeypatch.setattr(submitit, "AutoExecutor", FakeExecutor)
    monkeypatch.setattr("shutil.which", lambda name: f"/usr/bin/{name}")  # Slurm "installed"
    FakeExecutor.submitted = []
    fresh = load_grid(grid_path(tmp_path, ["two-teachers"]))
    run_submitit(fresh, Store(tmp_path / "other"), cluster="slurm", params={}, echo=quiet)
    got = dict(FakeExecutor.submitted)
    assert [r for r, _ in FakeExecutor.submitted[:2]] == [at.run_id, nat.run_id]
    assert got[student.run_id] == "afterok:2:1"  # natural's job, then robust's (role order)


def _stored_board(tmp_path: Path) -> Store:
    """A store with the grid's teachers, the two-teacher student and the single-teacher ones."""
    grid = load_grid(grid_path(tmp_path, ["two-teachers", "ard", "pgd-at"]))
    store = Store(tmp_path / "store")
    finish(store, grid.teacher_runs["t-at"], acc(90, 50, 40, 39))
    finish(store, grid.teacher_runs["t-nat"], acc(95, 20, 1, 1))
    multi, ard, pgdat = grid.runs
    finish(store, multi, acc(80, 45, 35, 34))
    finish(store, ard, acc(78, 44, 33, 32))
    finish(store, pgdat, acc(70, 40, 30, 29))
    return store


def test_the_index_holds_each_role_teacher(tmp_path, two_teachers):
    store = _stored_board(tmp_path)
    runs = store.frame("runs").set_index("run_id")
    teachers = store.frame("teachers")
    multi = next(r for r in runs.index if r.startswith("two-teachers"))
    assert runs.loc[multi, "teacher"] == "t-nat+t-at"
    mine = teachers[teachers["run_id"] == multi].sort_values("role")
    assert list(mine["role"]) == ["natural", "robust"]
    assert list(mine["name"]) == ["t-nat", "t-at"] and set(mine["source"]) == {"run"}
    ard = next(r for r in runs.index if r.startswith("ard"))
    assert runs.loc[ard, "teacher"] == "t-at"
    assert list(teachers.loc[teachers["run_id"] == ard, "role"]) == ["teacher"]


def test_the_leaderboard_has_a_column_per_role(tmp_path, two_teachers):
    store = _stored_board(tmp_path)
    tables = {t.teacher: t for t in leaderboard_tables(store, "multi")}
    assert set(tables) == {"t-at", "t-nat+t-at"}
    single, multi = tables["t-at"], tables["t-nat+t-at"]
    assert single.roles == [] and multi.roles == list(ROLES)
    row = next(r for r in multi.rows if r.method == "two-teachers")
    assert row.teachers == {"natural": "t-nat", "robust": "t-at"}
    assert {r.method for r in multi.rows} == {"two-teachers", "pgd-at"}  # teacher-free too
    assert [t.label for t in multi.teachers] == ["natural: t-nat", "robust: t-at"]

    md = to_markdown([multi], "multi")
    header = next(line for line in md.splitlines() if line.startswith("| method"))
    assert [c.strip() for c in header.split("|")[2:4]] == ["natural teacher", "robust teacher"]
    line = next(x for x in md.splitlines() if x.startswith("| two-teachers "))
    assert [c.strip() for c in line.split("|")[2:4]] == ["t-nat", "t-at"]
    line = next(x for x in md.splitlines() if x.startswith("| pgd-at "))
    assert [c.strip() for c in line.split("|")[2:4]] == ["—", "—"]
    single_md = to_markdown([single], "multi")
    assert "natural teacher" not in single_md and "robust teacher" not in single_md

    lines = list(csv.DictReader(io.StringIO(to_csv([single, multi]))))
    mine = [r for r in lines if r["method"] == "two-teachers"]
    assert mine and all(r["teacher_natural"] == "t-nat" for r in mine)
    assert all(r["teacher_robust"] == "t-at" for r in mine)
    assert all(r["teacher_natural"] == "" for r in lines if r["teacher"] == "t-at")
    latex = to_latex([multi])
    head = next(x for x in latex.splitlines() if x.lstrip().startswith("method"))
    assert [c.strip() for c in head.split("&")[1:3]] == ["natural teacher", "robust teacher"]

    html = render_html([multi], "multi")
    assert ">natural teacher<" in html and '<td data-value="t-nat">t-nat</td>' in html
    assert ">natural teacher<" not in render_html([single], "multi")
