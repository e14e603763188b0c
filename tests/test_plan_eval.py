"""``bench plan`` prints commands that make exactly the planned runs and "unknown" GPU-hours
when nothing is measured; ``bench eval`` says what it will run and roughly how long first;
``--executor slurm`` without Slurm is one line."""

from __future__ import annotations

import shlex

import pytest
import torch

import harness
from harness.execution.estimate import describe, eval_plan
from harness.execution.run_evaluation import suite_attacks, whitebox
from harness.grid.load import load_grid
from harness.store.store import Store
from tests.helpers import bench
from tests.tiny_grid import tiny_grid

pytestmark = pytest.mark.usefixtures("one_thread")

FLAGS = {
    "--grid": "name",
    "--method": "method",
    "--student": "student",
    "--teacher": "teacher",
    "--seed": "seeds",
    "--epochs": "epochs",
    "--teacher-epochs": "teacher_epochs",
    "--select-on": "select_on",
    "--dataset": "dataset",
}


def plan_commands(out: str) -> list[str]:
    return [line.split("| bench run ", 1)[1].rstrip(" |") for line in out.splitlines()
            if "| bench run " in line]  # fmt: skip


def grid_of(command: str):
    """The grid ``bench run <command>`` would run (its flags through ``load_grid``)."""
    words = shlex.split(command)
    kw = {}
    for flag, value in zip(words[::2], words[1::2]):
        if flag == "--store":
            continue
        key = FLAGS[flag]
        kw[key] = [int(value)] if key == "seeds" else int(value) if "epochs" in key else value
    return load_grid(**kw)


def test_plan_commands_keep_the_overrides_and_unknown_is_unknown(tmp_path, capsys):
    flags = ["--dataset", "digits", "--epochs", "1", "--teacher-epochs", "2", "--select-on", "test"]
    store = tmp_path / "my store"
    code, out, err = bench(capsys, "plan", "--grid", "smoke", "--method", "dgad", "--store",
                           str(store), "--seed", "3", *flags)  # fmt: skip
    assert code == 0, err
    planned = load_grid("smoke", method="dgad", seeds=[3], epochs=1, teacher_epochs=2,
                        select_on="test", dataset="digits")  # fmt: skip
    (command,) = plan_commands(out)
    (spec,) = planned.runs
    assert " ".join(flags) in command and f"--store '{store}'" in command
    again = grid_of(command)
    assert [r.run_id for r in again.runs] == [spec.run_id]  # exactly this run
    assert again.teacher_runs["small-pgdat"].run_id == spec.needs  # and its short teacher
    assert "projected: unknown GPU-hours for the 2 run(s) not done" in out
    assert "0.0 GPU-hours" not in out


def test_plan_projects_from_a_measured_run(tmp_path, capsys):
    from harness.execution.inputs import load_dataset

    (spec,) = load_grid("smoke", method="dgad").runs
    st = Store(tmp_path)
    st.begin(spec.run_id, spec.config)
    st.finish(spec.run_id, {"results": {}, "train": {"images_per_s": 100.0}})
    code, out, _ = bench(capsys, "plan", "--grid", "smoke", "--method", "dgad", "--seed", "1",
                         "--store", str(tmp_path))  # fmt: skip
    images = len(load_dataset(spec.config["dataset"]).train)
    hours = spec.config["train"]["epochs"] * images / 100.0 / 3600
    assert code == 0 and (
        f"projected: {hours:.1f} GPU-hours for the 1 run(s) not done with a measured "
        "throughput, unknown for the other 1" in out
    )


def test_eval_says_the_suite_and_estimates_from_what_the_store_measured(tmp_path, capsys):
    tiny_grid(tmp_path, ["pgd-at"])
    net = harness.create_model("tiny_cnn", num_classes=2, image_size=8)
    torch.save({"state_dict": net.state_dict()}, tmp_path / "mine.pt")
    args = ["eval", str(tmp_path / "mine.pt"), "--model", "tiny_cnn", "--dataset",
            f"npz:{tmp_path / 'tiny.npz'}", "--attack", "clean", "--attack", "fgsm",
            "--store", str(tmp_path / "store"), "--no-progress"]  # fmt: skip
    code, out, err = bench(capsys, *args)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == "suite on 16 test image(s) of npz, cpu:"
    assert lines[1].split() == ["clean", "no", "attack", "unknown"]
    assert lines[2].split() == ["fgsm", "fgsm:", "eps=8/255", "unknown"]
    assert lines[3].startswith("estimated time: unknown (2 attack(s) never timed")
    assert lines.index(lines[3]) < next(i for i, x in enumerate(lines) if x.startswith("evaluat"))
    code, out, err = bench(capsys, *args)  # the first evaluation timed both attacks
    assert code == 0, err
    lines = out.splitlines()
    assert lines[2].split()[-1] == "s" and lines[2].split()[-2].startswith("~")
    assert lines[3].startswith("estimated time: ~") and "unknown" not in lines[3]


def test_the_whitebox_suite_is_listed_with_its_parameters(tmp_path):
    config = load_grid("smoke").runs[0].config
    attacks = suite_attacks(config, "whitebox")
    assert list(attacks) == ["clean", "fgsm", "pgd10", "cw2", "autoattack"]
    assert attacks == whitebox(config)
    lines = eval_plan(Store(tmp_path), config, attacks, None, 10000, "cuda")
    assert [line.split()[0] for line in lines[1:6]] == list(attacks)
    assert "cw2: binary_search_steps=1, c=0.1, confidence=0.01, lr=0.01, steps=1000" in lines[4]
    assert "autoattack: eps=8/255, version=standard" in lines[5]
    assert describe({"attack": "pgd", "eps": 8 / 255, "step_size": 2 / 255, "steps": 10}) == (
        "pgd: eps=8/255, step_size=2/255, steps=10"
    )
    assert lines[-1].startswith("estimated time: unknown (5 attack(s)")


def test_slurm_without_slurm_is_one_line(tmp_path, capsys, monkeypatch):
    store = tmp_path / "store"
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch, no srun here
    args = ["run", "--grid", "smoke", "--executor", "slurm", "--store", str(store)]
    code, _, err = bench(capsys, *args)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert err.startswith("error: --executor slurm needs Slurm: sbatch and srun are not on PATH")
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "submitit" else real(name, *a)
    )
    local = ["run", "--grid", "smoke", "--executor", "submitit-local", "--store", str(store)]
    code, _, err = bench(capsys, *local)
    assert code == 2 and err.strip() == (
        "error: --executor slurm and submitit-local need submitit: pip install submitit"
    )
    assert not store.exists()
