"""A non-editable install runs everything: the grids, the HTML template and the paper's tables
ship inside the wheel as package data, read through ``importlib.resources``; the top-level
folders ``leaderboards/`` and ``reports/`` stay where people edit them.

The wheel test builds the project from a copy of its files, installs the wheel (no ``-e``) into
a fresh virtual environment that borrows the project's installed dependencies (torch is not
installed twice), and runs ``bench`` from a folder outside the source tree.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from harness.grid.load import GRID_DIR, grid_path, list_grids, load_grid
from harness.publishing import html, report

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
#: What the build reads: the project's metadata, its packages and the data folders.
SOURCES = ["pyproject.toml", "README.md", "harness", "methods", "leaderboards", "reports"]
TIMEOUT = 3600  # a guard against a hang, not a deadline: machines are shared


def test_pyproject_lists_every_package_and_maps_the_data_folders():
    """``packages`` is written out (``packages.find`` cannot see a mapped folder): it must name
    every package of the source tree, or the wheel would lack it."""
    setuptools = PYPROJECT["tool"]["setuptools"]
    on_disk = {
        ".".join(p.parent.relative_to(ROOT).parts)
        for top in ("harness", "methods")
        for p in (ROOT / top).rglob("__init__.py")
        if "__pycache__" not in p.parts
    }
    mapped = setuptools["package-dir"]
    assert mapped == {"harness.leaderboards": "leaderboards", "harness.reports": "reports"}
    assert set(setuptools["packages"]) == on_disk | set(mapped)
    for folder in mapped.values():
        assert (ROOT / folder / "__init__.py").is_file()  # an editable install needs it


def test_an_editable_install_reads_the_top_level_folders():
    """In this checkout the shipped data is the folders people edit, not a copy."""
    assert GRID_DIR == ROOT / "leaderboards"
    assert html.TEMPLATES == ROOT / "leaderboards" / "templates"
    assert report.REPORTS_DIR == ROOT / "reports"
    assert set(list_grids()) == {p.stem for p in (ROOT / "leaderboards").glob("*.toml")}
    assert report.list_papers() == ["dgad"]


def test_user_grids_from_bench_grids_and_from_any_path(tmp_path, monkeypatch):
    """Beside the shipped grids: ``$BENCH_GRIDS/NAME.toml`` by name (first), any file by path."""
    mine = tmp_path / "grids" / "mine.toml"
    mine.parent.mkdir()
    mine.write_text((GRID_DIR / "smoke.toml").read_text().replace("seeds = [0]", "seeds = [7]"))
    monkeypatch.setenv("BENCH_GRIDS", str(mine.parent))
    assert grid_path("mine") == mine and grid_path("smoke") == GRID_DIR / "smoke.toml"
    assert {"mine", "smoke"} <= set(list_grids())
    assert {r.config["seed"] for r in load_grid("mine").runs} == {7}
    monkeypatch.delenv("BENCH_GRIDS")
    assert "mine" not in list_grids()
    assert {r.config["seed"] for r in load_grid(str(mine)).runs} == {7}


def test_a_checkout_on_pythonpath_without_install_finds_them_beside_the_package(tmp_path):
    """``benchmarks/gpu_check.py`` runs with the repository on PYTHONPATH and nothing installed:
    without the editable install's finder the folders are the top-level ones."""
    code = (
        "import importlib.util, sys\n"
        f"sys.path.insert(0, {str(ROOT)!r})\n"
        "sys.meta_path[:] = [f for f in sys.meta_path if 'Editable' not in getattr(f, "
        "'__name__', '')]\n"
        "assert importlib.util.find_spec('harness.leaderboards') is None\n"
        "from harness.grid.load import GRID_DIR, list_grids\n"
        "from harness.publishing import html, report\n"
        "print(GRID_DIR, html.TEMPLATES, report.REPORTS_DIR, ' '.join(list_grids()))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, env=env
    )
    assert done.returncode == 0, done.stderr
    grids, templates, reports, *names = done.stdout.split()
    assert (grids, templates, reports) == (
        str(ROOT / "leaderboards"),
        str(ROOT / "leaderboards" / "templates"),
        str(ROOT / "reports"),
    )
    assert "smoke" in names


