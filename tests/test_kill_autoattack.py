"""An AutoAttack evaluation killed with SIGKILL mid-batch, several times, resumes at the first
unfinished batch and ends with exactly the per-sample numbers of an uninterrupted run.

Each evaluation is a separate process (``python -c WORKER``) running ``run_attack`` with a state
dir, as ``bench eval`` does; it logs the seed of every batch whose attack it starts, so the test
knows which batches each process computed.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from harness.utils.atomic import save_atomic
from harness.utils.compat import load_checkpoint
from harness.utils.values import derive_seed
from tests.helpers import fit, synthetic_splits, tiny_net

ROOT = Path(__file__).resolve().parent.parent
KILLS = 5
N, BATCH, SEED, CLASSES = 256, 16, 5, 5
BATCHES = N // BATCH
AA = {  # standard (APGD-CE, APGD-T, FAB-T, Square), cut down to run in seconds on a CPU
    "attack": "autoattack",
    "eps": 4 / 255,
    "version": "standard",
    "n_iter": 10,
    "n_target_classes": 2,
    "n_queries": 50,
}
WORKER = """
import os, sys
import torch
import harness.evaluation.evaluate as ev
from harness.utils.atomic import save_atomic
from harness.utils.compat import load_checkpoint
from harness.data import ArraySet
from tests.helpers import tiny_net

setup, state_dir, log, out = sys.argv[1:]
torch.set_num_threads(1)
s = load_checkpoint(setup)
net = tiny_net(classes=s["classes"])
net.load_state_dict(s["net"])
fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
real = ev.build_attack

def logged(config, seed):
    os.write(fd, f"{seed}\\n".encode())
    return real(config, seed)

ev.build_attack = logged
row, mask = ev.run_attack(
    net.eval(), ArraySet(s["x"], s["y"]), "autoattack", s["config"],
    batch_size=s["batch_size"], seed=s["seed"], state_dir=state_dir or None,
)
save_atomic({"row": row, "mask": mask}, out)
"""


def command(tmp: Path, state_dir: Path | None, log: Path, out: Path) -> list[str]:
    state = str(state_dir) if state_dir else ""
    return [sys.executable, "-c", WORKER, str(tmp / "setup.pt"), state, str(log), str(out)]


def env() -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


def started(log: Path) -> list[int]:
    """The batches whose attack the process logging to ``log`` started, in order."""
    index = {derive_seed(SEED, "autoattack", b): b for b in range(BATCHES)}
    lines = log.read_text().split("\n")[:-1] if log.exists() else []  # whole lines only
    return [index[int(line)] for line in lines]


def done(state: Path) -> int:
    return len(load_checkpoint(state)["masks"]) if state.exists() else 0


def wait_for(predicate, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.005)
    return False


def setup(tmp: Path) -> float:
    """A tiny net fitted to synthetic blobs, saved for the workers; its clean test accuracy."""
    data = synthetic_splits(n_train=200, n_test=N, classes=CLASSES)
    net = fit(tiny_net(classes=CLASSES), data.train, steps=100)
    save_atomic(
        {
            "net": net.state_dict(),
            "classes": CLASSES,
            "x": data.test.x,
            "y": data.test.y,
            "config": AA,
            "batch_size": BATCH,
            "seed": SEED,
        },
        tmp / "setup.pt",
    )
    with torch.no_grad():
        return float((net(data.test.x.float() / 255).argmax(1) == data.test.y).float().mean())


def test_autoattack_killed_mid_batch_resumes_to_identical_numbers(tmp_path):
    clean = setup(tmp_path)
    quiet = {"env": env(), "cwd": ROOT, "stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    # the uninterrupted run, on the second core while the first one is killed again and again
    uninterrupted = subprocess.Popen(
        command(tmp_path, None, tmp_path / "ref.log", tmp_path / "ref.pt"),
        **{**quiet, "stderr": subprocess.PIPE},
    )

    rng = random.Random(0)
    state_dir = tmp_path / "state"
    state = state_dir / "autoattack.pt"
    done_at_kill: list[int] = []
    logs = [tmp_path / f"killed{i}.log" for i in range(KILLS)] + [tmp_path / "last.log"]
    for log in logs[:KILLS]:
        before = done_at_kill[-1] if done_at_kill else 0
        target = before + rng.choice((1, 2))  # this process finishes 1 or 2 batches first
        proc = subprocess.Popen(command(tmp_path, state_dir, log, tmp_path / "out.pt"), **quiet)
        reached = wait_for(lambda lg=log, t=target: t in started(lg), 1800)
        time.sleep(rng.uniform(0.0, 0.1))  # somewhere inside batch ``target``'s attack
        assert reached and proc.poll() is None, "the evaluation ended before it was killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        done_at_kill.append(done(state))
    last = subprocess.run(
        command(tmp_path, state_dir, logs[-1], tmp_path / "out.pt"),
        **{**quiet, "stderr": subprocess.PIPE},
        timeout=3600,
    )
    assert last.returncode == 0, last.stderr.decode()[-2000:]
    _, err = uninterrupted.communicate(timeout=3600)
    assert uninterrupted.returncode == 0, err.decode()[-2000:]
    ref, got = load_checkpoint(tmp_path / "ref.pt"), load_checkpoint(tmp_path / "out.pt")

    assert len(done_at_kill) == KILLS and 0 < done_at_kill[-1] < BATCHES
    assert started(tmp_path / "ref.log") == list(range(BATCHES))
    for k, log in enumerate(logs[1:]):
        # the process after kill k starts at the first unfinished batch and goes on in order
        first = done_at_kill[k]
        seen = started(log)
        assert seen == list(range(first, first + len(seen))), (k, first, seen)
        later = [b for lg in logs[k + 1 :] for b in started(lg)]
        assert min(later) == first  # no batch finished before kill k is attacked again
    assert started(logs[-1])[-1] == BATCHES - 1 and done(state) == BATCHES
    redone = sum(len(started(lg)) for lg in logs) - BATCHES
    assert redone <= KILLS  # at most the batch each kill interrupted

    assert torch.equal(got["mask"], ref["mask"])
    assert got["row"] == ref["row"]
    params = got["row"]["params"]
    assert params["version"] == "standard" and params["attacks"][0] == "apgd-ce"
    assert 0 < got["row"]["accuracy"] < clean  # the attack broke some points, not all
