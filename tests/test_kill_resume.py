"""A training run killed with SIGKILL many times (some kills in the middle of a checkpoint
write) resumes to exactly the weights and metrics of an uninterrupted run (CPU, deterministic)."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from harness.compat import load_checkpoint

KILLS = 20
GRID = """
dataset = "digits"
students = ["tiny_cnn"]
methods = ["pgd-at"]
seeds = [0]
[threat]
steps = 2
[train]
epochs = 24
batch_size = 128
lr = 0.1
milestones = [16]
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


def test_sigkill_many_times_then_identical_result(tmp_path):
    grid = tmp_path / "kill.toml"
    grid.write_text(GRID)
    ref_store, store = tmp_path / "ref", tmp_path / "killed"
    subprocess.run(
        command(grid, ref_store), env=env(), check=True, capture_output=True, timeout=600
    )

    rng = random.Random(0)
    runs = store / "runs"
    kills = mid_write = 0
    while kills < KILLS:
        proc = subprocess.Popen(
            command(grid, store), env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        started = wait_for(lambda: runs.exists() and any(runs.iterdir()), 60)
        if kills % 2 == 0:  # the moment a checkpoint is being written
            ckpt_dir = run_dir(store) / "checkpoints" if started else store
            wait_for(lambda d=ckpt_dir: any(d.glob(".*.tmp")), 5)
            mid_write += any(ckpt_dir.glob(".*.tmp"))
        else:
            time.sleep(rng.uniform(0.0, 1.5))
        if proc.poll() is not None:  # it finished before we could kill it: start over
            break
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
    subprocess.run(command(grid, store), env=env(), check=True, capture_output=True, timeout=600)

    assert kills == KILLS and mid_write >= 3, (kills, mid_write)
    ref, got = run_dir(ref_store), run_dir(store)
    assert ref.name == got.name
    a, b = (
        load_checkpoint(ref / "checkpoints" / "last.pt"),
        load_checkpoint(got / "checkpoints" / "last.pt"),
    )
    for x, y in zip(a["student"].values(), b["student"].values(), strict=True):
        assert torch.equal(x, y)
    assert a["history"] == [
        {
            **h,
            "epoch_time_s": a["history"][i]["epoch_time_s"],
            "images_per_s": a["history"][i]["images_per_s"],
        }
        for i, h in enumerate(b["history"])
    ]
    ma = json.loads((ref / "metrics.json").read_text())
    mb = json.loads((got / "metrics.json").read_text())
    assert ma["results"] == mb["results"] and ma["checks"] == mb["checks"]
    assert json.loads((got / "status.json").read_text())["status"] == "complete"
