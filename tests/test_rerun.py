"""The loop of a researcher who edits a method: each run records its method's code (a hash of
its source files and whether git has them edited), a run whose code changed since is marked
stale on the leaderboard, ``bench run --stale`` trains those again and ``--force`` any
complete run, ``bench rm``
removes runs from the run directories and the index together."""

from __future__ import annotations

import json
import os
import socket
import sys
from pathlib import Path

import pytest
import torch

from harness.method_code import UNKNOWN, code_record, current_sha256, method_code
from harness.publishing import leaderboard as lb
from harness.publishing.html import render_html
from harness.registry import METHODS
from harness.store.store import Store
from tests.helpers import bench
from tests.tiny_grid import tiny_grid

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parent.parent

PLUGIN = '''"""A method of a user's own package, edited between runs by the tests."""

import torch.nn.functional as F

from methods.base import Method, register_method
from methods.common import ce_attack, full_precision
from {package}.helper import SCALE


@full_precision
def edited_loss(adv_logits, y):
    return SCALE * F.cross_entropy(adv_logits, y)


@register_method("{name}")
class Edited(Method):
    needs_teacher = False

    def perturb(self, student, teacher, x, y):
        return ce_attack(self, student, x, y, "uniform")

    def loss(self, student, teacher, x, x_adv, y, epoch=0):
        loss = edited_loss(student(x_adv), y)
        return loss, {{"ce_adv": loss.detach()}}
'''


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    """A method ``edited-at`` in a package of its own (``edited_pkg``: the method's module and
    a helper module it imports), importable from ``tmp_path``."""
    package = tmp_path / "src" / "edited_pkg"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "helper.py").write_text("SCALE = 1.0\n")
    (package / "method.py").write_text(PLUGIN.format(package="edited_pkg", name="edited-at"))
    monkeypatch.syspath_prepend(str(tmp_path / "src"))
    import importlib

    module = importlib.import_module("edited_pkg.method")
    yield package, module
    METHODS._entries.pop("edited-at", None)
    for name in [m for m in sys.modules if m.startswith("edited_pkg")]:
        del sys.modules[name]


def test_method_code_covers_the_methods_files_and_the_shared_ones():
    record = method_code("dgad")
    assert record["files"] == ["adaad.py", "base.py", "common.py", "dgad.py"]
    assert len(record["sha256"]) == 64 and record["sha256"] == current_sha256("dgad")
    assert method_code("pgd-at")["files"] == ["base.py", "common.py", "pgd_at.py"]
    assert method_code("pgd-at")["sha256"] != record["sha256"]
    in_git = (ROOT / ".git").exists()
    assert record["dirty"] in ((True, False) if in_git else (UNKNOWN,))
    assert current_sha256("no-such-method") is None


def test_unreadable_method_code_is_unknown_not_an_error(monkeypatch):
    """A process that may not read the installed sources (another user) lists and shows runs;
    their code is unknown, so no run is called stale for it."""
    from harness.store.listing import stale

    recorded = method_code("dgad")["sha256"]

    def denied(self):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_bytes", denied)
    monkeypatch.setattr(Path, "read_text", lambda self, *a, **k: denied(self))
    assert current_sha256("dgad") is None
    assert code_record(METHODS.get("dgad")) == {"sha256": None, "files": [], "dirty": UNKNOWN}
    config, provenance = {"method": {"name": "dgad"}}, {"method_code": {"sha256": "0" * 64}}
    assert stale(config, provenance, {}) is False
    monkeypatch.undo()
    assert current_sha256("dgad") == recorded


def test_method_code_of_a_plugin_sees_its_helper_and_has_no_git(plugin):
    package, module = plugin
    record = code_record(module.Edited)
    assert record["files"] == ["helper.py", "method.py"]
    assert record["dirty"] == UNKNOWN  # tmp_path is in no git work tree
    before = record["sha256"]
    (package / "helper.py").write_text("SCALE = 2.0\n")  # an edit of a file it imports
    assert code_record(module.Edited)["sha256"] != before


