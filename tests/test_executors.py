"""Executing grids: failure isolation, parallel workers, submitit with a teacher dependency,
and what ``bench status`` / ``plan`` report."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

import harness.utils.threads
from harness.execution.executors import (
    cpu_cores,
    pin_worker,
    run_local,
    run_submitit,
    slurm_parameters,
    worker_devices,
)
from harness.execution.status import plan_table, run_state, status_table
from harness.grid.load import load_grid
from harness.registry import METHODS
from harness.store.store import Store
from harness.utils.errors import UserError
from methods.base import Method
from tests.helpers import throughput_json

FAST = """
dataset = "digits"
students = {students}
methods = {methods}
teachers = {teachers}
seeds = [0]
[threat]
steps = 2
[train]
epochs = 1
batch_size = 64
lr = 0.1
milestones = []
select_steps = 1
eval_batch_size = 512
[eval]
attacks = ["clean"]
[teacher.t]
model = "tiny_cnn"
train = {{ method = "pgd-at", epochs = 1 }}
"""


def grid_file(tmp_path, students=("tiny_cnn",), methods=("pgd-at",), teachers=()):
    path = tmp_path / "fast.toml"
    path.write_text(
        FAST.format(
            students=json.dumps(list(students)),
            methods=json.dumps(list(methods)),
            teachers=json.dumps(list(teachers)),
        )
    )
    return str(path)


@pytest.fixture
def exploding_method():
    class Explode(Method):
        needs_teacher = False

        def perturb(self, student, teacher, x, y):
            return x

        def loss(self, student, teacher, x, x_adv, y, epoch=0):
            raise RuntimeError("boom")

    METHODS.register("explode")(Explode)
    yield "explode"
    METHODS._entries.pop("explode")


def test_a_failing_run_does_not_stop_the_others(tmp_path, exploding_method):
    grid = load_grid(grid_file(tmp_path, methods=[exploding_method, "pgd-at"]))
    store = Store(tmp_path / "store")
    lines = []
    outcome = run_local(grid, store, device=torch.device("cpu"), progress=False, echo=lines.append)
    assert outcome == {"failed": 1, "complete": 1}
    failed = next(r.run_id for r in grid.runs if r.run_id.startswith("explode"))
    assert run_state(store, failed) == "failed"
    assert (
        "RuntimeError: boom"
        in json.loads((store.run_dir(failed) / "status.json").read_text())["error"]
    )
    assert "Traceback" in (store.run_dir(failed) / "log.txt").read_text()
    table = status_table(grid, store.root)
    assert "1 done, 1 failed" in table and "RuntimeError: boom" in table
    # a second invocation skips the complete run and retries the failed one
    again = run_local(grid, store, device=torch.device("cpu"), progress=False, echo=lines.append)
    assert again == {"failed": 1, "skipped": 1}


def test_parallel_workers(tmp_path):
    grid = load_grid(grid_file(tmp_path, students=["tiny_cnn", "small_cnn"]))
    store = Store(tmp_path / "store")
    lines = []
    outcome = run_local(
        grid, store, device=torch.device("cpu"), progress=False, workers=2, echo=lines.append
    )
    assert outcome == {"complete": 2}
    assert set(store.frame("runs")["status"]) == {"complete"}
    assert len(store.frame("results")) == 2
    for spec in grid.runs:  # each worker had its share of the cores; its lines came back
        assert store.metrics(spec.run_id)["provenance"]["threads"] == max(1, cpu_cores() // 2)
        assert f"run {spec.run_id}" in lines and any(
            line.startswith(f"done {spec.run_id}: clean ") for line in lines
        )


def aborting_worker(conn, device, workers, run_id, config, *rest):
    """``worker_main``, except that a TRADES run's process dies hard in its first step: no
    exception, no report, as after a segfault or a fatal CUDA error."""
    import resource

    import harness.training.train
    from harness.execution import executors

    if config["method"]["name"] == "trades":
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # no core file
        harness.training.train.train_steps = lambda *args, **kw: os.abort()
    executors.worker_main(conn, device, workers, run_id, config, *rest)


def test_a_worker_that_dies_hard_fails_its_run_and_the_grid_goes_on(tmp_path, monkeypatch):
    from harness.execution import executors

    monkeypatch.setattr(executors, "worker_main", aborting_worker)
    path = Path(grid_file(tmp_path, methods=["pgd-at", "trades", "mart"]))
    path.write_text(path.read_text() + "[dataset_options]\ntest_fraction = 0.8\n")
    grid = load_grid(str(path))
    store = Store(tmp_path / "store")
    lines = []
    outcome = run_local(
        grid, store, device=torch.device("cpu"), progress=False, workers=2, echo=lines.append
    )
    assert outcome == {"complete": 2, "failed": 1}
    (died,) = [r.run_id for r in grid.runs if r.config["method"]["name"] == "trades"]
    status = json.loads((store.run_dir(died) / "status.json").read_text())
    assert status["status"] == "failed"
    assert status["error"] == "worker process killed by SIGABRT"
    assert "worker process killed by SIGABRT" in (store.run_dir(died) / "log.txt").read_text()
    assert f"failed {died}: worker process killed by SIGABRT" in lines
    others = [r.run_id for r in grid.runs if r.run_id != died]
    assert [store.status(r) for r in others] == ["complete", "complete"]


def test_a_worker_is_pinned_to_its_gpu_before_cuda_starts(monkeypatch):
    """CUDA_VISIBLE_DEVICES narrowed to the slot's GPU (an entry of the parent's list), which
    becomes cuda:0 and the current device; threads: the cores divided among the workers."""

    current, threads = [], []
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)
    monkeypatch.setattr(torch.cuda, "set_device", current.append)
    monkeypatch.setattr(torch, "set_num_threads", threads.append)
    monkeypatch.setattr(harness.utils.threads, "cpu_cores", lambda: 16)
    monkeypatch.delenv("BENCH_THREADS", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    env = {"CUDA_VISIBLE_DEVICES": "4, 6"}
    assert pin_worker("cuda:1", 4, env) == torch.device("cuda", 0)
    assert env == {"CUDA_VISIBLE_DEVICES": "6"} and current == [torch.device("cuda", 0)]
    env = {}
    assert pin_worker("cuda:3", 3, env) == torch.device("cuda", 0)
    assert env == {"CUDA_VISIBLE_DEVICES": "3"} and threads == [4, 5]
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)  # too late to hide GPUs
    env = {}
    assert pin_worker("cuda:2", 2, env) == torch.device("cuda", 2) and env == {}
    assert current[-1] == torch.device("cuda", 2)
    assert pin_worker("cpu", 32, env) == torch.device("cpu") and threads[-1] == 1


def test_worker_slots_take_the_visible_gpus_in_turn(monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert worker_devices(torch.device("cuda"), 3) == ["cuda:0", "cuda:1", "cuda:0"]
    assert worker_devices(torch.device("cuda", 1), 2) == ["cuda:1", "cuda:1"]
    assert worker_devices(torch.device("cpu"), 2) == ["cpu", "cpu"]
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    with pytest.raises(UserError, match="no CUDA device is visible"):
        worker_devices(torch.device("cuda"), 2)


def test_submitit_local_runs_teacher_before_student(tmp_path):
    pytest.importorskip("submitit")
    grid = load_grid(grid_file(tmp_path, methods=["dgad"], teachers=["t"]))
    store = Store(tmp_path / "store")
    jobs = run_submitit(
        grid, store, cluster="local", params={"timeout_min": 10}, echo=lambda _: None
    )
    for job in jobs:
        assert job.result() == "complete"
    (teacher,) = grid.teacher_runs.values()
    (student,) = grid.runs
    t_status = json.loads((store.run_dir(teacher.run_id) / "status.json").read_text())
    s_status = json.loads((store.run_dir(student.run_id) / "status.json").read_text())
    assert t_status["status"] == s_status["status"] == "complete"
    assert s_status["created_at"] >= t_status["updated_at"]  # the student started after
    assert run_submitit(grid, store, cluster="local", params={}, echo=lambda _: None) == []


def test_slurm_parameters_from_grid_and_flags(tmp_path):
    path = tmp_path / "g.toml"
    base = Path(grid_file(tmp_path)).read_text()
    path.write_text(base + '[slurm]\npartition = "gpu"\ntime = 600\n')
    grid = load_grid(str(path))
    params = slurm_parameters(grid, {"time": 120, "gpus_per_node": None, "mem_gb": 64})
    assert params == {
        "slurm_partition": "gpu",
        "timeout_min": 120,
        "mem_gb": 64,
        "gpus_per_node": 1,
    }
    path.write_text(path.read_text() + "colour = 1\n")
    with pytest.raises(UserError, match="unknown \\[slurm\\] key"):
        slurm_parameters(load_grid(str(path)), {})


def test_plan_uses_measured_throughput(tmp_path):
    grid = load_grid(grid_file(tmp_path))
    store = Store(tmp_path / "store")
    assert "projected: unknown GPU-hours for the 1 run(s) not done" in plan_table(grid, store.root)
    run_local(grid, store, device=torch.device("cpu"), progress=False, echo=lambda _: None)
    longer = load_grid(grid_file(tmp_path), seeds=[1])
    table = plan_table(longer, store.root)
    assert "projected:" in table and "without a measured" not in table
    assert "bench run --grid fast --method pgd-at --student tiny_cnn --seed 1" in table


def test_plan_projects_paper_grids_from_a_benchmark(tmp_path):
    grid = load_grid("cifar10", method="dgad", student="resnet18", teacher="wrn34-10")
    bench = throughput_json(
        tmp_path / "throughput.json", [("dgad", "resnet18", "wrn34_10", 1000.0)]
    )
    table = plan_table(grid, tmp_path / "store", bench)
    (spec,) = grid.runs
    hours = spec.config["train"]["epochs"] * 50_000 / 1000.0 / 3600  # select_on = test
    row = next(
        line for line in table.splitlines() if line.startswith("| student") and "dgad" in line
    )
    assert f" {hours:.2f} | benchmark " in row
    assert f"projected: {hours:.1f} GPU-hours" in table
    assert "NVIDIA H100 80GB HBM3" in table


def test_plan_prefers_the_store_over_a_benchmark(tmp_path):
    grid = load_grid(grid_file(tmp_path))
    store = Store(tmp_path / "store")
    run_local(grid, store, device=torch.device("cpu"), progress=False, echo=lambda _: None)
    (spec,) = grid.runs
    cfg = spec.config
    bench = throughput_json(
        tmp_path / "t.json",
        [
            (
                cfg["method"]["name"],
                cfg["model"],
                cfg["teacher"]["model"] if cfg["teacher"] else "—",
                1e-3,
            )
        ],
    )
    table = plan_table(load_grid(grid_file(tmp_path), seeds=[1]), store.root, bench)
    row = next(line for line in table.splitlines() if line.startswith("| student"))
    assert "| store " in row and "benchmark" not in row


def test_plan_refuses_an_unreadable_benchmark_in_one_line(tmp_path):
    from harness.utils.errors import UserError

    bad = tmp_path / "t.json"
    bad.write_text('{"training": [{"method": "dgad"}]}')
    with pytest.raises(UserError, match="cannot read throughput file") as info:
        plan_table(load_grid(grid_file(tmp_path)), tmp_path / "store", bad)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('time = "x"', "[slurm] time must be an integer, got 'x'"),
        ("mem_gb = 0", "[slurm] mem_gb must be >= 1, got 0"),
        ("partition = 5", "[slurm] partition must be a string, got 5"),
    ],
)
def test_slurm_values_are_checked(tmp_path, table, message):
    path = tmp_path / "g.toml"
    path.write_text(
        'dataset = "digits"\nstudents = ["tiny_cnn"]\nmethods = ["pgd-at"]\n'
        f"[train]\nepochs = 1\n[slurm]\n{table}\n"
    )
    with pytest.raises(UserError) as info:
        slurm_parameters(load_grid(str(path)), {})
    assert str(info.value) == f"{path}: {message}"
