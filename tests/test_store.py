"""The result store: run directories are the truth, the index follows, writers never lose rows."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import socket

import pytest

from harness.store.store import Store
from harness.utils.errors import UserError


def config(i: int, method: str = "dgad") -> dict:
    return {
        "kind": "student",
        "method": {"name": method, "hparams": {"gamma": 5.0}},
        "dataset": {"name": "digits", "options": {}},
        "model": "tiny_cnn",
        "teacher": {"name": "t", "source": "run", "run_id": "teacher-x"},
        "seed": i,
        "train": {"epochs": 3},
        "eval": {"attacks": {"clean": None}},
        "full_epochs": 3,
        "schedule": "full",
        "grids": ["g"],
    }


def metrics(acc: float) -> dict:
    return {
        "results": {
            "clean": {"accuracy": acc, "n": 10, "params": {"name": "clean"}},
            "pgd10": {"accuracy": acc / 2, "n": 10, "params": {"name": "pgd"}},
        },
        "wall_time_s": 1.0,
    }


def test_lifecycle_and_index(tmp_path):
    st = Store(tmp_path)
    st.begin("run-a", config(0))
    assert st.status("run-a") == "running"
    st.finish("run-a", metrics(0.8))
    assert st.status("run-a") == "complete"
    runs = st.frame("runs", "g")
    assert runs.loc[0, "method"] == "dgad" and runs.loc[0, "status"] == "complete"
    res = st.frame("results", "g").set_index("attack")
    assert res.loc["clean", "accuracy"] == 0.8 and res.loc["pgd10", "accuracy"] == 0.4
    assert json.loads(res.loc["pgd10", "params"]) == {"name": "pgd"}
    assert st.frame("runs", "other-grid").empty


def test_same_id_different_config_is_refused(tmp_path):
    st = Store(tmp_path)
    st.begin("run-a", config(0))
    with pytest.raises(UserError, match="different config"):
        st.begin("run-a", config(1))


def test_failure_is_recorded(tmp_path):
    st = Store(tmp_path)
    st.begin("run-a", config(0))
    st.fail("run-a", "loss became nan at epoch 1, step 0", epoch=1, step=0)
    row = st.frame("runs").iloc[0]
    assert row["status"] == "failed" and "nan" in row["error"]


def test_rebuild_index_from_directories(tmp_path):
    st = Store(tmp_path)
    for i in range(3):
        st.begin(f"run-{i}", config(i))
        st.finish(f"run-{i}", metrics(0.1 * i))
    st.index_path.unlink()
    assert st.rebuild_index() == 3
    assert sorted(st.frame("runs", "g")["run_id"]) == ["run-0", "run-1", "run-2"]
    assert len(st.frame("results")) == 6


def test_resolve_prefix(tmp_path):
    st = Store(tmp_path)
    st.begin("dgad-abc", config(0))
    st.begin("dgad-abd", config(1))
    assert st.resolve("dgad-abc") == "dgad-abc"
    with pytest.raises(UserError, match="ambiguous"):
        st.resolve("dgad-ab")
    with pytest.raises(UserError, match="no run"):
        st.resolve("zzz")


def _writer(root: str, worker: int, n: int) -> None:
    st = Store(root)
    for i in range(n):
        run_id = f"w{worker}-r{i}"
        st.begin(run_id, config(worker * 1000 + i))
        st.finish(run_id, metrics(i / n))


def test_concurrent_writers_lose_nothing(tmp_path):
    """Eight processes, 320 runs in all, into one store at once: no row lost, index consistent."""
    workers, per = 8, 40
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), w, per)) for w in range(workers)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    st = Store(tmp_path)
    runs = st.frame("runs", "g")
    assert len(runs) == workers * per == len(st.run_ids())
    assert set(runs["status"]) == {"complete"}
    assert len(st.frame("results", "g")) == 2 * workers * per
    assert st.check() == []


def test_check_and_rebuild(tmp_path):
    st = Store(tmp_path)
    for i in range(3):
        st.begin(f"run-{i}", config(i))
        st.finish(f"run-{i}", metrics(0.1 * i))
    assert st.check() == []
    import sqlite3

    with sqlite3.connect(st.index_path) as conn:
        conn.execute("DELETE FROM runs WHERE run_id = 'run-1'")
        conn.execute("UPDATE results SET accuracy = 0.99 WHERE run_id = 'run-2'")
    problems = st.check()
    assert problems == [
        "run-1: run directory not in the index",
        "run-2: index results differ from metrics.json",
    ]
    st.rebuild_index()
    assert st.check() == []


def test_reading_an_empty_store_creates_nothing(tmp_path):
    store = Store(tmp_path / "store")
    assert store.frame("runs").empty and "run_id" in store.frame("runs").columns
    assert store.frame("results", grid="g").empty
    assert not (tmp_path / "store").exists()


def test_store_folder_the_file_system_cannot_hold(tmp_path):
    with pytest.raises(UserError) as info:
        Store("a" * 300)
    assert str(info.value) == f"store folder {'a' * 300}: File name too long"
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError) as info:
        Store(tmp_path / "file" / "store").rebuild_index()
    assert (
        str(info.value) == f"cannot create the store folder {tmp_path}/file/store: Not a directory"
    )


def indexed(st: Store, run_id: str) -> str | None:
    import sqlite3

    with sqlite3.connect(st.index_path) as conn:
        row = conn.execute("SELECT status FROM runs WHERE run_id = ?", (run_id,)).fetchone()
    return row and row[0]


class Killed(BaseException):
    """Stands for a SIGKILL between the directory's write and the index's."""


def test_a_finish_cut_between_directory_and_index_heals_on_the_next_read(tmp_path, monkeypatch):
    st = Store(tmp_path)
    st.begin("run-a", config(0))

    def killed(self):
        raise Killed

    with monkeypatch.context() as m:
        m.setattr(Store, "_write", killed)
        with pytest.raises(Killed):
            st.finish("run-a", metrics(0.8))
    assert st.status("run-a") == "complete" and indexed(st, "run-a") == "running"
    assert [p.name for p in (tmp_path / "pending").iterdir()] == ["run-a"]
    runs = st.frame("runs", "g")  # a leaderboard's read heals it
    assert runs.loc[0, "status"] == "complete" and indexed(st, "run-a") == "complete"
    assert not any((tmp_path / "pending").iterdir())
    assert st.check() == []


def test_a_change_under_way_is_indexed_but_its_marker_kept(tmp_path):
    """A marker whose status.json is not written yet by a live process: healing re-indexes
    (harmless) and keeps the marker for when that process is done or dead."""
    st = Store(tmp_path)
    st.begin("run-a", config(0))
    marker = tmp_path / "pending" / "run-a"
    record = {"host": socket.gethostname(), "pid": os.getpid(), "token": "in-flight"}
    marker.write_text(json.dumps(record))
    assert st.heal() == [] and marker.exists()
    record["pid"] = dead_pid()  # its process died before writing status.json
    marker.write_text(json.dumps(record))
    assert st.heal() == ["run-a"] and not marker.exists()


def dead_pid() -> int:
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_sync_mends_an_index_a_killed_older_version_left_behind(tmp_path):
    """No marker (an index left behind before markers existed): a rerun's skip re-indexes."""
    import sqlite3

    st = Store(tmp_path)
    st.begin("run-a", config(0))
    st.finish("run-a", metrics(0.8))
    with sqlite3.connect(st.index_path) as conn:
        conn.execute("UPDATE runs SET status = 'running'")
    assert st.sync("run-a") is True and indexed(st, "run-a") == "complete"
    assert st.sync("run-a") is False