def test_dirty_flag_follows_git(tmp_path):
    import subprocess

    if subprocess.run(["git", "--version"], capture_output=True).returncode != 0:
        pytest.skip("git is not installed")
    from harness.method_code import _dirty

    repo = tmp_path / "repo"
    repo.mkdir()
    path = repo / "m.py"
    path.write_text("x = 1\n")
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}  # fmt: skip
    for args in (["init", "-q"], ["add", "m.py"], ["commit", "-q", "-m", "m"]):
        subprocess.run(["git", "-C", str(repo), *args], check=True, env={**os.environ, **env})
    assert _dirty([path]) is False
    path.write_text("x = 2\n")
    assert _dirty([path]) is True


def test_edit_stale_force_rerun(plugin, tmp_path, capsys):
    """Run, edit the method: the run is skipped but marked stale on the leaderboard (Markdown
    and HTML); --force trains it again (same id), after which it is not stale."""
    package, _ = plugin
    store = tmp_path / "store"
    grid = str(tiny_grid(tmp_path, ["edited-at", "pgd-at"]))
    args = ["run", "--grid", grid, "--store", str(store), "--no-progress"]
    code, out, err = bench(capsys, *args)
    assert code == 0, err
    st = Store(store)
    (run_id,) = [r for r in st.run_ids() if r.startswith("edited-at")]
    recorded = st.metrics(run_id)["provenance"]["method_code"]
    assert recorded["files"] == ["helper.py", "method.py"] and recorded["dirty"] == UNKNOWN
    assert recorded["sha256"] == current_sha256("edited-at")
    table = lb.leaderboard_tables(st, "tiny")[0]
    assert [r.stale for r in table.rows] == [False, False]

    (package / "method.py").write_text(
        PLUGIN.format(package="edited_pkg", name="edited-at") + "# edited\n"
    )
    code, out, _ = bench(capsys, *args)
    assert code == 0 and f"skip {run_id} (complete)" in out  # the id does not see the code
    (table,) = lb.leaderboard_tables(st, "tiny")
    stale = {r.method: r.stale for r in table.rows}
    assert stale == {"edited-at": True, "pgd-at": False}
    markdown = lb.to_markdown([table], "tiny")
    assert f"edited-at {lb.STALE}" in markdown and f"pgd-at {lb.STALE}" not in markdown
    assert "stale: the method's code changed since these runs were trained" in markdown
    assert "Stale code" in render_html([table], "tiny")
    assert r"edited-at $^\ddagger$" in lb.to_latex([table])
    assert "stale" in lb.to_csv([table]).splitlines()[0]
    code, out, _ = bench(capsys, "runs", "--method", "edited-at", "--store", str(store))
    assert code == 0 and f"| {run_id} |" in out and "| stale  |" in out
    first_log = (st.run_dir(run_id) / "log.txt").read_text()

    (other,) = [r for r in st.run_ids() if r.startswith("pgd-at")]
    code, out, err = bench(capsys, *args, "--force", "--stale")
    assert (
        code == 2
        and err
        == "error: give --force (every complete run) or --stale (the stale ones), not both\n"
    )
    code, out, err = bench(capsys, *args, "--stale")  # the edited method's run only
    assert code == 0, err
    assert f"rerun {run_id} (--stale)" in out and f"done {run_id}" in out
    assert f"skip {other} (complete)" in out and f"rerun {other}" not in out
    assert st.run_ids().count(run_id) == 1  # the same id, replaced
    log = (st.run_dir(run_id) / "log.txt").read_text()
    assert log.count('"epoch": 0') == 1 and first_log.count('"epoch": 0') == 1
    new = st.metrics(run_id)["provenance"]["method_code"]["sha256"]
    assert new == current_sha256("edited-at") != recorded["sha256"]
    (table,) = lb.leaderboard_tables(st, "tiny")
    assert not any(r.stale for r in table.rows)
    code, out, err = bench(capsys, *args, "--stale")  # nothing stale: nothing trained
    assert code == 0 and f"skip {run_id} (complete)" in out
    assert f"rerun {run_id}" not in out and f"rerun {other}" not in out
    code, out, err = bench(capsys, *args, "--method", "pgd-at", "--force")
    assert code == 0, err
    assert f"rerun {other} (--force)" in out and f"done {other}" in out
    assert f"rerun {run_id}" not in out
    assert st.check() == []


