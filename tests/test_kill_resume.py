"""A training run killed with SIGKILL many times resumes to exactly the weights and metrics of an
uninterrupted run (CPU, deterministic), and its store ends consistent.

Half the kills land at random moments; the other half and four more are aimed (through
``tests/paused_bench.py``, so that no kill depends on the machine's speed): while a checkpoint's
temporary file is written and not yet renamed, and at the windows between the store's writes: a
run claimed but not begun, begun but not indexed, evaluated but not marked complete, and marked
complete in its directory but not yet in the index.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import torch

from harness.store.store import Store
from harness.utils.compat import load_checkpoint

RANDOM_KILLS = 16
#: The windows between the store's writes (tests/paused_bench.py), in the order a run meets them.
FIRST_WINDOWS = ["claimed", "begun"]
LAST_WINDOWS = ["metrics", "status"]
PAUSED = Path(__file__).with_name("paused_bench.py")
GRID = """
dataset = "digits"
students = ["tiny_cnn"]
methods = ["pgd-at"]
seeds = [0]
[threat]
steps = 2
[train]
epochs = 16
batch_size = 128
lr = 0.1
milestones = [11]
select_steps = 1
eval_batch_size = 512
[eval]
attacks = ["clean", "fgsm"]
"""


def command(grid: Path, store: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "harness.cli",
        "run",
        "--grid",
        str(grid),
        "--store",
        str(store),
        "--no-progress",
    ]


def env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


def run_dir(store: Path) -> Path:
    (only,) = (store / "runs").iterdir()
    return only


def wait_for(predicate, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.002)
    return False


def kill_in_window(window: str, grid: Path, store: Path, flag: Path) -> None:
    """Start ``bench run``, let it reach ``window``, SIGKILL it there."""
    flag.unlink(missing_ok=True)
    cmd = [sys.executable, str(PAUSED), *command(grid, store)[3:]]
    proc = subprocess.Popen(
        cmd,
        env={**env(), "PAUSE_AT": window, "PAUSED_FLAG": str(flag)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    reached = wait_for(lambda: flag.exists() or proc.poll() is not None, 3600)
    assert reached and proc.poll() is None, f"bench ended before the window {window!r}"
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def indexed_status(store: Path) -> str:
    with sqlite3.connect(store / "index.sqlite") as conn:
        return conn.execute("SELECT status FROM runs").fetchone()[0]


def test_sigkill_many_times_then_identical_result(tmp_path):
    grid = tmp_path / "kill.toml"
    grid.write_text(GRID)
    ref_store, store, flag = tmp_path / "ref", tmp_path / "killed", tmp_path / "paused"
    subprocess.run(
        command(grid, ref_store), env=env(), check=True, capture_output=True, timeout=3600
    )

    for window in FIRST_WINDOWS:
        kill_in_window(window, grid, store, flag)
    (only,) = (store / "runs").iterdir()
    assert json.loads((only / "status.json").read_text())["status"] == "running"
    assert not (store / "index.sqlite").exists()  # killed before the index knew the run

    rng = random.Random(0)
    kills = mid_write = 0
    while kills < RANDOM_KILLS:
        if kills % 2 == 0:  # the moment a checkpoint is being written
            kill_in_window("checkpoint", grid, store, flag)
            mid_write += any((run_dir(store) / "checkpoints").glob(".*.tmp"))
            kills += 1
            continue
        proc = subprocess.Popen(
            command(grid, store), env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        time.sleep(rng.uniform(0.0, 1.5))
        if proc.poll() is not None:  # it finished before we could kill it: start over
            break
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
    assert kills == RANDOM_KILLS and mid_write == RANDOM_KILLS // 2, (kills, mid_write)

    for window in LAST_WINDOWS:
        kill_in_window(window, grid, store, flag)
    got = run_dir(store)
    assert json.loads((got / "status.json").read_text())["status"] == "complete"
    assert indexed_status(store) == "running"  # the window of the issue: index behind the run
    assert Store(store).check() == []  # a read heals it
    assert indexed_status(store) == "complete"

    done = subprocess.run(
        command(grid, store), env=env(), check=True, capture_output=True, timeout=3600, text=True
    )
    assert f"skip {got.name} (complete)" in done.stdout
    ref = run_dir(ref_store)
    assert ref.name == got.name
    # A complete run keeps best.pt (last.pt and prev.pt are pruned); every epoch's selection
    # accuracies and mean losses, bit for bit, pin the weights of each epoch.
    a, b = (
        load_checkpoint(ref / "checkpoints" / "best.pt"),
        load_checkpoint(got / "checkpoints" / "best.pt"),
    )
    assert a["epoch"] == b["epoch"]
    for x, y in zip(a["student"].values(), b["student"].values(), strict=True):
        assert torch.equal(x, y)
    ma = json.loads((ref / "metrics.json").read_text())
    mb = json.loads((got / "metrics.json").read_text())
    ha, hb = ma["train"]["history"], mb["train"]["history"]
    timing = ("epoch_time_s", "images_per_s")
    assert [{k: v for k, v in h.items() if k not in timing} for h in ha] == [
        {k: v for k, v in h.items() if k not in timing} for h in hb
    ]
    assert len(ha) == json.loads((got / "config.json").read_text())["train"]["epochs"]
    assert ma["results"] == mb["results"] and ma["checks"] == mb["checks"]
    assert not list(got.rglob("*.tmp")), "temporary files of killed writes left behind"
    assert not (got / "claim.json").exists()
    assert not any((store / "pending").iterdir())
    board = (store / "leaderboards" / "kill.md").read_text()
    assert "pgd-at" in board and f"{100 * mb['results']['fgsm']['accuracy']:.2f}" in board