def build_wheel(tmp_path: Path) -> Path:
    """The project's wheel, built offline from a copy of its files (the checkout stays clean)."""
    src = tmp_path / "src"
    src.mkdir()
    junk = shutil.ignore_patterns("__pycache__", "*.egg-info", "build")
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, src / name, ignore=junk)
        else:
            shutil.copy2(ROOT / name, src / name)
    dist = tmp_path / "dist"
    cmd = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation"]
    done = subprocess.run(
        [*cmd, "--no-index", "-w", str(dist), str(src)],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert done.returncode == 0, done.stderr
    (wheel,) = dist.glob("adv_distill_bench-*.whl")
    return wheel


def fresh_environment(tmp_path: Path, wheel: Path) -> Path:
    """A new venv with the wheel installed (no ``-e``) and the project's dependencies visible
    through a ``.pth`` line: a path line, so the editable install's own ``.pth`` finder, which
    sits in that folder, is not run."""
    venv = tmp_path / "venv"
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=TIMEOUT
    )
    python = venv / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    deps = dict.fromkeys(sysconfig.get_paths()[k] for k in ("purelib", "platlib"))
    Path(purelib, "project_dependencies.pth").write_text("\n".join(deps) + "\n")
    # --ignore-installed: pip sees the editable install through that path and must not touch it
    pip = [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps"]
    done = subprocess.run(
        [*pip, "--no-index", "--ignore-installed", str(wheel)],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert done.returncode == 0, done.stderr
    return venv


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, Path]:
    """(the fresh venv with the wheel installed, an empty folder outside the source tree)."""
    tmp = tmp_path_factory.mktemp("wheel")
    venv = fresh_environment(tmp, build_wheel(tmp))
    (tmp / "elsewhere").mkdir()
    return venv, tmp / "elsewhere"


def bench_in(installed: tuple[Path, Path], *args: str) -> str:
    """``bench ARGS`` of the installed wheel, run from the folder outside the tree (no
    PYTHONPATH, no $BENCH_*), its stdout; it must exit 0."""
    venv, elsewhere = installed
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "BENCH_"))}
    env["PYTHONWARNINGS"] = "ignore"
    done = subprocess.run(
        [str(venv / "bin" / args[0]), *args[1:]],
        cwd=elsewhere,
        capture_output=True,
        text=True,
        env=env,
        timeout=TIMEOUT,
    )
    assert done.returncode == 0, f"{args}: {done.stderr}"
    return done.stdout


def table4_title() -> str:
    return next(t["title"] for t in report.paper_spec("dgad")["tables"] if str(t["id"]) == "4")


def test_wheel_reads_its_grids_template_and_tables_outside_the_source_tree(installed):
    """The installed copy, not this checkout, serves the grids, the page and the paper."""
    where = bench_in(
        installed,
        "python",
        "-c",
        "import json, harness; from harness.grid.load import GRID_DIR;"
        "from harness.publishing import html, report;"
        "print(json.dumps([harness.__file__, str(GRID_DIR), str(html.TEMPLATES),"
        " str(report.REPORTS_DIR)]))",
    )
    for path in json.loads(where):
        assert Path(path).is_relative_to(installed[0]), path
    names = {p.stem for p in GRID_DIR.glob("*.toml")}
    assert set(bench_in(installed, "bench", "list", "grids").split()) == names

    page = bench_in(installed, "bench", "leaderboard", "--grid", "smoke", "--format", "html")
    assert page.lstrip().lower().startswith("<!doctype html>")
    assert "Content-Security-Policy" in page  # the template's, not an empty render
    table4 = bench_in(installed, "bench", "report", "--paper", "dgad", "--table", "4")
    assert f"## {table4_title()}" in table4 and "— / 82.95" in table4  # PGD-AT's clean, no run


@pytest.mark.slow
def test_wheel_trains_the_smoke_grid_outside_the_source_tree(installed, tmp_path):
    """``bench run --grid smoke --epochs 1`` from the wheel, kept to DGAD and the teacher it
    needs (one epoch each); its leaderboard page and the paper's Table 4 beside it."""
    store = str(tmp_path / "store")
    short = ["--epochs", "1", "--method", "dgad", "--teacher-epochs", "1", "--no-progress"]
    out = bench_in(installed, "bench", "run", "--grid", "smoke", *short, "--store", store)
    assert "leaderboard written to" in out
    runs = sorted(p.name.split("-")[0] for p in (tmp_path / "store" / "runs").iterdir())
    assert runs == ["dgad", "pgd"]
    page = bench_in(
        installed, "bench", "leaderboard", "--grid", "smoke", "--format", "html", "--store", store
    )
    assert 'data-method="dgad"' in page  # the student's point on the scatter plot
    table4 = bench_in(installed, "bench", "report", "--paper", "dgad", "--table", "4")
    assert f"## {table4_title()}" in table4


@pytest.mark.parametrize("name", ["leaderboards", "reports"])
def test_the_data_packages_hold_no_code(name):
    """Their ``__init__.py`` only says what the folder is: the folders are data."""
    text = (ROOT / name / "__init__.py").read_text()
    assert text.lstrip().startswith('"""') and "import" not in text.split('"""', 2)[2]
