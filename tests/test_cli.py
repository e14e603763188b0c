"""The ``bench`` CLI: help everywhere, one-line errors with exit code 2, nothing half-written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import harness
from harness.grid.load import GRID_DIR
from tests.helpers import bench

BENCH = [sys.executable, "-m", "harness.cli"]


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["run"],
        ["eval"],
        ["list"],
        ["show"],
        ["leaderboard"],
        ["new-method"],
        ["status"],
        ["plan"],
        ["teachers"],
        ["store", "check"],
        ["store", "rebuild"],
    ],
)
def test_help_everywhere(capsys, args):
    code, out, _ = bench(capsys, *args, "--help")
    assert code == 0 and "Usage:" in out


def test_list(capsys):
    code, out, _ = bench(capsys, "list", "methods")
    rows = [line.split(maxsplit=1) for line in out.splitlines()]
    assert code == 0 and [name for name, _ in rows] == harness.list_methods()
    cites = dict(rows)  # each method with its paper
    assert cites["mtard"].startswith("MTARD (mtard): Zhao et al.") and "ECCV 2022" in cites["mtard"]
    assert "NeurIPS 2023" in cites["fair-ard"] and "NeurIPS 2024" in cites["absld"]
    assert "CVPR 2024" in cites["peeraid"] and "AAAI 2020" in cites["ard"]
    assert all("official code" not in cite and "``" not in cite for cite in cites.values())
    code, out, _ = bench(capsys, "list", "grids")
    assert "smoke" in out.split()
    code, out, _ = bench(capsys, "list", "models", "wrn*")
    assert out.split() == ["wrn34_10", "wrn34_20"]


def test_list_takes_substrings_and_attacks_lists_what_attack_takes(capsys):
    code, out, _ = bench(capsys, "list", "models", "res")
    assert code == 0
    assert out.splitlines() == ["preact_resnet18", "resnet18", "resnet34"]
    code, out, _ = bench(capsys, "list", "models", "RESNET3")
    assert out.splitlines() == ["resnet34"]
    code, out, _ = bench(capsys, "list", "grids", "cifar10")
    assert out.split() == ["cifar10", "cifar10-mini", "cifar100"]
    code, out, _ = bench(capsys, "list", "attacks")
    from harness.grid.suites import PRESETS

    names = [line.split()[0] for line in out.splitlines()]
    assert code == 0 and names == list(PRESETS)
    assert "pgd" not in names  # a registered attack, not a preset: --attack refuses it
    assert "pgd10        pgd steps=10" in out.splitlines()
    code, out, _ = bench(capsys, "list", "attacks", "pgd")
    assert [line.split()[0] for line in out.splitlines()] == ["pgd10", "pgd20", "pgd50"]


def grid_file(tmp_path: Path, extra: str = "", eps: str = '"8/255"') -> str:
    path = tmp_path / "g.toml"
    path.write_text(
        f'dataset = "digits"\nstudents = ["tiny_cnn"]\nmethods = ["pgd-at"]\n'
        f"[threat]\neps = {eps}\n[train]\nepochs = 1\n{extra}"
    )
    return str(path)


def assert_one_line_error(code: int, err: str, needle: str, store: Path) -> None:
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], err
    assert not (store / "runs").exists() or not any((store / "runs").iterdir())


def test_bad_inputs_exit_2_and_write_nothing(capsys, tmp_path):
    store = tmp_path / "store"
    cases = [
        (["--grid", "smoke", "--method", "nope"], "unknown method 'nope'"),
        (["--grid", "nope"], "unknown grid 'nope'"),
        (["--grid", "smoke", "--student", "resnet19"], "unknown model 'resnet19'"),
        (["--grid", "smoke", "--dataset", "cifar11"], "unknown dataset 'cifar11'"),
        (["--grid", "smoke", "--teacher", "nobody"], "unknown teacher 'nobody'"),
        (["--grid", grid_file(tmp_path, eps="8")], "write eps"),
        (["--grid", "smoke", "--dataset", "npz:/no/such/file.npz"], "/no/such/file.npz"),
        (
            [
                "--grid",
                "smoke",
                "--method",
                "pgd-at",
                "--dataset",
                "cifar10",
                "--data-root",
                str(tmp_path / "empty"),
            ],
            "not found",
        ),
    ]
    for args, needle in cases:
        code, _, err = bench(capsys, "run", *args, "--store", str(store), "--no-progress")
        assert_one_line_error(code, err, needle, store)


def test_malformed_toml_names_file_and_line(capsys, tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text('dataset = "digits"\nstudents = ["tiny_cnn"\nmethods = ["dgad"]\n')
    code, _, err = bench(capsys, "run", "--grid", str(path), "--store", str(tmp_path / "s"))
    assert_one_line_error(code, err, "broken.toml: invalid TOML", tmp_path / "s")
    assert "line 3" in err


def test_teacher_checkpoint_of_another_architecture(capsys, tmp_path):
    ckpt = tmp_path / "teacher.pt"
    torch.save({"state_dict": harness.create_model("tiny_cnn").state_dict()}, ckpt)
    path = tmp_path / "g.toml"
    path.write_text(
        'dataset = "digits"\nstudents = ["tiny_cnn"]\nmethods = ["dgad"]\nteachers = ["t"]\n'
        f'[teacher.t]\nmodel = "small_cnn"\ncheckpoint = "{ckpt}"\n'
    )
    store = tmp_path / "store"
    code, _, err = bench(capsys, "run", "--grid", str(path), "--store", str(store), "--no-progress")
    assert_one_line_error(code, err, "does not fit model 'small_cnn'", store)


def test_show_and_leaderboard_unknown_run(capsys, tmp_path):
    code, _, err = bench(capsys, "show", "nope", "--store", str(tmp_path))
    assert code == 2 and "no run 'nope'" in err
    code, out, _ = bench(capsys, "leaderboard", "--grid", "smoke", "--store", str(tmp_path))
    assert code == 0 and "No completed runs yet" in out


def test_smoke_grid_end_to_end(tmp_path):
    """``bench run --method dgad --grid smoke``: teacher first, student beats chance under PGD."""
    store = tmp_path / "store"
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    cmd = [
        *BENCH,
        "run",
        "--method",
        "dgad",
        "--grid",
        "smoke",
        "--store",
        str(store),
        "--no-progress",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=3600)
    assert done.returncode == 0, done.stderr
    assert "leaderboard written to" in done.stdout
    runs = sorted((store / "runs").iterdir())
    assert [r.name.split("-")[0] for r in runs] == ["dgad", "pgd"]  # the student and its teacher
    student = next(r for r in runs if r.name.startswith("dgad"))
    metrics = json.loads((student / "metrics.json").read_text())
    assert set(metrics["results"]) == {"clean", "fgsm", "pgd10", "worst_case"}
    assert metrics["results"]["worst_case"]["params"]["of"] == ["clean", "fgsm", "pgd10"]
    assert all(check["ok"] for check in metrics["checks"].values()), metrics["checks"]
    acc = {k: v["accuracy"] for k, v in metrics["results"].items()}
    assert acc["pgd10"] > 0.2 and acc["clean"] >= acc["fgsm"] >= acc["pgd10"]
    assert metrics["results"]["pgd10"]["params"]["steps"] == 10
    assert (student / "checkpoints" / "best.pt").exists()
    board = (store / "leaderboards" / "smoke.md").read_text()
    assert "dgad" in board and "small-pgdat" in board
    again = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=3600)
    assert again.returncode == 0 and again.stdout.count("skip ") == 2
    show = subprocess.run(
        [*BENCH, "show", "dgad", "--store", str(store)], capture_output=True, text=True, env=env
    )
    assert show.returncode == 0 and "complete" in show.stdout and "pgd10" in show.stdout
    per_class = metrics["results"]["pgd10"]["per_class"]  # digits: 10 classes
    assert len(per_class) == 10 and sum(metrics["results"]["pgd10"]["class_n"]) == 359
    low = min(per_class)
    line = next(x for x in show.stdout.splitlines() if x.strip().startswith("pgd10"))
    assert line.endswith(f"worst class {per_class.index(low)}: {100 * low:.2f}%"), line
    assert "Clean WC" in board and "PGD WC" in board


# -- what the fuzz (tests/test_fuzz.py) found: tracebacks, multi-line errors, stores written ----
def test_names_too_long_for_the_file_system(capsys, tmp_path):
    long = "a" * 300
    store = tmp_path / "store"
    cases = [
        (["status", "--grid", long], f"error: grid {long!r}: File name too long"),
        (["report", "--paper", long, "--store", str(store)], f"error: unknown paper {long!r}"),
        (["eval", long, "--store", str(store)], f"error: no run {long!r} in {store}"),
        (["show", "x", "--store", long], f"error: store folder {long}: File name too long"),
        (
            ["eval", "x.pt", "--model", "tiny_cnn", "--dataset", "cifar10", "--data-root", long],
            f"error: data root {long}: File name too long",
        ),
    ]
    for args, message in cases:
        code, _, err = bench(capsys, *args)
        assert code == 2 and err.strip().split("\n")[0].startswith(message), err
        assert_one_line_error(code, err, message, store)


def test_user_input_with_a_newline_stays_on_one_line(capsys, tmp_path):
    code, _, err = bench(capsys, "new-method", "x", "--methods-dir", "a\nb")
    assert code == 2 and err == "error: methods folder a\\nb does not exist\n"
    code, _, err = bench(capsys, "status", "--grid", "smoke", "a\nb")
    assert code == 2 and err.rstrip("\n").split("\n")[-1] == (
        "Error: Got unexpected extra argument (a b)"
    )
    code, _, err = bench(capsys, "list")
    assert code == 2 and err.rstrip("\n").split("\n")[-1] == (
        "Error: Missing argument '{methods|models|datasets|attacks|grids}'. "
        "Choose from: methods, models, datasets, attacks, grids"
    )


def test_leaderboard_output_that_cannot_be_written(capsys, tmp_path):
    (tmp_path / "notes.txt").write_text("a file, not a folder")
    out, store = tmp_path / "notes.txt" / "board.md", tmp_path / "store"
    code, _, err = bench(
        capsys, "leaderboard", "--grid", "smoke", "--output", str(out), "--store", str(store)
    )
    assert err == (
        f"error: cannot write {out}: File exists; a file stands where a folder should be in "
        "that path: move it or choose another path\n"
    )
    assert_one_line_error(code, err, "cannot write", store)
    assert not store.exists()


def test_reading_an_empty_store_creates_nothing(capsys, tmp_path):
    store = tmp_path / "store"
    for args in (
        ["leaderboard", "--grid", "smoke"],
        ["store", "check"],
        ["plan", "--grid", "smoke"],
    ):
        code, _, _ = bench(capsys, *args, "--store", str(store))
        assert code == 0 and not store.exists(), args


def test_npz_without_a_file(capsys, tmp_path):
    store = tmp_path / "store"
    code, _, err = bench(
        capsys, "eval", "x.pt", "--model", "tiny_cnn", "--dataset", "npz", "--store", str(store)
    )
    assert err == "error: missing parameter(s) path for dataset 'npz'\n"
    assert_one_line_error(code, err, "npz", store)


def test_garbage_checkpoint_is_one_line_without_a_warning(capsys, tmp_path):
    import warnings

    ckpt, store = tmp_path / "garbage.pt", tmp_path / "store"
    ckpt.write_bytes(b"\x80\x04not a pickle")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code, _, err = bench(
            capsys,
            "eval",
            str(ckpt),
            "--model",
            "tiny_cnn",
            "--dataset",
            "digits",
            "--store",
            str(store),
        )
    assert_one_line_error(code, err, f"cannot load checkpoint {ckpt}", store)
    assert not [w for w in caught if "pickle protocol" in str(w.message)]


def test_teachers_of_a_grid_naming_one_teacher_without_a_list(capsys, tmp_path):
    text = (GRID_DIR / "smoke.toml").read_text()
    path = tmp_path / "one.toml"
    path.write_text(text.replace('teachers = ["small-pgdat"]', 'teachers = "small-pgdat"'))
    code, out, _ = bench(capsys, "teachers", "--grid", str(path), "--store", str(tmp_path / "s"))
    assert code == 0 and "small-pgdat" in out and "small_cnn" in out
