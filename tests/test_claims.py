"""One claim per run: the lease file, its takeover from dead holders, and four ``bench run`` of
one grid at once training every run exactly once."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from harness.store import claims
from harness.store.claims import CLAIM, Claimed, ClaimLost, acquire

REPO = Path(__file__).resolve().parent.parent


def dead_pid() -> int:
    """The pid of a process of this host that has exited (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def write_claim(directory: Path, **record) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / CLAIM
    path.write_text(json.dumps(record))
    return path


def test_a_second_claim_is_refused_and_names_the_holder(tmp_path):
    run = tmp_path / "run"
    with acquire(run) as first:
        record = json.loads((run / CLAIM).read_text())
        assert record["host"] == socket.gethostname() and record["pid"] == os.getpid()
        assert record["token"] == first.token
        with pytest.raises(Claimed) as info:
            acquire(run)
        assert info.value.holder.token == first.token
        assert f"claimed by {socket.gethostname()}:{os.getpid()} since " in str(info.value)
    assert not run.exists()  # made by the claim, nothing else written: gone with it
    with acquire(run):  # free again
        pass


def test_release_keeps_the_directory_when_the_run_wrote_to_it(tmp_path):
    run = tmp_path / "run"
    with acquire(run):
        (run / "config.json").write_text("{}")
    assert sorted(p.name for p in run.iterdir()) == ["config.json"]


def test_a_claim_of_a_dead_process_on_this_host_is_taken_over(tmp_path):
    run = tmp_path / "run"
    write_claim(run, host=socket.gethostname(), pid=dead_pid(), token="old", since=time.time())
    with acquire(run, stale_s=3600) as claim:
        assert json.loads((run / CLAIM).read_text())["token"] == claim.token != "old"
    assert not (run / CLAIM).exists()


def test_a_claim_from_another_host_waits_for_its_heartbeat_to_go_stale(tmp_path):
    run = tmp_path / "run"
    path = write_claim(run, host="elsewhere", pid=1, token="far", since=time.time())
    with pytest.raises(Claimed, match="claimed by elsewhere:1"):
        acquire(run, stale_s=60)
    old = time.time() - 120
    os.utime(path, (old, old))  # no heartbeat for two minutes
    with acquire(run, stale_s=60) as claim:
        assert claim.token != "far"


def test_an_unreadable_claim_is_held_until_stale(tmp_path):
    """A creator killed between creating and writing the file leaves it empty."""
    run = tmp_path / "run"
    run.mkdir()
    (run / CLAIM).write_text("")
    with pytest.raises(Claimed, match="an unknown process"):
        acquire(run, stale_s=60)
    old = time.time() - 120
    os.utime(run / CLAIM, (old, old))
    with acquire(run, stale_s=60):
        pass


def test_the_heartbeat_refreshes_the_file_and_notices_a_takeover(tmp_path):
    run = tmp_path / "run"
    claim = acquire(run, stale_s=0.4)  # heartbeat every 0.1 s
    try:
        old = time.time() - 100
        os.utime(run / CLAIM, (old, old))
        assert wait_until(lambda: time.time() - (run / CLAIM).stat().st_mtime < 50)
        claim.check(verify=True)  # still ours
        write_claim(run, host="elsewhere", pid=1, token="thief", since=time.time())
        assert wait_until(lambda: claim.lost)
        with pytest.raises(ClaimLost):
            claim.check()
    finally:
        claim.release()
    assert json.loads((run / CLAIM).read_text())["token"] == "thief"  # not ours: not removed


def wait_until(predicate, timeout: float = 60.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.02)
    return False


def test_racing_takers_of_one_stale_claim_end_with_one_holder(tmp_path):
    """Eight threads find the same dead holder at once; exactly one of them wins each round."""
    run = tmp_path / "run"

    def take(winners: list, barrier: threading.Barrier) -> None:
        barrier.wait()
        with contextlib.suppress(Claimed):
            winners.append(acquire(run, stale_s=3600))

    for _ in range(10):
        write_claim(run, host=socket.gethostname(), pid=dead_pid(), token="dead", since=0)
        winners: list = []
        barrier = threading.Barrier(8)
        threads = [threading.Thread(target=take, args=(winners, barrier)) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(winners) == 1
        assert json.loads((run / CLAIM).read_text())["token"] == winners[0].token
        winners[0].release()


def test_wait_released_returns_once_the_holder_is_gone(tmp_path):
    run = tmp_path / "run"
    claim = acquire(run)
    (run / "x").write_text("")  # keep the directory
    done = threading.Event()
    waiter = threading.Thread(
        target=lambda: (claims.wait_released(run, poll_s=0.01), done.set()), daemon=True
    )
    waiter.start()
    time.sleep(0.1)
    assert not done.is_set()
    claim.release()
    assert done.wait(60)


GRID = """
dataset = "digits"
students = ["tiny_cnn"]
teachers = ["t"]
methods = ["pgd-at", "ard"]
seeds = [0, 1]
[threat]
steps = 1
[train]
epochs = 2
batch_size = 256
milestones = [1]
select_steps = 1
eval_batch_size = 512
[eval]
attacks = ["clean"]
[teacher.t]
model = "tiny_cnn"
train = { method = "pgd-at", epochs = 2 }
"""


def epoch_lines(log: Path) -> list[int]:
    lines = [json.loads(x) for x in log.read_text().splitlines() if x.startswith("{")]
    return [x["epoch"] for x in lines]


def test_four_processes_on_one_grid_train_every_run_once(tmp_path):
    """Four ``bench run`` of one grid on one store at once (two terminals, two Slurm jobs):
    the teacher and each of the four students is trained by exactly one of them, the others
    skip it or wait for it, and all four end with every run complete."""
    grid = tmp_path / "four.toml"
    grid.write_text(GRID)
    store = tmp_path / "store"
    cmd = [sys.executable, "-m", "harness.cli", "run", "--grid", str(grid), "--store", str(store)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    procs = [
        subprocess.Popen(
            [*cmd, "--no-progress"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        for _ in range(4)
    ]
    outs = [p.communicate(timeout=900) for p in procs]
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err.decode()[-2000:]
    stdout = "".join(out.decode() for out, _ in outs)
    runs = sorted((store / "runs").iterdir())
    assert len(runs) == 5  # the teacher and 2 methods x 2 seeds
    for run in runs:
        assert epoch_lines(run / "log.txt") == [0, 1], run.name  # trained once, not 0 0 1 1
        assert json.loads((run / "status.json").read_text())["status"] == "complete"
        assert stdout.count(f"run {run.name}\n") == 1
        assert not (run / CLAIM).exists()
    assert "claimed by" in stdout  # the others said why they skipped
    from harness.store.store import Store

    assert Store(store).check() == []
