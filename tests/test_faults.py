"""Faults of the disk and the store end in one line: every command against a store with a
garbled file, a damaged index, a path under a file, a read-only folder or a full disk ends with
exit code 0 (where it can do its work or mend the fault) or with exit code 2 and one
``error:`` line that names the file and the fix; never a traceback.

One completed run is trained once per module; each test damages a copy of its store.
"""

from __future__ import annotations

import builtins
import contextlib
import errno
import importlib
import json
import os
import pkgutil
import shutil
import sqlite3
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

import harness
import harness.store.store
import harness.utils.atomic
import methods
from harness.cli import main
from harness.store.store import Store
from harness.utils.errors import UserError
from tests.helpers import bench

pytestmark = pytest.mark.usefixtures("one_thread")

GRID = """
dataset = "digits"
students = ["tiny_cnn"]
methods = ["pgd-at"]
seeds = [0]
[threat]
steps = 1
[train]
epochs = 2
batch_size = 256
milestones = [1]
select_steps = 1
eval_batch_size = 512
[eval]
attacks = ["clean", "fgsm"]
"""
COMMANDS = ["run", "show", "status", "check", "rebuild", "eval", "leaderboard"]
#: Counted for the README: faults injected (command x fault) and how each ended.
INJECTED: list[tuple[str, str, int]] = []


def args(command: str, grid: Path, store: Path, run_id: str) -> list[str]:
    s = ["--store", str(store)]
    return {
        "run": ["run", "--grid", str(grid), *s, "--no-progress"],
        "show": ["show", run_id, *s],
        "status": ["status", "--grid", str(grid), *s],
        "check": ["store", "check", *s],
        "rebuild": ["store", "rebuild", *s],
        "eval": ["eval", run_id, "--suite", "config", *s, "--no-progress"],
        "leaderboard": ["leaderboard", "--grid", str(grid), *s],
    }[command]


@pytest.fixture(scope="module")
def base() -> Iterator[tuple[Path, Path, str]]:
    """(grid file, store with one complete run, run id), in a folder every user may read."""
    folder = Path(tempfile.mkdtemp(prefix="faults-"))
    folder.chmod(0o755)  # the read-only test reads it as another user when run as root
    grid = folder / "g.toml"
    grid.write_text(GRID)
    store = folder / "store"
    with contextlib.redirect_stdout(None):
        main(["run", "--grid", str(grid), "--store", str(store), "--no-progress"])
    (run_id,) = Store(store).run_ids()
    yield grid, store, run_id
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def copy(base, request) -> Iterator[tuple[Path, Path, str]]:
    grid, store, run_id = base
    folder = Path(tempfile.mkdtemp(prefix="fault-", dir=store.parent))
    folder.chmod(0o755)
    new = folder / "store"
    shutil.copytree(store, new)
    yield grid, new, run_id
    make_writable(folder)
    shutil.rmtree(folder, ignore_errors=True)


def expect(
    capsys, command: str, fault: str, cli: list[str], code: int, names: str | None = None
) -> tuple[str, str]:
    """Run ``cli``: exit ``code``; for 2, stderr is one ``error:`` line holding ``names``."""
    got, out, err = bench(capsys, *cli)
    INJECTED.append((command, fault, got))
    assert "Traceback" not in out + err
    assert got == code, (cli, got, out, err)
    if code == 2:
        assert err.startswith("error: ") and err.count("\n") == 1, err
        assert names is not None and names in err, (names, err)
    return out, err


