"""Leaderboard tables from the store: grouping, mean ± std, ranking, best marks, flags;
Markdown against a golden file, CSV and LaTeX by value."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pandas as pd
import pytest

from harness import leaderboard as lb
from harness.store import Store

GOLDEN = Path(__file__).parent / "golden" / "leaderboard.md"
PROV = {
    "code": "abc1234",
    "packages": {"torch": "2.11.0"},
    "gpu": "NVIDIA H100",
    "device": "cuda",
    "train_images": 50000,
}


def add_run(store, run_id, method, teacher, student, seed, acc, *, schedule="full", failed=()):
    config = {
        "kind": "student",
        "method": {"name": method, "hparams": {}},
        "dataset": {"name": "cifar10", "options": {}},
        "model": student,
        "teacher": {"name": teacher} if teacher else None,
        "seed": seed,
        "train": {"epochs": 200 if schedule == "full" else 20},
        "full_epochs": 200,
        "schedule": schedule,
        "grids": ["paper"],
    }
    store.begin(run_id, config)
    checks = {"ordering": {"ok": "ordering" not in failed}, "eps_sweep": {"ok": True}}
    results = {k: {"accuracy": v / 100, "n": 10000, "params": {"name": k}} for k, v in acc.items()}
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
    )
    add_run(
        st,
        "dgad-a-s1-2222222222",
        "dgad",
        "wrn34-10",
        "resnet18",
        1,
        {"clean": 88.0, "pgd10": 56.0, "autoattack": 51.0},
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
    )
    add_run(
        st,
        "dgad-b-s0-5555555555",
        "dgad",
        "wrn34-20",
        "resnet18",
        0,
        {"clean": 85.75, "pgd10": 58.05, "autoattack": 52.34},
    )
    return st


def test_tables(store):
    tables = lb.leaderboard_tables(store, "paper")
    assert [t.title for t in tables] == [
        "cifar10: wrn34-10 → resnet18",
        "cifar10: wrn34-20 → resnet18",
    ]
    first = tables[0]
    assert [r.method for r in first.rows] == ["dgad", "adaad", "pgd-at"]  # sorted by AA
    assert first.columns == ["clean", "pgd10", "autoattack"]
    dgad = first.rows[0]
    assert dgad.seeds == 2 and dgad.mean["autoattack"] == pytest.approx(50.5)
    assert dgad.std["autoattack"] == pytest.approx(0.7071, abs=1e-4)
    assert dgad.best == {"clean", "pgd10", "autoattack"}
    assert first.rows[1].flags == ["ordering"]
    assert first.rows[2].schedule == "short"
    # the teacher-free run stands in both teachers' tables
    assert [r.method for r in tables[1].rows] == ["dgad", "pgd-at"]
    assert dgad.provenance["gpu_h"] == pytest.approx(4.0) and dgad.provenance["code"] == ["abc1234"]


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
    latex = lb.to_latex(tables)
    assert r"\textbf{50.50 $\pm$ 0.71}" in latex and r"\begin{tabular}" in latex


def test_empty(tmp_path):
    assert "No completed runs yet" in lb.to_markdown(
        lb.leaderboard_tables(Store(tmp_path), "g"), "g"
    )