def test_check_verifies_config_and_checkpoints(tmp_path):
    import torch

    st = Store(tmp_path)
    for i in range(3):
        st.begin(f"run-{i}", config(i))
        st.finish(f"run-{i}", metrics(0.5))
    ckpt = st.checkpoint("run-0", "best")
    ckpt.parent.mkdir()
    torch.save({"student": {"w": torch.zeros(100)}}, ckpt)
    st.checkpoint("run-0", "last").write_bytes(ckpt.read_bytes())
    assert st.check() == []
    ckpt.write_bytes(ckpt.read_bytes()[:-200])  # truncated: the zip directory is gone
    (st.run_dir("run-1") / "config.json").write_text('{"seed": 1}')
    problems = st.check()
    assert problems[0].startswith(f"run-0: {ckpt} is damaged (not a whole checkpoint: ")
    assert problems[0].endswith(
        f"; delete {st.run_dir('run-0')} and rerun its grid to train it again"
    )
    assert problems[1] == (
        f"run-1: {st.run_dir('run-1') / 'config.json'} is damaged (no method name); rerun the "
        f"grid it belongs to with bench run (which rewrites it), or delete {st.run_dir('run-1')}"
    )
    assert len(problems) == 2


def test_rebuild_sets_a_damaged_index_aside(tmp_path):
    st = Store(tmp_path)
    st.begin("run-a", config(0))
    st.finish("run-a", metrics(0.8))
    st.index_path.write_bytes(b"garbage" * 1000)
    with pytest.raises(UserError, match="index.sqlite is damaged .*bench store rebuild"):
        st.frame("runs")
    lines = []
    assert st.rebuild_index(echo=lines.append) == 1
    assert lines == [
        f"moved the damaged index aside to {st.index_path}.damaged ({st.index_path} is damaged "
        f"(file is not a database); rebuild it from the run directories: bench store rebuild "
        f"--store {tmp_path})"
    ]
    assert (tmp_path / "index.sqlite.damaged").read_bytes() == b"garbage" * 1000
    assert st.check() == []


def test_file_system_errors_name_the_file_and_the_fix(tmp_path):
    import errno

    from harness.utils.errors import file_error

    path = tmp_path / "x.json"
    cases = {
        errno.ENOSPC: "the disk is full: free some space",
        errno.EROFS: "the file system is read-only: use a writable --store",
        errno.EACCES: "no permission to write there",
        errno.ENOTDIR: "a file stands where a folder should be",
        errno.EIO: "check the file system, then rerun",
    }
    for code, fix in cases.items():
        message = str(file_error(OSError(code, os.strerror(code)), path))
        assert message.startswith(f"cannot write {path}: {os.strerror(code)}; {fix}")


def test_per_class_accuracies_are_indexed_and_checked(tmp_path):
    """``per_class`` goes into the index as JSON beside its worst class (classes without test
    images left out); a run without them has NULL; a garbled list is a damaged metrics.json."""
    st = Store(tmp_path)
    st.begin("run-a", config(0))
    m = metrics(0.5)
    m["results"]["pgd10"] |= {"per_class": [0.5, None, 0.25, 0.75], "class_n": [4, 0, 4, 4]}
    st.finish("run-a", m)
    res = st.frame("results", "g").set_index("attack")
    assert json.loads(res.loc["pgd10", "per_class"]) == [0.5, None, 0.25, 0.75]
    assert res.loc["pgd10", "worst_class"] == 0.25
    assert res.loc[["clean"], ["per_class", "worst_class"]].isna().all(axis=None)
    m["results"]["pgd10"]["per_class"] = [0.5, "x"]
    (st.run_dir("run-a") / "metrics.json").write_text(json.dumps(m))
    assert any(
        "per_class is not a list of accuracies" in p and p.startswith("run-a: ") for p in st.check()
    )
