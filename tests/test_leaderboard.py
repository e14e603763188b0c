"""Leaderboard tables from the store: a row per configuration, labels, ranking on the attacks
every row has, Worst over the grid's own attacks, the teachers' own accuracy; Markdown against a
golden file, CSV and LaTeX by value."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pandas as pd
import pytest
import torch

from harness.execution.external import external_config
from harness.grid.load import load_grid
from harness.publishing import leaderboard as lb
from harness.publishing.leaderboard import Row
from harness.store.index import SCHEMA_VERSION
from harness.store.store import Store

GOLDEN = Path(__file__).parent / "golden" / "leaderboard.md"
PROV = {
    "code": "abc1234",
    "packages": {"torch": "2.11.0"},
    "gpu": "NVIDIA H100",
    "device": "cuda",
    "train_images": 50000,
}
EPS = 8 / 255


def add_run(
    store,
    run_id,
    method,
    teacher,
    student,
    seed,
    acc,
    *,
    schedule="full",
    failed=(),
    hparams=None,
    per_class=None,
):
    """A complete run with accuracies ``acc`` (%) and, per attack of ``per_class``, per-class
    accuracies (%); a run without them is one stored before per-class accuracies were kept."""
    config = {
        "kind": "student",
        "method": {"name": method, "hparams": {"eps": EPS, **(hparams or {})}},
        "dataset": {"name": "cifar10", "options": {}},
        "model": student,
        "teacher": {"name": teacher, "model": teacher, "source": "robustbench", "robustbench": "X"}
        if teacher
        else None,
        "seed": seed,
        "train": {"epochs": 200 if schedule == "full" else 20, "seed": seed},
        "full_epochs": 200,
        "schedule": schedule,
        "grids": ["paper"],
    }
    store.begin(run_id, config)
    checks = {"ordering": {"ok": "ordering" not in failed}, "eps_sweep": {"ok": True}}
    results = {k: {"accuracy": v / 100, "n": 10000, "params": {"name": k}} for k, v in acc.items()}
    for attack, values in (per_class or {}).items():
        results[attack]["per_class"] = [v / 100 for v in values]
        results[attack]["class_n"] = [2500] * len(values)
    store.finish(
        run_id, {"results": results, "checks": checks, "provenance": PROV, "wall_time_s": 7200.0}
    )


@pytest.fixture
def store(tmp_path):
    st = Store(tmp_path)
    add_run(
        st,
        "dgad-a-s0-1111111111",
        "dgad",
        "wrn34-10",
        "resnet18",
        0,
        {"clean": 87.0, "pgd10": 55.0, "autoattack": 50.0},
        per_class={
            "clean": [92.0, 80.0, 88.0, 88.0],
            "pgd10": [70.0, 30.0, 60.0, 60.0],
            "autoattack": [65.0, 25.0, 55.0, 55.0],
        },
    )
    add_run(
        st,
        "dgad-a-s1-2222222222",
        "dgad",
        "wrn34-10",
        "resnet18",
        1,
        {"clean": 88.0, "pgd10": 56.0, "autoattack": 51.0},
        per_class={
            "clean": [90.0, 82.0, 90.0, 90.0],
            "pgd10": [68.0, 34.0, 61.0, 61.0],
            "autoattack": [64.0, 27.0, 56.5, 56.5],
        },
    )
    add_run(
        st,
        "adaad-a-s0-3333333333",
        "adaad",
        "wrn34-10",
        "resnet18",
        0,
        {"clean": 86.75, "pgd10": 54.13, "autoattack": 50.06},
        failed=("ordering",),
    )
    add_run(
        st,
        "pgd-at-a-s0-4444444444",
        "pgd-at",
        None,
        "resnet18",
        0,
        {"clean": 82.95, "pgd10": 52.87, "autoattack": 47.69},
        schedule="short",
        hparams={"init": "normal", "extra_passes": False},  # the default init, a speed switch
        per_class={
            "clean": [90.0, 70.0, 85.8, 86.0],
            "pgd10": [66.0, 28.0, 58.74, 58.74],
            "autoattack": [60.0, 28.0, 51.38, 51.38],
        },
    )
    add_run(
        st,
        "dgad-b-s0-5555555555",
        "dgad",
        "wrn34-20",
        "resnet18",
        0,
        {"clean": 85.75, "pgd10": 58.05, "autoattack": 52.34},
        hparams={"gamma": 10.0, "mobilenet_weighting": "literal"},
        per_class={
            "clean": [90.0, 78.0, 87.5, 87.5],
            "pgd10": [70.0, 33.0, 64.6, 64.6],
            "autoattack": [62.0, 31.0, 58.18, 58.18],
        },
    )
    return st


def test_tables(store):
    tables = lb.leaderboard_tables(store, "paper")
    assert [t.title for t in tables] == [
        "cifar10: wrn34-10 → resnet18",
        "cifar10: wrn34-20 → resnet18",
    ]
    first = tables[0]
    assert [r.method for r in first.rows] == ["dgad", "adaad", "pgd-at"]  # every row has AA
    assert first.rank_key == "autoattack" and first.ranked_on_common
    assert [r.label for r in first.rows] == ["dgad", "adaad", "pgd-at"]  # one config each
    assert first.columns == [
        "clean",
        "worst_class/clean",
        "pgd10",
        "worst_class/pgd10",
        "autoattack",
        "worst_class/autoattack",
    ]
    dgad = first.rows[0]
    assert dgad.seeds == 2 and dgad.mean["autoattack"] == pytest.approx(50.5)
    assert dgad.std["autoattack"] == pytest.approx(0.7071, abs=1e-4)
    assert dgad.best == {"clean", "pgd10", "autoattack", "worst_class/clean", "worst_class/pgd10"}
    assert first.rows[1].flags == ["ordering"]
    # worst class: mean ± std over the seeds of each seed's lowest per-class accuracy
    assert dgad.mean["worst_class/clean"] == pytest.approx(81.0)  # seeds: 80, 82
    assert dgad.std["worst_class/clean"] == pytest.approx(1.4142, abs=1e-4)
    assert dgad.mean["worst_class/pgd10"] == pytest.approx(32.0)  # 30, 34
    assert dgad.std["worst_class/pgd10"] == pytest.approx(2.8284, abs=1e-4)
    assert dgad.mean["worst_class/autoattack"] == pytest.approx(26.0)  # 25, 27
    assert dgad.per_class["pgd10"] == pytest.approx([69.0, 32.0, 60.5, 60.5])
    adaad, pgd_at = first.rows[1], first.rows[2]
    assert not any(k.startswith("worst_class/") for k in adaad.mean)  # stored without them
    assert adaad.no_per_class == ["clean", "pgd10", "autoattack"] and adaad.per_class == {}
    assert [lb.cell_text(adaad, c) for c in first.columns[1::2]] == ["—", "—", "—"]
    assert "worst_class/clean" not in pgd_at.std  # one seed: no std
    assert pgd_at.mean["worst_class/autoattack"] == pytest.approx(28.0)
    assert pgd_at.best == {"worst_class/autoattack"}  # ranked per column, as every column
    assert "No worst-class accuracy" in first.notes()[-1] and first.notes()[-1].endswith("adaad.")
    assert first.rows[2].schedule == "short"
    # the teacher-free run stands in both teachers' tables
    assert [r.method for r in tables[1].rows] == ["dgad", "pgd-at"]
    assert dgad.provenance["gpu_h"] == pytest.approx(4.0) and dgad.provenance["code"] == ["abc1234"]
    # hyperparameters away from the method's defaults are listed, even on a row whose label
    # does not name them (no other row of its method differs); defaults are not
    assert dgad.provenance["settings"] == []
    assert first.rows[2].label == "pgd-at"
    assert first.rows[2].provenance["settings"] == ["extra_passes=false"]
    assert tables[1].rows[0].provenance["settings"] == ["gamma=10"]


def test_markdown_golden(store):
    text = lb.to_markdown(lb.leaderboard_tables(store, "paper"), "paper")
    if os.environ.get("UPDATE_GOLDEN"):
        GOLDEN.write_text(text)
    assert text == GOLDEN.read_text()


def test_csv_and_latex(store):
    tables = lb.leaderboard_tables(store, "paper")
    frame = pd.read_csv(io.StringIO(lb.to_csv(tables)))
    row = frame[
        (frame.method == "dgad") & (frame.teacher == "wrn34-10") & (frame.attack == "clean")
    ]
    assert row["mean"].item() == pytest.approx(87.5) and row["seeds"].item() == 2
    assert set(frame.checks) == {"ok", "ordering"}
    wc = frame[(frame.teacher == "wrn34-10") & (frame.attack == "worst_class/pgd10")]
    assert dict(zip(wc.method, wc["mean"])) == pytest.approx(
        {"dgad": 32.0, "adaad": float("nan"), "pgd-at": 28.0}, nan_ok=True
    )
    assert wc.loc[wc.method == "dgad", "std"].item() == pytest.approx(2.8284, abs=1e-4)
    latex = lb.to_latex(tables)
    assert r"\textbf{50.50 $\pm$ 0.71}" in latex and r"\begin{tabular}" in latex
    assert "PGD WC" in latex and r"\textbf{32.00 $\pm$ 2.83}" in latex


def test_empty(tmp_path):
    assert "No completed runs yet" in lb.to_markdown(
        lb.leaderboard_tables(Store(tmp_path), "g"), "g"
    )


# -- a store as a researcher's week leaves it -----------------------------------------------------
# Two teachers (one the grid trains, one from RobustBench), DGAD on its full schedule (two seeds,
# evaluated with AutoAttack on top), a short DGAD run, DGAD with another gamma (evaluated with
# PGD-50 on top), TRADES: every student run of the grid "lb".
LB = """
dataset = "digits"
students = ["tiny_cnn"]
teachers = ["small-pgdat", "rb"]
methods = ["dgad", "trades"]
seeds = [0]
[threat]
eps = "8/255"
step_size = "2/255"
[train]
epochs = 3
milestones = [2]
[eval]
attacks = ["clean", "fgsm", "pgd10"]
[teacher.small-pgdat]
model = "small_cnn"
train = { method = "pgd-at", epochs = 3 }
[teacher.rb]
model = "small_cnn"
robustbench = "Made2025Up"
"""
OWN = ["clean", "fgsm", "pgd10"]


def finish(store, spec, acc, extra=None):
    """Store ``spec`` as complete with accuracies ``acc`` (%) on the grid's own attacks (its
    Worst over them) and ``extra`` attacks run on top, as ``bench eval --attack`` adds them."""
    store.begin(spec.run_id, spec.config)
    results = {a: {"accuracy": v / 100, "n": 359, "params": {"name": a}} for a, v in acc.items()}
    results["worst_case"]["params"] = {"name": "worst_case", "of": OWN}
    for a, v in (extra or {}).items():
        results[a] = {"accuracy": v / 100, "n": 359, "params": {"name": a}}
    store.finish(spec.run_id, {"results": results, "provenance": PROV, "wall_time_s": 60.0})


def acc(clean, fgsm, pgd, worst):
    return {"clean": clean, "fgsm": fgsm, "pgd10": pgd, "worst_case": worst}


def lb_grid(tmp_path, extra="", **overrides):
    path = tmp_path / "lb.toml"
    path.write_text(LB + extra)
    return load_grid(str(path), **overrides)


def one(grid, method, teacher):
    (spec,) = [
        r
        for r in grid.runs
        if r.config["method"]["name"] == method
        and (r.config["teacher"] or {}).get("name") == teacher
    ]
    return spec


@pytest.fixture
def week(tmp_path):
    store = Store(tmp_path / "store")
    full = lb_grid(tmp_path)
    finish(store, full.teacher_runs["small-pgdat"], acc(95, 75, 65, 64))
    dgad = one(full, "dgad", "small-pgdat")
    finish(store, dgad, acc(80, 60, 50, 48), {"autoattack": 45})
    seed1 = one(lb_grid(tmp_path, seeds=[1]), "dgad", "small-pgdat")
    finish(store, seed1, acc(82, 62, 52, 50), {"autoattack": 47})
    short = one(lb_grid(tmp_path, epochs=1), "dgad", "small-pgdat")
    finish(store, short, acc(70, 50, 40, 38))
    gamma = one(lb_grid(tmp_path, extra="[method.dgad]\ngamma = 10\n"), "dgad", "small-pgdat")
    finish(store, gamma, acc(79, 61, 53, 51), {"pgd50": 44})
    finish(store, one(full, "trades", None), acc(85, 66, 56, 54))
    finish(store, one(full, "dgad", "rb"), acc(84, 63, 57, 56))
    # the RobustBench teacher, evaluated on its own with `bench eval Made2025Up --robustbench`
    config = external_config(
        "robustbench", "Made2025Up", {"robustbench": "Made2025Up"}, full.runs[0].config["dataset"]
    )
    store.begin("eval-Made2025Up-digits-0000000000", config)
    results = {
        a: {"accuracy": v, "n": 359, "params": {}} for a, v in [("clean", 0.9), ("pgd10", 0.6)]
    }
    store.finish("eval-Made2025Up-digits-0000000000", {"results": results})
    return store, {"dgad": dgad, "seed1": seed1, "short": short, "gamma": gamma}


def test_a_row_is_one_configuration_labelled_by_what_differs(week):
    store, runs = week
    rb, small = lb.leaderboard_tables(store, "lb")
    assert (rb.title, small.title) == ("digits: rb → tiny_cnn", "digits: small-pgdat → tiny_cnn")
    assert sorted((r.method, r.seeds) for r in small.rows) == [
        ("dgad", 1),
        ("dgad", 1),
        ("dgad", 2),
        ("trades", 1),
    ]
    labels = {r.label: r for r in small.rows}
    assert set(labels) == {
        "trades",
        "dgad [gamma=5]",
        "dgad [gamma=10]",
        "dgad (short: 1/3 ep) [gamma=5]",
    }
    full = labels["dgad [gamma=5]"]
    assert full.runs == sorted([runs["dgad"].run_id, runs["seed1"].run_id]) and full.seeds == 2
    assert full.mean["clean"] == pytest.approx(81.0) and full.mean["worst_case"] == pytest.approx(
        49
    )
    assert labels["dgad (short: 1/3 ep) [gamma=5]"].runs == [runs["short"].run_id]
    assert labels["dgad (short: 1/3 ep) [gamma=5]"].schedule == "short"
    assert labels["dgad [gamma=10]"].runs == [runs["gamma"].run_id]
    assert [r.label for r in rb.rows] == ["dgad", "trades"]  # one dgad config there: no suffix


def test_full_and_short_alone_read_as_in_the_issue(tmp_path):
    store = Store(tmp_path / "store")
    grid = lb_grid(tmp_path)
    a, b = one(grid, "dgad", "small-pgdat"), one(lb_grid(tmp_path, epochs=1), "dgad", "small-pgdat")
    finish(store, a, acc(80, 60, 50, 48))
    finish(store, b, acc(30, 20, 10, 9))
    (table,) = lb.leaderboard_tables(store, "lb")
    assert [r.runs for r in table.rows] == [[a.run_id], [b.run_id]]
    assert [(r.label, r.seeds) for r in table.rows] == [("dgad", 1), ("dgad (short: 1/3 ep)", 1)]
    assert table.rows[0].mean["clean"] == pytest.approx(80.0)  # not averaged with the short run


def test_ranked_by_the_strongest_attack_every_row_has(week):
    store, _ = week
    rb, small = lb.leaderboard_tables(store, "lb")
    # AA exists for one row only: ranked by Worst (all rows, over the same attacks), trades first
    assert small.columns == ["clean", "fgsm", "pgd10", "autoattack", "pgd50", "worst_case"]
    assert [r.method for r in small.rows] == ["trades", "dgad", "dgad", "dgad"]
    assert [r.mean["worst_case"] for r in small.rows] == [54.0, 51.0, 49.0, 38.0]
    assert small.rank_key == "worst_case" and small.ranked_on_common
    assert [r.label for r in small.rows] == [
        "trades",
        "dgad [gamma=10]",
        "dgad [gamma=5]",
        "dgad (short: 1/3 ep) [gamma=5]",
    ]
    assert [r.missing for r in small.rows] == [["autoattack"], ["autoattack"], [], ["autoattack"]]
    assert [r.name for r in small.rows] == [
        "trades †",
        "dgad [gamma=10] †",
        "dgad [gamma=5]",
        "dgad (short: 1/3 ep) [gamma=5] †",
    ]
    assert small.notes() == [
        "Ranked by Worst, the strongest attack every row was evaluated with.",
        "† not evaluated with AA: trades, dgad [gamma=10], dgad (short: 1/3 ep) [gamma=5].",
        "No worst-class accuracy (stored before per-class accuracies were kept; bench eval RUN "
        "--suite config adds them from the saved per-sample results): trades, dgad [gamma=10], "
        "dgad [gamma=5], dgad (short: 1/3 ep) [gamma=5].",
    ]
    assert [r.label for r in rb.rows] == ["dgad", "trades"] and rb.rank_key == "worst_case"
    text = lb.to_markdown([small], "lb")
    assert (
        text.index("| trades †")
        < text.index("| dgad [gamma=10] †")
        < text.index("| dgad [gamma=5] ")
    )
    assert "† not evaluated with AA: trades" in text


def row(label, **mean):
    return Row(label, [label], mean, {}, [], "full", {}, label=label)


def test_rank_column_rules():
    a = row("a", clean=90.0, pgd10=50.0, autoattack=45.0, worst_case=44.0)
    b = row("b", clean=80.0, pgd10=55.0, worst_case=50.0)
    assert lb.rank_column(["clean", "pgd10", "autoattack", "worst_case"], [a, b]) == (
        "worst_case",
        True,
    )
    b.worst_of, a.worst_of = ('["clean","pgd10"]',), ('["clean","fgsm","pgd10"]',)
    # Worst over other attacks is not like with like: the next common column
    assert lb.rank_column(["clean", "pgd10", "autoattack", "worst_case"], [a, b]) == (
        "pgd10",
        True,
    )
    c = row("c", pgd10=40.0)
    d = row("d", clean=70.0)
    # no column every row has: the strongest that most rows have; the rows without it come last
    assert lb.rank_column(["clean", "pgd10"], [d, c]) == ("pgd10", False)
    table = lb.Table("d", "t", "s", ["clean", "pgd10"], [d, c])
    lb.rank_rows(table.columns, table.rows)
    assert [(r.name, r.missing) for r in table.rows] == [("c †", ["clean"]), ("d †", ["pgd10"])]
    assert table.notes() == [
        "Ranked by PGD, which not every row was evaluated with: rows without it come last, "
        "unranked (†).",
        "† not evaluated with PGD: d.",
        "† not evaluated with Clean: c.",
    ]


def test_extra_attack_has_its_own_column_and_leaves_worst_alone(week):
    store, runs = week
    _, small = lb.leaderboard_tables(store, "lb")
    gamma = next(r for r in small.rows if r.label == "dgad [gamma=10]")
    assert gamma.mean["pgd50"] == pytest.approx(44.0) and gamma.mean["worst_case"] == 51.0
    assert [r.has("pgd50") for r in small.rows] == [False, True, False, False]
    assert "pgd50" in gamma.best  # the only value in its column


def test_teachers_and_threat_model_are_stated(week):
    store, _ = week
    rb, small = lb.leaderboard_tables(store, "lb")
    assert small.threat == {"norm": "L∞", "eps": "8/255"} and small.threat_text == "L∞, ε = 8/255"
    (teacher,) = small.teachers
    assert teacher.source == "trained by the grid: pgd-at, 3 ep"
    assert teacher.accuracy == pytest.approx(
        {"clean": 95.0, "fgsm": 75.0, "pgd10": 65.0, "worst_case": 64.0}
    )
    assert teacher.summary(small.columns) == (
        "small-pgdat (small_cnn, trained by the grid: pgd-at, 3 ep): "
        "Clean 95.00, FGSM 75.00, PGD 65.00, Worst 64.00"
    )
    (external,) = rb.teachers
    assert external.summary() == ("rb (small_cnn, RobustBench Made2025Up): Clean 90.00, PGD 60.00")
    assert external.run == "eval-Made2025Up-digits-0000000000"
    text = lb.to_markdown([rb, small], "lb")
    assert "Threat model: L∞, ε = 8/255." in text
    assert "Teacher rb (small_cnn, RobustBench Made2025Up): Clean 90.00, PGD 60.00." in text


def test_external_teacher_without_an_evaluation(tmp_path):
    store = Store(tmp_path / "store")
    finish(store, one(lb_grid(tmp_path), "dgad", "rb"), acc(84, 63, 57, 56))
    (table,) = lb.leaderboard_tables(store, "lb")
    assert table.teachers[0].summary() == "rb (small_cnn, RobustBench Made2025Up): not evaluated"


def test_short_teacher_has_tables_of_its_own(week, tmp_path):
    store, _ = week
    grid = lb_grid(tmp_path, teacher_epochs=1)
    finish(store, grid.teacher_runs["small-pgdat"], acc(60, 40, 30, 29))
    finish(store, one(grid, "dgad", "small-pgdat"), acc(50, 30, 20, 18))
    titles = [t.title for t in lb.leaderboard_tables(store, "lb")]
    assert titles == [
        "digits: rb → tiny_cnn",
        "digits: small-pgdat → tiny_cnn",
        "digits: small-pgdat (short: 1/3 ep) → tiny_cnn",
    ]
    short = lb.leaderboard_tables(store, "lb")[2]
    assert [r.label for r in short.rows] == ["trades", "dgad"]  # one dgad config in this table
    assert short.teachers[0].source == "trained by the grid: pgd-at, 1 ep (short: 1/3 ep)"
    assert short.teachers[0].accuracy["clean"] == pytest.approx(60.0)


def test_formats_agree(week):
    store, _ = week
    tables = lb.leaderboard_tables(store, "lb")
    frame = pd.read_csv(io.StringIO(lb.to_csv(tables)))
    small = frame[(frame.teacher == "small-pgdat") & (frame.role == "student")]
    order = small.drop_duplicates("label").sort_values("rank")["label"].tolist()
    assert order == [r.label for r in tables[1].rows]
    assert set(small.ranked_by) == {"worst_case"} and set(small.eps) == {"8/255"}
    assert set(small[small.label == "trades"].missing) == {"autoattack"}
    teacher = frame[(frame.teacher == "small-pgdat") & (frame.role == "teacher")]
    assert dict(zip(teacher.attack, teacher["mean"])) == pytest.approx(
        {"clean": 95.0, "fgsm": 75.0, "pgd10": 65.0, "worst_case": 64.0}
    )
    latex = lb.to_latex(tables)
    assert r"trades $^\dagger$" in latex and r"L$\infty$, $\varepsilon$ = 8/255" in latex
    assert "dgad (short: 1/3 ep) [gamma=5]" in latex


def test_old_index_is_rebuilt_with_row_keys(week):
    store, runs = week
    with store._db() as conn:  # an index as the previous schema left it
        conn.execute("PRAGMA user_version = 2")
        conn.execute("ALTER TABLE runs DROP COLUMN row_key")
    frame = store.frame("runs", "lb")
    assert "row_key" in frame.columns
    keys = dict(zip(frame.run_id, frame.row_key))
    assert keys[runs["dgad"].run_id] == keys[runs["seed1"].run_id] != keys[runs["short"].run_id]


def test_index_of_schema_3_is_rebuilt_with_per_class_columns(store):
    """An index from before per-class accuracies (schema 3) is rebuilt from the run
    directories on the next read: the runs that have them show them, the others NULL."""
    with store._db() as conn:
        conn.execute("PRAGMA user_version = 3")
        conn.execute("ALTER TABLE results DROP COLUMN worst_class")
        conn.execute("ALTER TABLE results DROP COLUMN per_class")
    frame = store.frame("results").set_index(["run_id", "attack"])
    assert frame.loc[("dgad-a-s0-1111111111", "pgd10"), "worst_class"] == pytest.approx(0.30)
    per_class = json.loads(frame.loc[("dgad-a-s0-1111111111", "pgd10"), "per_class"])
    assert per_class == pytest.approx([0.70, 0.30, 0.60, 0.60])
    assert frame.loc[("adaad-a-s0-3333333333", "pgd10"), ["per_class", "worst_class"]].isna().all()
    with store._db() as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION  # 5 and on


# -- Worst from a real evaluation: an extra `bench eval --attack` does not move it ----------------
def test_bench_eval_extra_attacks_leave_worst_over_the_grids_attacks(tmp_path, monkeypatch):
    from harness.evaluation.evaluate import eval_subset
    from harness.execution.external import evaluate_target
    from harness.execution.inputs import build_model, load_dataset
    from harness.execution.run_evaluation import evaluate_run
    from harness.utils.atomic import save_atomic
    from harness.utils.values import derive_seed
    from tests.helpers import fit

    (spec,) = load_grid("smoke", method="pgd-at").runs
    cfg = spec.config
    store = Store(tmp_path / "store")
    data = load_dataset(cfg["dataset"])
    torch.set_num_threads(1)
    few = data.train.subset(torch.arange(256))
    model = fit(build_model(cfg["model"], data.num_classes, data.image_size, 0), few, 15)
    store.begin(spec.run_id, cfg)
    save_atomic({"student": model.state_dict()}, store.checkpoint(spec.run_id, "best"))
    cpu = torch.device("cpu")
    out = evaluate_run(model, data, cfg, store, spec.run_id, device=cpu, subset=96, progress=False)
    store.finish(spec.run_id, {"results": out["results"], "checks": out["checks"]})
    before = store.metrics(spec.run_id)["results"]
    assert before["worst_case"]["params"]["of"] == OWN
    evaluate_target(
        spec.run_id,
        suite="whitebox",
        attack_names=["pgd20", "pgd50"],
        subset=96,
        surrogates=[],
        model=None,
        dataset=None,
        robustbench=False,
        store=str(store.root),
        data_root=None,
        device=cpu,
        progress=False,
        echo=lambda line: None,
    )
    after = store.metrics(spec.run_id)["results"]
    assert set(after) == {*OWN, "pgd20", "pgd50", "worst_case"}
    assert after["worst_case"] == before["worst_case"]  # over the grid's attacks, as before
    masks = torch.load(store.run_dir(spec.run_id) / "eval" / "masks.pt")
    assert set(masks) == {*OWN, "pgd20", "pgd50"}
    survivors = masks["clean"] & masks["fgsm"] & masks["pgd10"]
    assert after["worst_case"]["accuracy"] == pytest.approx(float(survivors.float().mean()))
    assert after["pgd50"]["accuracy"] < after["clean"]["accuracy"]  # a model worth attacking
    # per class: each class's share of its test images that survive, from the masks and labels
    labels = eval_subset(data.test, 96, derive_seed(cfg["seed"], "eval")).y
    for name in (*OWN, "pgd50"):
        want = [float(masks[name][labels == c].float().mean()) for c in range(10)]
        assert after[name]["per_class"] == pytest.approx(want)
        assert after[name]["class_n"] == [int((labels == c).sum()) for c in range(10)]
    want = [float(survivors[labels == c].float().mean()) for c in range(10)]
    assert after["worst_case"]["per_class"] == pytest.approx(want)
    (table,) = lb.leaderboard_tables(store, "smoke")
    assert table.columns == [
        "clean",
        "worst_class/clean",
        "fgsm",
        "pgd10",
        "worst_class/pgd10",
        "pgd20",
        "pgd50",
        "worst_case",
    ]
    row = table.rows[0]
    assert row.mean["worst_case"] == pytest.approx(100 * before["worst_case"]["accuracy"])
    for name in ("clean", "pgd10"):
        assert row.mean[f"worst_class/{name}"] == pytest.approx(100 * min(after[name]["per_class"]))
        assert row.per_class[name] == pytest.approx([100 * v for v in after[name]["per_class"]])

    # a run stored before per-class accuracies were kept: `bench eval RUN --suite config` adds
    # them from the saved per-sample results, without attacking again
    import harness.evaluation.evaluate as ev
    from harness.utils.atomic import write_json_atomic

    metrics = store.metrics(spec.run_id)
    for result in metrics["results"].values():
        result.pop("per_class"), result.pop("class_n")
    write_json_atomic(metrics, store.run_dir(spec.run_id) / "metrics.json")
    store.rebuild_index()
    (table,) = lb.leaderboard_tables(store, "smoke")
    assert table.rows[0].no_per_class == ["clean", "pgd10"]
    built = []
    real = ev.build_attack
    monkeypatch.setattr(ev, "build_attack", lambda c, s: built.append(s) or real(c, s))
    kw = {"surrogates": [], "model": None, "dataset": None, "robustbench": False}
    evaluate_target(spec.run_id, suite="config", attack_names=[], subset=96, **kw,
                    store=str(store.root), data_root=None, device=cpu, progress=False,
                    echo=lambda line: None)  # fmt: skip
    evaluate_target(spec.run_id, suite="whitebox", attack_names=["pgd20", "pgd50"], subset=96,
                    **kw, store=str(store.root), data_root=None, device=cpu, progress=False,
                    echo=lambda line: None)  # fmt: skip
    assert built == []
    again = store.metrics(spec.run_id)["results"]
    assert {n: again[n]["per_class"] for n in again} == {n: after[n]["per_class"] for n in after}
    (table,) = lb.leaderboard_tables(store, "smoke")
    assert table.rows[0].no_per_class == [] and "worst_class/pgd10" in table.rows[0].mean


def test_labels_name_what_differs(tmp_path):
    from harness.store.index import seedless

    base = seedless(one(lb_grid(tmp_path), "dgad", "small-pgdat").config)
    path = tmp_path / "more" / "lb.toml"
    path.parent.mkdir()
    path.write_text(LB.replace('"pgd10"]', '"pgd10", "cw_inf"]'))
    more = seedless(one(load_grid(str(path)), "dgad", "small-pgdat").config)
    # the teacher the grid trains is evaluated with the grid's attacks too: another teacher run
    ta, tb = (c["teacher"]["run_id"][-10:] for c in (base, more))
    assert lb.config_labels("dgad", {"a": base, "b": more}) == {
        "a": f"dgad [teacher.run_id={ta}, no cw_inf]",
        "b": f"dgad [teacher.run_id={tb}, cw_inf]",
    }
    other = json.loads(json.dumps(base))
    other["teacher"]["run_id"] = "pgd-at-digits-small_cnn-none-s0-abcdef1234"
    other["train"]["lr"] = 0.05
    assert lb.config_labels("dgad", {"a": base, "c": other}) == {
        "a": "dgad [lr=0.1, teacher.run_id=" + base["teacher"]["run_id"][-10:] + "]",
        "c": "dgad [lr=0.05, teacher.run_id=abcdef1234]",
    }
    assert lb.config_labels("dgad", {"a": base}) == {"a": "dgad"}


def test_markdown_escapes_names_so_no_row_is_forged(tmp_path):
    """A method name with a newline, a pipe and HTML (from a store written before names were
    checked) renders as one row holding the name as text."""
    st = Store(tmp_path)
    forged = "evil\n| fake | 99.99 |\n<b>x</b>"
    add_run(st, "r-1", forged, "t", "resnet18", 0, {"clean": 50.0})
    add_run(st, "r-2", "dgad", "t", "resnet18", 0, {"clean": 40.0})
    text = lb.to_markdown(lb.leaderboard_tables(st, "paper"), "paper")
    table = text.split("## ")[1].split("<details>")[0]
    rows = [line for line in table.splitlines() if line.startswith("|")]
    assert len(rows) == 4  # header, rule, two methods
    assert rows[2].startswith(r"| evil\\n\| fake \| 99.99 \|\\n\<b\>x\</b\> |")
    assert "<b>" not in text and "99.99 |\n" not in text
    assert lb.md_escape("tiny_cnn") == "tiny_cnn" and lb.md_escape("_x_") == r"\_x\_"
    assert lb.md_escape("dgad [gamma=4]") == "dgad [gamma=4]"
    assert lb.md_escape("[x](http://e)") == r"[x\](http://e)"  # no link
