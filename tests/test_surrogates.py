"""Transfer surrogates are runs of the grid: expanded with the students that need them, planned
(GPU-hours), shown by ``bench status``, trained before those students (here and on Slurm), once
(claims), and never from inside an evaluation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

import harness.store.claims as claims_mod
from harness.execution.executors import ordered_runs, run_local, run_submitit
from harness.execution.inputs import load_dataset
from harness.execution.runner import execute
from harness.execution.status import plan_table, status_table
from harness.grid.load import load_grid, surrogate_run
from harness.store.store import Store
from harness.utils.errors import UserError
from tests.helpers import throughput_json
from tests.test_executors import grid_file

CPU = torch.device("cpu")
TRANSFER = '[eval.transfer]\nsurrogates = ["tiny_cnn"]\nattacks = ["fgsm"]\nepochs = 1\n'


def transfer_grid(tmp_path: Path, **kw: Any) -> str:
    path = Path(grid_file(tmp_path, **kw))
    path.write_text(path.read_text() + TRANSFER)
    return str(path)


def quiet(_: str) -> None:
    pass


def test_the_grid_expands_each_surrogate_once_and_students_name_theirs(tmp_path):
    grid = load_grid(transfer_grid(tmp_path, methods=["pgd-at", "trades"]), seeds=[0, 1])
    (surrogate,) = grid.surrogate_runs.values()
    assert surrogate.kind == "surrogate" and surrogate.config.method == "natural"
    assert surrogate.config.model == "tiny_cnn" and surrogate.config.select_on == "val"
    # the id every earlier version gave it (what tests/golden/run_ids.json pins for the grids)
    transfer = grid.runs[0].config.to_json()["eval"]["transfer"]
    old = surrogate_run("tiny_cnn", grid.runs[0].config["dataset"], transfer["train"])
    assert surrogate.run_id == old.run_id
    assert len(grid.runs) == 4
    assert all(r.surrogates == (surrogate.run_id,) for r in grid.runs)
    first, students = ordered_runs(grid, Store(tmp_path / "store"))
    assert [r.run_id for r in first] == [surrogate.run_id] and students == grid.runs


def test_a_grid_without_transfer_has_no_surrogates(tmp_path):
    grid = load_grid(grid_file(tmp_path))
    assert grid.surrogate_runs == {} and grid.runs[0].surrogates == ()


def test_plan_counts_the_surrogates_gpu_hours(tmp_path):
    grid = load_grid(transfer_grid(tmp_path))
    bench = throughput_json(
        tmp_path / "t.json",
        [("pgd-at", "tiny_cnn", "—", 0.05), ("natural", "tiny_cnn", "—", 0.1)],
    )
    table = plan_table(grid, tmp_path / "store", bench)
    lines = table.splitlines()
    (row,) = [line for line in lines if line.startswith("| surrogate")]
    (surrogate,) = grid.surrogate_runs.values()
    (student,) = grid.runs
    images = len(load_dataset(surrogate.config.dataset).train)  # one epoch each
    own = images / 0.1 / 3600
    assert f" {own:.2f} | benchmark " in row and "natural" in row
    total = own + len(load_dataset(student.config.dataset).train) / 0.05 / 3600
    assert f"projected: {total:.1f} GPU-hours" in table
    assert lines.index(row) < next(
        i for i, line in enumerate(lines) if line.startswith("| student")
    )


def test_status_shows_the_surrogate_and_its_state(tmp_path):
    grid = load_grid(transfer_grid(tmp_path))
    store = Store(tmp_path / "store")
    before = status_table(grid, store.root)
    (row,) = [line for line in before.splitlines() if line.startswith("| surrogate")]
    assert "pending" in row and "natural" in row
    assert "2 pending" in before
    run_local(grid, store, device=CPU, progress=False, echo=quiet)
    after = status_table(grid, store.root)
    (row,) = [line for line in after.splitlines() if line.startswith("| surrogate")]
    assert "done" in row and "2 done" in after


def test_surrogates_train_before_their_students_and_once(tmp_path, monkeypatch):
    """Another process holds the surrogate's claim: this one waits for it instead of training
    it too; the holder dies without finishing (the claim is released), so it is taken up here;
    the student starts after it, and evaluation trains nothing."""
    import harness.execution.runner as runner

    grid = load_grid(transfer_grid(tmp_path), seeds=[0, 1])
    (surrogate,) = grid.surrogate_runs.values()
    store = Store(tmp_path / "store")
    held = store.claim(surrogate.run_id)
    held.__enter__()
    waited: list[Path] = []

    def holder_dies(run_dir: Path, **_: Any) -> None:
        waited.append(run_dir)
        held.__exit__(None, None, None)

    monkeypatch.setattr(claims_mod, "wait_released", holder_dies)
    executed: list[str] = []
    real = runner.execute

    def spy(spec, *a, **kw):
        executed.append(spec.run_id)
        return real(spec, *a, **kw)

    monkeypatch.setattr(runner, "execute", spy)
    lines: list[str] = []
    outcome = run_local(grid, store, device=CPU, progress=False, echo=lines.append)
    assert outcome == {"complete": 3}
    assert waited == [store.run_dir(surrogate.run_id)]
    assert any(f"waiting for surrogate run {surrogate.run_id}" in line for line in lines)
    assert lines.count(f"run {surrogate.run_id}") == 1  # trained once
    order = [line for line in lines if line.startswith("run ")]
    assert order[0] == f"run {surrogate.run_id}"
    # two tries of the surrogate (held, then taken up) and one of each student: evaluation
    # called execute for nothing
    assert executed == [surrogate.run_id, surrogate.run_id, *[r.run_id for r in grid.runs]]


def test_a_student_whose_surrogate_is_missing_is_refused_before_training(tmp_path):
    grid = load_grid(transfer_grid(tmp_path))
    (student,) = grid.runs
    store = Store(tmp_path / "store")
    with pytest.raises(UserError, match="transfer surrogate run.*not complete"):
        execute(student, store, device=CPU, progress=False, echo=quiet)
    assert not store.run_dir(student.run_id).exists()


def test_a_failed_surrogate_blocks_its_students(tmp_path, monkeypatch):
    import harness.execution.executors as executors

    grid = load_grid(transfer_grid(tmp_path))
    (surrogate,) = grid.surrogate_runs.values()
    real = executors.run_one

    def fail_surrogates(spec, store, **kw):
        if spec.kind == "surrogate":
            return "failed"
        return real(spec, store, **kw)

    monkeypatch.setattr(executors, "run_one", fail_surrogates)
    lines: list[str] = []
    store = Store(tmp_path / "store")
    outcome = run_local(grid, store, device=CPU, progress=False, echo=lines.append)
    assert outcome == {"failed": 1, "blocked": 1}
    assert f"its transfer surrogate run {surrogate.run_id} is not complete" in "\n".join(lines)


class FakeJob:
    def __init__(self, n: int) -> None:
        self.job_id = n

    def result(self) -> str:
        return "complete"


class FakeExecutor:
    """submitit's AutoExecutor as far as run_submitit uses it: records what is submitted with
    which Slurm dependency."""

    submitted: list[tuple[str, str | None]] = []

    def __init__(self, folder: Path, cluster: str) -> None:
        self.params: dict[str, Any] = {}

    def update_parameters(self, **params: Any) -> None:
        self.params.update(params)

    def submit(self, fn: Any, run_id: str, *args: Any) -> FakeJob:
        extra = self.params.get("slurm_additional_parameters") or {}
        FakeExecutor.submitted.append((run_id, extra.get("dependency")))
        return FakeJob(len(FakeExecutor.submitted))

    def batch(self) -> Any:
        import contextlib

        return contextlib.nullcontext()


def test_slurm_orders_surrogates_and_teachers_before_the_students(tmp_path, monkeypatch):
    submitit = pytest.importorskip("submitit")
    monkeypatch.setattr(submitit, "AutoExecutor", FakeExecutor)
    monkeypatch.setattr("shutil.which", lambda name: f"/usr/bin/{name}")  # Slurm "installed"
    FakeExecutor.submitted = []
    grid = load_grid(transfer_grid(tmp_path, methods=["dgad", "pgd-at"], teachers=["t"]))
    (teacher,) = grid.teacher_runs.values()
    (surrogate,) = grid.surrogate_runs.values()
    run_submitit(grid, Store(tmp_path / "store"), cluster="slurm", params={}, echo=quiet)
    got = dict(FakeExecutor.submitted)
    assert [r for r, _ in FakeExecutor.submitted[:2]] == [teacher.run_id, surrogate.run_id]
    assert got[teacher.run_id] is None and got[surrogate.run_id] is None
    dgad, pgdat = grid.runs
    assert got[dgad.run_id] == "afterok:1:2"  # its teacher's job and the surrogate's
    assert got[pgdat.run_id] == "afterok:2"
