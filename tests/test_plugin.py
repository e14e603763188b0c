"""Adding a method: ``bench new-method`` writes a working skeleton, and an installed package
that declares a ``bench.methods`` entry point runs through ``bench run`` like a built-in."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.registry import METHODS
from harness.scaffold import new_method
from harness.utils.errors import UserError

PLUGIN_PYPROJECT = """
[build-system]
requires = ["setuptools"]
build-backend = "setuptools.build_meta"

[project]
name = "bench-plugin-kd"
version = "0.0.1"

[project.entry-points."bench.methods"]
plugin-kd = "bench_plugin_kd"
broken-plugin = "bench_plugin_broken"

[tool.setuptools]
packages = ["bench_plugin_kd", "bench_plugin_broken"]
"""


def unregistered(stem: str) -> str:
    """``stem``, or ``stem-2``, ...: a method name no file of methods/ registers (a user's own
    ``bench new-method my-kd`` must not fail the suite)."""
    return next(n for n in [stem, *(f"{stem}-{i}" for i in range(2, 100))] if n not in METHODS)


def test_new_method_skeleton_passes_its_own_test(tmp_path):
    methods_dir, tests_dir = tmp_path / "m", tmp_path / "t"
    methods_dir.mkdir()
    name = unregistered("my-kd")
    module = name.replace("-", "_")
    method_path, test_path = new_method(name, methods_dir, tests_dir)
    assert method_path.name == f"{module}.py" and test_path.name == f"test_method_{module}.py"
    assert f'@register_method("{name}")' in method_path.read_text()
    # Importing the module registers it; the generated test then runs against it.
    conftest = f"import sys\nsys.path.insert(0, {str(methods_dir)!r})\nimport {module}  # noqa\n"
    (tests_dir / "conftest.py").write_text(conftest)
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tests_dir)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "3 passed" in done.stdout


def test_installed_entry_point_plugin_runs_on_the_smoke_grid(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "bench_plugin_kd").mkdir(parents=True)
    (pkg / "bench_plugin_broken").mkdir()
    (pkg / "pyproject.toml").write_text(PLUGIN_PYPROJECT)
    assert "plugin-kd" not in METHODS  # its name must be free for the entry point
    method_file, _ = new_method("plugin-kd", pkg / "bench_plugin_kd", tmp_path / "unused")
    method_file.rename(pkg / "bench_plugin_kd" / "__init__.py")
    (pkg / "bench_plugin_broken" / "__init__.py").write_text("raise ImportError('boom')\n")
    target = tmp_path / "site"
    install = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-index",
            "--no-build-isolation",
            "--target",
            str(target),
            str(pkg),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert install.returncode == 0, install.stderr
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(target), os.getcwd()])}
    bench = [sys.executable, "-m", "harness.cli"]

    listed = subprocess.run([*bench, "list", "methods"], capture_output=True, text=True, env=env)
    assert listed.returncode == 0
    assert "plugin-kd" in listed.stdout.split() and "dgad" in listed.stdout.split()
    assert "broken-plugin" in listed.stderr and "boom" in listed.stderr

    store = tmp_path / "store"
    run = subprocess.run(
        [
            *bench,
            "run",
            "--method",
            "plugin-kd",
            "--grid",
            "smoke",
            "--epochs",
            "1",
            "--teacher-epochs",
            "1",
            "--store",
            str(store),
            "--no-progress",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr
    (student,) = [p for p in (store / "runs").iterdir() if p.name.startswith("plugin-kd")]
    config = json.loads((student / "config.json").read_text())
    assert config["method"] == {"name": "plugin-kd", "hparams": config["method"]["hparams"]}
    assert config["method"]["hparams"]["temperature"] == 1.0
    assert config["schedule"] == "short"
    metrics = json.loads((student / "metrics.json").read_text())
    assert 0.0 <= metrics["results"]["pgd10"]["accuracy"] <= 1.0
    assert "plugin-kd" in (store / "leaderboards" / "smoke.md").read_text()


def test_new_method_refuses_names_and_folders_it_cannot_write(tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "notes.txt").write_text("a file, not a folder")
    with pytest.raises(UserError) as info:  # test_method_<250 a>.py is longer than 255 bytes
        new_method("a" * 250, tmp_path / "m", tmp_path / "t")
    assert str(info.value) == "method name 'aaaaaaaaaaaaaaaaaaaa'... is 250 characters; at most 64"
    with pytest.raises(UserError) as info:
        new_method("my-kd", tmp_path / "m", tmp_path / "notes.txt" / "t")
    assert str(info.value) == f"cannot write {tmp_path / 'notes.txt' / 't'}: Not a directory"
    assert list((tmp_path / "m").iterdir()) == []


REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("length", [5, 64])
def test_new_method_files_pass_the_projects_lint(tmp_path, length):
    """What ``bench new-method`` writes passes ``ruff check`` and ``ruff format --check`` under
    the project's settings (line length 100), for a short name and the longest allowed."""
    name = ("a" + "-bcdefgh" * 8)[:length].rstrip("-")
    assert len(name) in (length, length - 1)
    written = new_method(name, _methods_folder(tmp_path), tmp_path / "t")
    config = ["--config", str(REPO / "pyproject.toml")]
    for command in (["check", "--no-cache"], ["format", "--check", "--no-cache"]):
        done = subprocess.run(
            [sys.executable, "-m", "ruff", *command, *config, *map(str, written)],
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=120,
        )
        assert done.returncode == 0, done.stdout + done.stderr
    assert max(len(line) for p in written for line in p.read_text().splitlines()) <= 100


def _methods_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "m"
    folder.mkdir()
    return folder


def test_new_method_says_how_a_method_elsewhere_is_registered(tmp_path, capsys):
    from harness.cli import main

    name = unregistered("my-kd")
    module = name.replace("-", "_")
    package = _methods_folder(tmp_path)
    (package / "__init__.py").write_text("")
    main(["new-method", name, "--methods-dir", str(package), "--tests-dir", str(tmp_path / "t")])
    out = capsys.readouterr().out.splitlines()
    assert out[:2] == [
        f"wrote {package / module}.py",
        f"wrote {tmp_path / 't'}/test_method_{module}.py",
    ]
    assert '    [project.entry-points."bench.methods"]' in out
    assert f'    {name} = "m.{module}"' in out
    hint = f"then install that package (pip install -e .); `bench list methods` shows {name}."
    assert hint in out and out[-1] == f"try it: bench run --method {name} --grid smoke"