def _fake_run(store: Store, run_id: str, method: str, grid: str = "g", kind: str = "student"):
    config = {
        "kind": kind,
        "method": {"name": method, "hparams": {"eps": 8 / 255}},
        "dataset": {"name": "cifar10", "options": {}},
        "model": "resnet18",
        "teacher": None,
        "seed": 0,
        "train": {"epochs": 2, "seed": 0, "select_on": "val"},
        "full_epochs": 2,
        "schedule": "full",
        "grids": [grid],
    }
    store.begin(run_id, config)
    results = {"clean": {"accuracy": 0.8, "n": 10, "params": {"name": "clean"}}}
    (store.run_dir(run_id) / "checkpoints").mkdir()
    torch.save({"student": {}}, store.run_dir(run_id) / "checkpoints" / "best.pt")
    store.finish(run_id, {"results": results, "provenance": {}})


def test_reset_a_killed_process_began_is_finished_by_the_next_claim(tmp_path):
    st = Store(tmp_path)
    _fake_run(st, "a-1", "dgad")
    status = json.loads((st.run_dir("a-1") / "status.json").read_text())
    status.update(status="running", resetting=True)  # killed right after this write
    (st.run_dir("a-1") / "status.json").write_text(json.dumps(status))
    assert not st.is_complete("a-1")
    with st.claim("a-1"):
        pass
    assert not (st.run_dir("a-1") / "metrics.json").exists()
    assert not (st.run_dir("a-1") / "checkpoints").exists()
    assert (st.run_dir("a-1") / "config.json").exists()


def test_rm_removes_directory_and_index_rows(tmp_path, capsys, monkeypatch):
    st = Store(tmp_path)
    for run_id, method in [("dgad-1", "dgad"), ("dgad-2", "dgad"), ("trades-1", "trades")]:
        _fake_run(st, run_id, method)
    _fake_run(st, "dgad-9", "dgad", grid="other")

    code, out, err = bench(capsys, "rm", "trades-1", "--store", str(tmp_path))
    assert code == 0, err
    assert "1 run(s) removed" in out and not st.run_dir("trades-1").exists()
    assert "trades-1" not in set(st.frame("runs")["run_id"])
    assert "trades-1" not in set(st.frame("results")["run_id"])

    code, _, err = bench(capsys, "rm", "nope", "--store", str(tmp_path))
    assert code == 2 and err.strip() == f"error: no run 'nope' in {tmp_path}"

    # --grid/--method asks first, with the count; "n" removes nothing
    sel = ["rm", "--grid", "g", "--method", "dgad", "--store", str(tmp_path)]
    code, out, err = bench(capsys, *sel, stdin="n\n", monkeypatch=monkeypatch)
    assert code == 130 and "remove these 2 run(s)?" in out
    assert st.run_ids() == ["dgad-1", "dgad-2", "dgad-9"]
    code, out, err = bench(capsys, *sel, "--yes")
    assert code == 0 and "2 run(s) removed" in out
    assert st.run_ids() == ["dgad-9"] and sorted(st.frame("runs")["run_id"]) == ["dgad-9"]
    assert st.check() == []


def test_rm_respects_a_live_claim(tmp_path, capsys):
    st = Store(tmp_path)
    _fake_run(st, "dgad-1", "dgad")
    holder = {"host": socket.gethostname(), "pid": os.getpid(), "token": "x", "since": 1.0}
    (st.run_dir("dgad-1") / "claim.json").write_text(json.dumps(holder))
    code, _, err = bench(capsys, "rm", "dgad-1", "--store", str(tmp_path))
    assert code == 2 and len(err.strip().splitlines()) == 1 and "held by a running" in err
    assert st.run_ids() == ["dgad-1"]


