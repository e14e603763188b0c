"""The typed run config: one frozen instance per run, its JSON form (what config.json holds and
the id hashes) read back unchanged, and the defaults and choices everything else derives."""

from __future__ import annotations

import dataclasses

import pytest

from harness.grid.load import list_grids, load_grid
from harness.schema import (
    SELECT_ON,
    TEACHER_ROLE,
    THREAT_DEFAULTS,
    TRAIN_DEFAULTS,
    RunConfig,
    TeacherRef,
    Threat,
    Training,
)
from harness.utils.errors import UserError
from harness.utils.values import canonical_json, config_hash


@pytest.fixture(scope="module")
def every_config() -> list[RunConfig]:
    import os

    os.environ.setdefault("BENCH_CIFAR10_MINI", "data/cifar10_mini.npz")
    out = []
    for name in list_grids():
        grid = load_grid(name)
        specs = [*grid.teacher_runs.values(), *grid.runs, *grid.surrogate_runs.values()]
        out += [s.config for s in specs]
    return out


def test_every_resolved_run_is_one_frozen_run_config(every_config):
    assert every_config and all(isinstance(c, RunConfig) for c in every_config)
    with pytest.raises(dataclasses.FrozenInstanceError):
        every_config[0].seed = 3  # type: ignore[misc]


def test_the_json_form_reads_back_unchanged(every_config):
    """What a store holds becomes the same config again (and so the same id)."""
    from harness.execution.external import external_config

    externals = [
        external_config("robustbench", "Chen2021LTD_WRN34_10", {"robustbench": "C"}, {
            "name": "cifar10", "options": {}}),
        external_config("checkpoint", "resnet18", {"path": "/x.pt", "sha256": "ab" * 32}, {
            "name": "npz", "options": {"path": "d.npz"}}),
    ]  # fmt: skip
    for config in [*every_config, *externals]:
        data = config.to_json()
        again = RunConfig.from_json(data)
        assert again == config and again.to_json() == data and again.run_id == config.run_id
    assert externals[0].to_json()["train"] == {"epochs": 0, "eval_batch_size": 256}


def test_the_run_id_hashes_the_json_form_without_grids(every_config):
    config = next(c for c in every_config if c.kind == "student" and c.teacher is not None)
    body = {k: v for k, v in config.to_json().items() if k != "grids"}
    head = f"{config.label}-{config.dataset.name}-{config.model}-{config.teacher.name}"
    assert config.run_id == f"{head}-s{config.seed}-{config_hash(body)}"
    assert config["teacher"] == config.teacher.to_json()  # the mapping view is the JSON form
    assert canonical_json(config) == canonical_json(config.to_json())


def test_a_variant_labels_the_run_and_is_recorded():
    grid = load_grid("ablation", method="dgad-map-pcr")
    config = grid.runs[0].config
    assert config.label == "dgad-map-pcr" and config.method == "dgad"
    assert config.to_json()["method"]["variant"] == "dgad-map-pcr"
    assert grid.runs[0].run_id.startswith("dgad-map-pcr-")


def test_several_teachers_by_role_leave_the_single_teacher_form_alone(every_config):
    """A method with several teachers (by role) gets a form of its own; one teacher of the
    default role keeps today's ``"teacher"`` entry, and so its id."""
    config = next(c for c in every_config if c.teacher is not None)
    assert config.teachers == ((TEACHER_ROLE, config.teacher),)
    natural = TeacherRef("nat", "resnet18", "checkpoint", path="/n.pt", sha256="cd" * 32)
    two = config.replace(teachers=(("natural", natural), ("robust", config.teacher)))
    data = two.to_json()
    assert data["teacher"] is None and list(data["teachers"]) == ["natural", "robust"]
    assert f"-nat+{config.teacher.name}-s" in two.run_id and two.run_id != config.run_id
    assert RunConfig.from_json(data) == two
    with pytest.raises(ValueError, match="not one teacher"):
        two.teacher  # noqa: B018


def test_defaults_and_choices_exist_once():
    import methods.base
    from harness.cli import run
    from harness.grid import load
    from harness.training.train import TrainConfig

    assert THREAT_DEFAULTS == {"eps": 8 / 255, "step_size": 2 / 255, "steps": 10}
    assert methods.base.THREAT_DEFAULTS is THREAT_DEFAULTS
    assert load.TRAIN_DEFAULTS is TRAIN_DEFAULTS and load.THREAT_DEFAULTS is THREAT_DEFAULTS
    trainer = TrainConfig()
    assert {k: getattr(trainer, k) for k in TRAIN_DEFAULTS} == TRAIN_DEFAULTS
    (option,) = [p for p in run.params if p.name == "select_on"]
    assert tuple(option.type.choices) == SELECT_ON


def test_unknown_keys_come_from_the_fields():
    with pytest.raises(UserError, match=r"unknown key\(s\) epsilon in \[threat\]; valid: eps, "):
        Threat.from_table({"epsilon": 0.1}, "g.toml")
    with pytest.raises(UserError, match="valid: batch_size, epochs, eval_batch_size, lr"):
        Training.from_table({"lr_decay": 0.1}, "g.toml", "train")
    assert Training.from_table({"milestones": [3, 1]}, "g", "train").milestones == (1, 3)


def test_a_shortened_schedule_scales_its_milestones():
    train = Training(epochs=200, milestones=(100, 150))
    assert train.shortened(None) is train and train.shortened(200) is train
    assert train.shortened(4).milestones == (2, 3) and train.shortened(4).epochs == 4
    assert train.shortened(2).milestones == (1,)