# -- garbled run files ----------------------------------------------------------------------------
GARBLED = {
    "truncated": lambda text: text[: len(text) // 2],
    "not json": lambda text: "\x00\xff garbage",
    "wrong shape": lambda text: "[1, 2, 3]",
}


@pytest.mark.parametrize("garble", list(GARBLED))
def test_garbled_status_json(capsys, copy, garble):
    grid, store, run_id = copy
    path = store / "runs" / run_id / "status.json"
    path.write_text(GARBLED[garble](path.read_text()))
    fault = f"status.json {garble}"
    for command in ("show", "status", "rebuild", "eval"):
        _, err = expect(capsys, command, fault, args(command, grid, store, run_id), 2, str(path))
        if command == "show":
            assert f"rerun bench run --grid g --store {store}" in err
    out, _ = expect(capsys, "check", fault, args("check", grid, store, run_id), 1)
    assert f"{path} is damaged" in out
    expect(capsys, "leaderboard", fault, args("leaderboard", grid, store, run_id), 0)
    # bench run takes the run up again: it resumes after its last epoch, re-evaluates, mends
    expect(capsys, "run", fault, args("run", grid, store, run_id), 0)
    assert Store(store).status(run_id) == "complete"
    assert epochs_logged(store, run_id) == [0, 1]  # no epoch trained again
    assert Store(store).check() == []


def epochs_logged(store: Path, run_id: str) -> list[int]:
    lines = (store / "runs" / run_id / "log.txt").read_text().splitlines()
    return [json.loads(line)["epoch"] for line in lines if line.startswith("{")]


def metrics_of(store: Path, run_id: str) -> dict:
    return json.loads((store / "runs" / run_id / "metrics.json").read_text())


@pytest.mark.parametrize("garble", list(GARBLED))
def test_garbled_metrics_json_is_re_evaluated_without_retraining(capsys, copy, garble):
    grid, store, run_id = copy
    before = metrics_of(store, run_id)
    path = store / "runs" / run_id / "metrics.json"
    path.write_text(GARBLED[garble](path.read_text()))
    log = (store / "runs" / run_id / "log.txt").read_text()
    fault = f"metrics.json {garble}"
    for command in ("show", "status", "rebuild"):
        _, err = expect(capsys, command, fault, args(command, grid, store, run_id), 2, str(path))
        if command == "show":
            assert f"bench eval {run_id} --suite config --store {store}" in err
    expect(capsys, "check", fault, args("check", grid, store, run_id), 1)
    expect(capsys, "leaderboard", fault, args("leaderboard", grid, store, run_id), 0)
    out, _ = expect(capsys, "eval", fault, args("eval", grid, store, run_id), 0)
    assert f"{path} is damaged; it is rewritten" in out
    after = metrics_of(store, run_id)
    assert after["results"] == before["results"]  # the same numbers, from best.pt
    assert after["train"]["history"] == before["train"]["history"]  # recovered from last.pt
    assert (store / "runs" / run_id / "log.txt").read_text() == log  # not retrained
    assert Store(store).check() == []


def test_garbled_metrics_json_is_mended_by_bench_run(capsys, copy):
    grid, store, run_id = copy
    before = metrics_of(store, run_id)
    (store / "runs" / run_id / "metrics.json").write_text("{")
    out, _ = expect(capsys, "run", "metrics.json", args("run", grid, store, run_id), 0)
    assert f"run {run_id}" in out and metrics_of(store, run_id)["results"] == before["results"]
    assert epochs_logged(store, run_id) == [0, 1]  # no epoch trained again


@pytest.mark.parametrize("garble", list(GARBLED))
def test_garbled_config_json(capsys, copy, garble):
    grid, store, run_id = copy
    path = store / "runs" / run_id / "config.json"
    text = path.read_text()
    path.write_text(GARBLED[garble](text))
    fault = f"config.json {garble}"
    for command in ("show", "rebuild", "eval"):
        expect(capsys, command, fault, args(command, grid, store, run_id), 2, str(path))
    expect(capsys, "check", fault, args("check", grid, store, run_id), 1)
    for command in ("status", "leaderboard"):  # neither reads it
        expect(capsys, command, fault, args(command, grid, store, run_id), 0)
    expect(capsys, "run", fault, args("run", grid, store, run_id), 0)  # rewrites it
    assert json.loads(path.read_text()) == json.loads(text)
    assert Store(store).check() == []


def test_an_integer_the_index_cannot_hold_is_a_damaged_file(capsys, copy):
    """A config written with a seed beyond 64 bits (what ``--seed 99999999999999999999`` did)
    no longer takes the whole store down: that run is left out, the others are indexed."""
    grid, store, run_id = copy
    path = store / "runs" / run_id / "config.json"
    config = json.loads(path.read_text())
    other = store / "runs" / "other-run"
    shutil.copytree(store / "runs" / run_id, other)
    (other / "config.json").write_text(json.dumps({**config, "seed": 99999999999999999999}))
    (store / "index.sqlite").unlink()
    cli = args("rebuild", grid, store, run_id)
    _, err = expect(capsys, "rebuild", "seed > 2**63", cli, 2, str(other / "config.json"))
    assert "indexed 1 run(s), left out 1" in err and "seed is not an integer" in err
    out, _ = expect(capsys, "leaderboard", "seed > 2**63", args("leaderboard", grid, store, ""), 0)
    assert "pgd-at" in out


# -- a damaged index ------------------------------------------------------------------------------
DAMAGE = {
    "truncated": lambda data: data[: len(data) // 2],
    "garbage": lambda data: b"not a database at all" * 100,
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_damaged_index(capsys, copy, damage):
    grid, store, run_id = copy
    index = store / "index.sqlite"
    index.write_bytes(DAMAGE[damage](index.read_bytes()))
    fault = f"index.sqlite {damage}"
    for command in ("run", "check", "leaderboard"):
        _, err = expect(capsys, command, fault, args(command, grid, store, run_id), 2, str(index))
        assert f"bench store rebuild --store {store}" in err
    for command in ("show", "status"):  # they read the run directories
        expect(capsys, command, fault, args(command, grid, store, run_id), 0)
    out, _ = expect(capsys, "rebuild", fault, args("rebuild", grid, store, run_id), 0)
    assert "moved the damaged index aside" in out and "indexed 1 run(s)" in out
    assert (store / "index.sqlite.damaged").exists()
    for command in ("check", "leaderboard", "eval"):
        expect(capsys, command, fault, args(command, grid, store, run_id), 0)


def test_an_empty_index_file_is_rebuilt_on_first_use(capsys, copy):
    grid, store, run_id = copy
    (store / "index.sqlite").write_bytes(b"")
    cli = args("leaderboard", grid, store, "")
    out, _ = expect(capsys, "leaderboard", "index.sqlite empty", cli, 0)
    assert "pgd-at" in out


# -- the store's folder ---------------------------------------------------------------------------
def test_store_path_under_a_file(capsys, tmp_path, base):
    grid, _, run_id = base
    (tmp_path / "file").write_text("not a folder")
    store = tmp_path / "file" / "store"
    fault = "store under a file"
    expect(capsys, "run", fault, args("run", grid, store, run_id), 2, str(store))
    expect(capsys, "rebuild", fault, args("rebuild", grid, store, run_id), 2, str(store))
    for command in ("show", "eval"):
        expect(capsys, command, fault, args(command, grid, store, run_id), 2, str(store))
    _, err = expect(capsys, "status", fault, args("status", grid, store, run_id), 2, str(store))
    assert "Not a directory; a file stands where a folder should be" in err
    for command in ("check", "leaderboard"):  # nothing there to read
        expect(capsys, command, fault, args(command, grid, store, run_id), 0)
    assert (tmp_path / "file").read_text() == "not a folder"


def make_writable(folder: Path) -> None:
    for path in [folder, *folder.rglob("*")]:
        with contextlib.suppress(OSError):
            path.chmod(path.stat().st_mode | stat.S_IWUSR)


def import_everything() -> None:
    """Import every module of the project now, as the commands import some only when used."""
    for package in (harness, methods):
        for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            with contextlib.suppress(ImportError):  # a module of an optional dependency
                importlib.import_module(info.name)


@contextlib.contextmanager
def read_only(folder: Path) -> Iterator[None]:
    """``folder`` read-only for this process: its permission bits cleared, and, when running
    as root (whom permission bits do not stop), the effective user set to ``nobody``."""
    for path in [folder, *folder.rglob("*")]:
        path.chmod(path.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    root = hasattr(os, "geteuid") and os.geteuid() == 0
    if root:
        import_everything()  # the checkout itself may be unreadable to ``nobody``
    try:
        if root:
            os.seteuid(65534)
        yield
    finally:
        if root:
            os.seteuid(0)
        make_writable(folder)


def test_read_only_store(capsys, copy):
    grid, store, run_id = copy
    fault = "read-only store"
    with read_only(store):
        probe = store / "probe"
        with pytest.raises(PermissionError):
            probe.write_text("")
        _, err = expect(capsys, "run", fault, args("run", grid, store, run_id), 2,
                        str(store / "leaderboards"))  # fmt: skip
        assert "Permission denied; no permission to write there" in err
        _, err = expect(capsys, "rebuild", fault, args("rebuild", grid, store, run_id), 2,
                        str(store / "index.sqlite"))  # fmt: skip
        assert "read-only" in err
        expect(capsys, "eval", fault, args("eval", grid, store, run_id), 2,
               str(store / "runs" / run_id / "claim.json"))  # fmt: skip
        for command in ("show", "status", "check", "leaderboard"):  # reading works
            expect(capsys, command, fault, args(command, grid, store, run_id), 0)
    assert Store(store).check() == []


# -- a full disk ----------------------------------------------------------------------------------
class FullFile:
    """A file opened for writing on a disk with ``budget[0]`` bytes left."""

    def __init__(self, fh, budget: list[int]) -> None:
        self._fh, self._budget = fh, budget

    def write(self, data) -> int:
        if len(data) > self._budget[0]:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self._budget[0] -= len(data)
        return self._fh.write(data)

    def __getattr__(self, name):
        return getattr(self._fh, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self._fh.close()


def full_connection(budget: list[int]) -> type[sqlite3.Connection]:
    """SQLite connections on a disk with ``budget[0]`` bytes left: when none, a transaction
    cannot commit."""

    class FullConnection(sqlite3.Connection):
        def execute(self, sql: str, *args):
            if sql.strip().upper() == "COMMIT" and budget[0] <= 0:
                raise sqlite3.OperationalError("database or disk is full")
            return super().execute(sql, *args)

    return FullConnection


@contextlib.contextmanager
def disk_full(monkeypatch, budget: int = 0, at: str | None = None) -> Iterator[list[int]]:
    """Writes of the store's files fail with ENOSPC once ``budget`` bytes are written, then
    the index cannot commit; yields the bytes left (a test may change it). ``at``: only the
    files whose path holds it (``"index"``: the index) meet the full disk."""
    left = [budget]
    unlimited = [2**62]
    real_open, real_connect = builtins.open, sqlite3.connect

    def full_open(file, mode="r", *a, **kw):
        fh = real_open(file, mode, *a, **kw)
        if not any(c in mode for c in "wax+"):
            return fh
        return FullFile(fh, left if at is None or at in str(file) else unlimited)

    def connect(*a, **kw):
        return real_connect(
            *a, **kw, factory=full_connection(left if at in (None, "index") else unlimited)
        )

    with monkeypatch.context() as m:
        m.setattr(harness.utils.atomic, "open", full_open, raising=False)
        m.setattr(harness.store.store, "open", full_open, raising=False)
        m.setattr(harness.store.store.sqlite3, "connect", connect)
        yield left


def test_full_disk(capsys, copy, monkeypatch):
    grid, store, run_id = copy
    fault = "disk full"
    with disk_full(monkeypatch):
        for command in ("run", "eval", "rebuild"):
            _, err = expect(capsys, command, fault, args(command, grid, store, run_id), 2,
                            str(store))  # fmt: skip
            assert "the disk is full" in err
        for command in ("show", "status", "check", "leaderboard"):  # they write nothing
            expect(capsys, command, fault, args(command, grid, store, run_id), 0)
    assert Store(store).check() == []
    assert not list(store.rglob("*.tmp")) and not list(store.rglob("claim.json"))


#: Where a new run meets the full disk: its pending marker, status, index, checkpoints, log,
#: metrics (in the order a run writes them).
FULL_AT = ["pending", "status.json", "index", "best.pt", "last.pt", "log.txt", "metrics.json"]


@pytest.mark.parametrize("at", FULL_AT)
def test_full_disk_during_a_run_leaves_it_resumable(capsys, copy, monkeypatch, at):
    """A new run (seed 1) meets a full disk when it writes ``at``: one line naming that file,
    the run left resumable (no claim, no temporary file), finished once there is space."""
    grid, store, _ = copy
    cli = [*args("run", grid, store, ""), "--seed", "1"]
    with disk_full(monkeypatch, at=at):
        _, err = expect(capsys, "run", f"disk full at {at}", cli, 2, str(store))
    assert err.startswith("error: cannot write") and "the disk is full" in err
    assert (at if at != "index" else "index.sqlite") in err.split(":")[1]
    assert not list(store.rglob("*.tmp")) and not list(store.rglob("claim.json"))
    expect(capsys, "run", "disk freed", cli, 0)
    (run,) = [r for r in Store(store).run_ids() if "-s1-" in r]
    assert epochs_logged(store, run) == [0, 1] or at in ("log.txt", "last.pt")
    assert Store(store).check() == []


def test_torch_save_on_a_full_disk_says_so(tmp_path, monkeypatch):
    """torch reports a failed write as its own RuntimeError (inline_container.cc) that never
    says why; the atomic writer names the disk."""

    def fails(obj, fh):
        raise RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 64 vs 0")

    monkeypatch.setattr(harness.utils.atomic.torch, "save", fails)
    monkeypatch.setattr(harness.utils.atomic, "_disk_full", lambda folder: True)
    with pytest.raises(UserError) as info:
        harness.utils.atomic.save_atomic({"w": torch.zeros(3)}, tmp_path / "best.pt")
    assert str(info.value).startswith(f"cannot write {tmp_path / 'best.pt'}: No space left")
    assert not list(tmp_path.iterdir())
    monkeypatch.setattr(harness.utils.atomic, "_disk_full", lambda folder: False)
    with pytest.raises(RuntimeError, match="inline_container"):  # not a full disk: as it is
        harness.utils.atomic.save_atomic({"w": torch.zeros(3)}, tmp_path / "best.pt")


def test_a_crash_the_store_cannot_record_is_one_line(capsys, copy, monkeypatch):
    """Evaluation crashes, and the failure handler then meets a full disk: one line naming
    both, no second error raised from within the handler."""
    grid, store, _ = copy
    cli = [*args("run", grid, store, ""), "--seed", "2"]
    with disk_full(monkeypatch, 10**9) as left:

        def crash(*a, **kw):
            left[0] = 0  # the disk fills up at the moment of the crash
            raise RuntimeError("boom")

        monkeypatch.setattr("harness.execution.runner.evaluate_run", crash)
        _, err = expect(capsys, "run", "crash, then disk full", cli, 2, "log.txt")
    assert "crashed (RuntimeError: boom) and the store could not record it" in err
    assert "the disk is full" in err


# -- the harness's own checkpoints ----------------------------------------------------------------
def test_a_complete_run_keeps_best_pt_and_its_training_record(copy):
    """last.pt and prev.pt only serve a resume: a complete run keeps best.pt and train.json
    (what metrics.json says about training, for when metrics.json is damaged)."""
    _, store, run_id = copy
    folder = store / "runs" / run_id / "checkpoints"
    assert sorted(p.name for p in folder.iterdir()) == ["best.pt", "train.json"]
    train = json.loads((folder / "train.json").read_text())
    assert train == metrics_of(store, run_id)["train"]
    assert [h["epoch"] for h in train["history"]] == [0, 1]


@pytest.mark.parametrize("which", ["best", "last"])
def test_the_harness_evaluates_and_reuses_its_own_checkpoints(capsys, copy, which):
    """best.pt and last.pt hold the weights under ``student``: ``bench eval FILE --model`` and a
    grid teacher ``checkpoint = ".../best.pt"`` load them (a complete run's last.pt is pruned:
    the one of a run stopped before it completed stands in)."""
    grid, store, run_id = copy
    ckpt = store / "runs" / run_id / "checkpoints" / f"{which}.pt"
    if which == "last":  # as train() writes it: the best.pt record plus the resume state
        state = torch.load(store / "runs" / run_id / "checkpoints" / "best.pt", weights_only=True)
        torch.save({**state, "optimizer": {}, "scheduler": {}, "history": []}, ckpt)
    cli = ["eval", str(ckpt), "--model", "tiny_cnn", "--dataset", "digits", "--attack", "clean",
           "--store", str(store), "--no-progress"]  # fmt: skip
    out, _ = expect(capsys, "eval", f"own {which}.pt", cli, 0)
    if which == "best":  # the run's own clean accuracy, from the same weights and test set
        clean = metrics_of(store, run_id)["results"]["clean"]["accuracy"]
        # the last "clean" line is the result (the first is the suite bench eval announces)
        line = [x for x in out.splitlines() if x.split()[:1] == ["clean"]][-1]
        assert line.split()[1] == f"{100 * clean:.2f}%"
    teacher_grid = grid.parent / f"teacher-{which}.toml"
    teacher_grid.write_text(
        GRID.replace('methods = ["pgd-at"]', 'methods = ["ard"]\nteachers = ["own"]')
        + f'[teacher.own]\nmodel = "tiny_cnn"\ncheckpoint = "{ckpt}"\n'
    )
    from harness.execution.teachers import load_teacher
    from harness.grid.load import load_grid

    (run,) = load_grid(str(teacher_grid)).runs
    teacher = load_teacher(
        run.config["teacher"], Store(store), num_classes=10, image_size=8, dataset="digits"
    )
    weights = torch.load(ckpt, weights_only=True)["student"]
    assert all(torch.equal(v, weights[k]) for k, v in teacher.state_dict().items())
    teacher_grid.unlink()
