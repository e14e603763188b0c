"""How many images a run trains on: everything when selection is on test (the paper's protocol
and the official code's), train minus a 10 % validation split when it is on val."""

from __future__ import annotations

import json

import pytest
import torch

from harness.execution.inputs import load_dataset
from harness.execution.runner import execute
from harness.execution.status import _train_size
from harness.grid.load import load_grid
from harness.publishing import leaderboard
from harness.store.store import Store
from harness.utils.errors import UserError

pytestmark = pytest.mark.usefixtures("one_thread")

#: digits: 1,797 images; 20 % (359) are its test split, 1,438 train; 10 % of those (144) val.
DIGITS_TRAIN, DIGITS_VAL = 1438, 144

GRID = """
dataset = "digits"
students = ["tiny_cnn"]
methods = ["natural"]
select_on = "{select}"
[train]
epochs = 1
batch_size = 256
select_steps = 0
milestones = []
[eval]
attacks = ["clean"]
"""


def grid_file(tmp_path, select: str, extra: str = "") -> str:
    path = tmp_path / f"{select}.toml"
    path.write_text(GRID.format(select=select) + extra)
    return str(path)


@pytest.mark.parametrize(
    ("select", "options", "train", "val"),
    [
        ("test", {"val_fraction": 0.0}, DIGITS_TRAIN, 0),
        ("val", {}, DIGITS_TRAIN - DIGITS_VAL, DIGITS_VAL),
    ],
)
def test_selection_decides_what_is_held_out(tmp_path, select, options, train, val):
    (run,) = load_grid(grid_file(tmp_path, select)).runs
    assert run.config["dataset"] == {"name": "digits", "options": options}
    data = load_dataset(run.config["dataset"])
    assert len(data.train) == train
    assert (0 if data.val is None else len(data.val)) == val


def test_cli_selection_override_holds_out_nothing_on_test(tmp_path):
    (run,) = load_grid(grid_file(tmp_path, "val"), select_on="test").runs
    assert run.config["dataset"]["options"] == {"val_fraction": 0.0}
    (run,) = load_grid(grid_file(tmp_path, "test"), select_on="val").runs
    assert run.config["dataset"]["options"] == {}


def test_a_grid_may_still_hold_out_a_split_when_selecting_on_test(tmp_path):
    extra = "[dataset_options]\nval_fraction = 0.2\n"
    (run,) = load_grid(grid_file(tmp_path, "test", extra)).runs
    assert run.config["dataset"]["options"] == {"val_fraction": 0.2}


def test_selecting_on_a_split_that_holds_nothing_is_refused(tmp_path):
    extra = "[dataset_options]\nval_fraction = 0.0\n"
    with pytest.raises(UserError, match="select_on = 'val' needs a validation split"):
        load_grid(grid_file(tmp_path, "val", extra))


def test_run_records_its_training_images_in_config_and_provenance(tmp_path):
    store = Store(tmp_path / "store")
    for select, train in (("test", DIGITS_TRAIN), ("val", DIGITS_TRAIN - DIGITS_VAL)):
        (run,) = load_grid(grid_file(tmp_path, select)).runs
        status = execute(
            run, store, device=torch.device("cpu"), progress=False, echo=lambda _: None
        )
        assert status == "complete"
        config = json.loads((store.run_dir(run.run_id) / "config.json").read_text())
        held = DIGITS_TRAIN - train
        assert config["data"] == {"train": train, "val": held, "test": 359}
        assert store.metrics(run.run_id)["provenance"]["train_images"] == train
    (table,) = leaderboard.leaderboard_tables(store, "test")
    records = leaderboard._provenance_records(table)
    assert [r["train images"] for r in records] == [str(DIGITS_TRAIN)]
    assert f"| {DIGITS_TRAIN} " in leaderboard.to_markdown([table], "test")


def test_a_run_begun_before_sizes_were_recorded_still_resumes(tmp_path):
    store = Store(tmp_path)
    (run,) = load_grid(grid_file(tmp_path, "val")).runs
    store.begin(run.run_id, run.config)  # as older versions wrote it: no "data"
    store.begin(run.run_id, {**run.config, "data": {"train": 1, "val": 0, "test": 1}})
    assert store.config(run.run_id)["data"]["train"] == 1


@pytest.mark.parametrize(
    ("grid", "images"),
    [
        ("cifar10", 50_000),
        ("cifar100", 50_000),
        ("tinyimagenet", 100_000),
        ("transfer", 50_000),
        ("selfdistill", 50_000),
        ("ablation", 50_000),
    ],
)
def test_paper_grids_train_on_the_full_training_set(grid, images):
    g = load_grid(grid)
    runs = [*g.runs, *g.teacher_runs.values()]
    for run in runs:
        assert run.config["train"]["select_on"] == "test"
        assert run.config["dataset"]["options"] == {"val_fraction": 0.0}, run.run_id
        assert _train_size(run) == images


def test_surrogates_keep_a_split_to_select_on():
    """A transfer surrogate selects on val: where the students hold out nothing, it keeps the
    loader's split (and the id it always had)."""
    from harness.grid.load import surrogate_run

    train = {"epochs": 1, "milestones": [], "select_on": "val"}
    full = surrogate_run("resnet34", {"name": "cifar10", "options": {"val_fraction": 0.0}}, train)
    split = surrogate_run("resnet34", {"name": "cifar10", "options": {}}, train)
    assert full.config["dataset"]["options"] == {} and full.run_id == split.run_id