def test_an_empty_name_removes_nothing(tmp_path, capsys):
    """``bench rm "$RUN"`` or ``--method "$M"`` with the variable unset: an empty id is no
    prefix of the only run, an empty --grid or --method is no "any" (found by the fuzz)."""
    st = Store(tmp_path)
    _fake_run(st, "dgad-1", "dgad")
    store = ["--store", str(tmp_path)]
    code, _, err = bench(capsys, "rm", "", *store)
    assert (
        code == 2
        and err == f"error: an empty run id names no run in {tmp_path}; give an id or a prefix\n"
    )
    _fake_run(st, "trades-1", "trades")
    _fake_run(st, "dgad-9", "dgad", grid="other")
    for selection, message in [
        (["--grid", "", "--method", "dgad"], "--grid is empty"),
        (["--grid", "g", "--method", ""], "--method is empty"),
        (["--grid", "", "--kind", "student"], "--grid is empty"),
        (["dgad-1", "--grid", ""], "give RUN ids or --grid/--method/--kind, not both"),
    ]:
        code, out, err = bench(capsys, "rm", *selection, "--yes", *store)
        assert code == 2 and err.startswith(f"error: {message}") and len(err.splitlines()) == 1
        assert st.run_ids() == ["dgad-1", "dgad-9", "trades-1"], selection
    out_dir = tmp_path / "out"
    for selection, message in [
        (["--grid", "g", "--method", ""], "--method is empty"),
        (["dgad-1", "--grid", ""], "give the RUN ids to export, or --grid G (not both)"),
        (["dgad-1", "--method", ""], "--method selects within --grid"),
    ]:
        code, _, err = bench(capsys, "export", *selection, "--output", str(out_dir), *store)
        assert code == 2 and err.startswith(f"error: {message}") and not out_dir.exists()


def test_rm_with_a_damaged_index_touches_no_run(tmp_path, capsys):
    """The index cannot be written: the removal fails before the run's directory is moved
    (it stayed moved away, with the error, found by the fuzz); once rebuilt, it removes."""
    st = Store(tmp_path)
    _fake_run(st, "dgad-1", "dgad")
    files = sorted(p.relative_to(tmp_path) for p in st.run_dir("dgad-1").rglob("*"))
    st.index_path.write_bytes(b"not a database" * 10)
    code, _, err = bench(capsys, "rm", "dgad-1", "--store", str(tmp_path))
    assert code == 2 and "index.sqlite is damaged" in err and len(err.splitlines()) == 1
    assert sorted(p.relative_to(tmp_path) for p in st.run_dir("dgad-1").rglob("*")) == files
    assert sorted(p.name for p in st.runs_dir.iterdir()) == ["dgad-1"]
    assert bench(capsys, "store", "rebuild", "--store", str(tmp_path))[0] == 0
    code, out, _ = bench(capsys, "rm", "dgad-1", "--store", str(tmp_path))
    assert code == 0 and "1 run(s) removed" in out
    assert not any(st.runs_dir.iterdir()) and st.check() == []


def test_a_removal_killed_half_way_heals(tmp_path):
    """Directory renamed away, index not yet updated: the next read drops the rows."""
    st = Store(tmp_path)
    _fake_run(st, "dgad-1", "dgad")
    (tmp_path / "pending").mkdir(exist_ok=True)
    marker = {"host": socket.gethostname(), "pid": 2**22 + 12345, "token": "t"}  # a dead pid
    (tmp_path / "pending" / "dgad-1").write_text(json.dumps(marker))
    os.replace(st.run_dir("dgad-1"), tmp_path / "runs" / ".removed-dgad-1-t")
    assert st.run_ids() == []
    assert list(st.frame("runs")["run_id"]) == []
    assert st.check() == [] and not any((tmp_path / "runs").iterdir())
