"""Data shipped inside the package: the grids, the HTML template, the papers' tables.

They are edited in the repository's top-level folders ``leaderboards/`` and ``reports/``, which
pyproject.toml installs as the packages ``harness.leaderboards`` and ``harness.reports`` (in a
wheel and in an editable install alike), so an installed harness finds them through
:mod:`importlib.resources`, wherever it is installed. A checkout used without installing it
(the repository on ``PYTHONPATH``, as ``benchmarks/gpu_check.py`` runs on a bare GPU machine)
has no such packages: there the folders are the top-level ones beside ``harness/``.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from harness.utils.errors import UserError

#: The packages that hold the shipped grids (and the HTML template) and the papers' tables,
#: each with the repository folder it is installed from.
GRIDS = "harness.leaderboards"
REPORTS = "harness.reports"
FOLDERS = {GRIDS: "leaderboards", REPORTS: "reports"}


def shipped(package: str) -> Path:
    """The folder of the data package ``package`` (one of :data:`FOLDERS`).

    pip unpacks a wheel, so the folder is on disk; its path is what error messages and a run's
    provenance name. An import from a zip archive, which would give no path, is refused.
    """
    try:
        folder = resources.files(package)
    except ModuleNotFoundError:  # not installed: a checkout on PYTHONPATH
        folder = Path(__file__).resolve().parents[2] / FOLDERS[package]
        if not (folder / "__init__.py").is_file():
            raise UserError(f"{package} is not installed: reinstall adv-distill-bench") from None
    if not isinstance(folder, Path):
        raise UserError(f"{package} is not installed as a folder ({folder}): install with pip")
    return folder
