"""What the repository's files say about the world outside it: no development machine's paths,
no documents it does not hold, official repositories that exist, and no grid that reads a file
outside the repository unless the user names it."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from harness.cli import main
from harness.grid.load import load_grid
from harness.utils.errors import UserError

ROOT = Path(__file__).resolve().parent.parent
SKIP_DIRS = {".git", ".venv", ".pytest_cache", ".ruff_cache", "results", "__pycache__", "build"}
TEXT = {".py", ".toml", ".md", ".txt", ".j2", ".json", ".cfg", ".ini", ".yml", ".yaml", ""}
#: Written in pieces so that this file does not match itself.
MACHINE_PATHS = ["/" + "work/", "../" + "shared", "shared" + "/docs", "shared" + "/data"]
#: Documents of the development workplace, which the repository does not ship.
ABSENT_DOCS = ["methods" + ".md", "paper_tables" + ".md", "design" + ".md", "docs" + "/seeds"]
#: The authors' repositories the methods follow (each checked to exist).
OFFICIAL = {
    "kunsaram01/DGAD",
    "boyellow/AdaAD",
    "yaodongyu/TRADES",
    "ZFancy/IAD",
    "goldblum/AdversariallyRobustDistillation",
    "zibojia/RSLAD",
    "YisenWang/MART",
    "zhaoshiji123/MTARD",
    "NISP-official/Fair-ARD",
    "zhaoshiji123/ABSLD",
    "jaewonalive/PeerAiD",
}


def repository_files() -> list[Path]:
    """The files git would commit (tracked, or new and not ignored); without git, a walk."""
    try:
        listed = subprocess.run(
            ["git", "-C", str(ROOT), "ls-files", "--cached", "--others", "--exclude-standard"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.splitlines()
        paths = [ROOT / name for name in listed]
    except (OSError, subprocess.CalledProcessError):
        paths = []
        for folder, dirs, files in os.walk(ROOT):
            dirs[:] = [d for d in dirs if d not in SKIP_DIRS and not d.endswith(".egg-info")]
            paths += [Path(folder) / name for name in files]
    return [
        p
        for p in paths
        if p.is_file() and p.name != ".git" and (p.suffix in TEXT or p.name == "Makefile")
    ]


def test_no_file_carries_a_development_machines_paths_or_absent_documents():
    found = []
    for path in repository_files():
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue
        for i, line in enumerate(text.splitlines(), 1):
            for needle in MACHINE_PATHS + ABSENT_DOCS:
                if needle in line:
                    found.append(f"{path.relative_to(ROOT)}:{i}: {needle}")
    if not (ROOT / "docs").is_dir():
        assert not found, "\n".join(found)


def test_methods_cite_official_repositories_that_exist():
    cited = {}
    for path in sorted((ROOT / "methods").glob("*.py")):
        for repo in re.findall(r"official code:\s*([\w.-]+/[\w.-]+)", path.read_text()):
            cited[path.name] = repo
    assert cited["ard.py"] == "goldblum/AdversariallyRobustDistillation"
    assert set(cited.values()) <= OFFICIAL, set(cited.values()) - OFFICIAL


# -- cifar10-mini: its file from --dataset or $BENCH_CIFAR10_MINI ---------------------------------
def test_cifar10_mini_without_a_file_is_one_line_naming_both(monkeypatch):
    monkeypatch.delenv("BENCH_CIFAR10_MINI", raising=False)
    with pytest.raises(UserError) as err:
        load_grid("cifar10-mini")
    message = str(err.value)
    assert "--dataset npz:FILE" in message and "BENCH_CIFAR10_MINI" in message
    assert "\n" not in message


def test_cifar10_mini_without_a_file_exits_2(monkeypatch, capsys, tmp_path):
    monkeypatch.delenv("BENCH_CIFAR10_MINI", raising=False)
    with pytest.raises(SystemExit) as exc:
        main(["run", "--grid", "cifar10-mini", "--store", str(tmp_path / "s"), "--no-progress"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "BENCH_CIFAR10_MINI" in err[0]
    assert not (tmp_path / "s" / "runs").exists()


def test_cifar10_mini_takes_its_file_from_the_environment_or_the_flag(monkeypatch):
    monkeypatch.setenv("BENCH_CIFAR10_MINI", "from-env.npz")
    (run, *_) = load_grid("cifar10-mini").runs
    assert run.config["dataset"] == {"name": "npz", "options": {"path": "from-env.npz"}}
    (run, *_) = load_grid("cifar10-mini", dataset="npz:from-flag.npz").runs
    assert run.config["dataset"] == {"name": "npz", "options": {"path": "from-flag.npz"}}


def test_an_environment_option_must_name_a_variable(tmp_path):
    path = tmp_path / "g.toml"
    path.write_text(
        'dataset = "npz"\nstudents = ["tiny_cnn"]\nmethods = ["pgd-at"]\n'
        "[dataset_options]\npath = { file = 3 }\n"
    )
    with pytest.raises(UserError, match=r'must be a value or \{ env = "NAME" \}'):
        load_grid(str(path))
