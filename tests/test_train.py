"""The trainer: learns, selects the best PGD-10 checkpoint, resumes exactly, stops on NaN."""

from __future__ import annotations

import pytest
import torch

import harness
from harness.training.train import TrainConfig, train
from harness.utils.compat import load_checkpoint
from harness.utils.errors import TrainingDiverged, UserError
from tests.helpers import synthetic_splits, tiny_net


def cfg(**kw) -> TrainConfig:
    base = {
        "epochs": 3,
        "batch_size": 32,
        "lr": 0.1,
        "milestones": [2],
        "select_steps": 2,
        "eval_batch_size": 64,
        "seed": 0,
    }
    return TrainConfig(**{**base, **kw})


def method():
    return harness.create_method("pgd-at", steps=2)


def run(tmp, **kw):
    net = tiny_net()
    res = train(
        net,
        method(),
        synthetic_splits(),
        cfg(**kw),
        ckpt_dir=tmp,
        progress=False,
        log=lambda _: None,
    )
    return net, res


def test_trains_and_keeps_best_and_last(tmp_path):
    net, res = run(tmp_path)
    assert len(res.history) == 3
    assert res.history[0]["lr"] == pytest.approx(0.1) and res.history[2]["lr"] == pytest.approx(
        0.01
    )
    assert res.best["clean"] > 0.5  # the blobs are easy
    best = load_checkpoint(tmp_path / "best.pt")
    last = load_checkpoint(tmp_path / "last.pt")
    assert best["epoch"] == res.best_epoch
    assert best["metrics"]["val_pgd2"] == max(h["val_pgd2"] for h in res.history)
    assert last["epoch"] == 2
    assert not list(tmp_path.glob("*.tmp"))


class Killed(Exception):
    pass


class KillAt:
    """A method wrapper that dies at (epoch, step): a crash in the middle of an epoch."""

    def __init__(self, inner, epoch: int, step: int) -> None:
        self.inner, self.at, self.step = inner, (epoch, step), 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def loss(self, student, teacher, x, x_adv, y, epoch=0):
        self.step = self.step + 1 if getattr(self, "epoch", None) == epoch else 0
        self.epoch = epoch
        if (epoch, self.step) == self.at:
            raise Killed
        return self.inner.loss(student, teacher, x, x_adv, y, epoch=epoch)


def test_resume_after_kill_gives_identical_weights(tmp_path):
    ref, ref_res = run(tmp_path / "ref")
    data = synthetic_splits()
    net = tiny_net()
    with pytest.raises(Killed):
        train(
            net,
            KillAt(method(), epoch=1, step=2),
            data,
            cfg(),
            ckpt_dir=tmp_path / "k",
            progress=False,
            log=lambda _: None,
        )
    assert load_checkpoint(tmp_path / "k" / "last.pt")["epoch"] == 0
    resumed = tiny_net(seed=123)  # different init: everything must come from the checkpoint
    res = train(
        resumed, method(), data, cfg(), ckpt_dir=tmp_path / "k", progress=False, log=lambda _: None
    )
    for a, b in zip(ref.state_dict().values(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert [h["val_pgd2"] for h in res.history] == [h["val_pgd2"] for h in ref_res.history]


def test_select_on_test_uses_test_split(tmp_path):
    _, res = run(tmp_path, select_on="test", epochs=1)
    assert "test_pgd2" in res.history[0] and "val_pgd2" not in res.history[0]


def test_nan_loss_stops_with_epoch_and_step(tmp_path):
    class NaNMethod:
        def __init__(self):
            self.m = method()

        def __getattr__(self, name):
            return getattr(self.m, name)

        def loss(self, student, teacher, x, x_adv, y, epoch=0):
            loss, logs = self.m.loss(student, teacher, x, x_adv, y, epoch)
            return loss * float("nan") if epoch == 1 else loss, logs

    with pytest.raises(TrainingDiverged) as info:
        train(
            tiny_net(),
            NaNMethod(),
            synthetic_splits(),
            cfg(),
            ckpt_dir=tmp_path,
            progress=False,
            log=lambda _: None,
        )
    assert (info.value.epoch, info.value.step) == (1, 0)


@pytest.mark.parametrize("bad", [{"epochs": 0}, {"select_on": "train"}, {"lr": -1.0}])
def test_bad_schedule(bad):
    with pytest.raises(UserError):
        cfg(**bad)


def test_damaged_last_checkpoint_falls_back_to_the_previous_one(tmp_path):
    ref, _ = run(tmp_path / "ref")
    data = synthetic_splits()
    with pytest.raises(Killed):
        train(
            tiny_net(),
            KillAt(method(), epoch=2, step=1),
            data,
            cfg(),
            ckpt_dir=tmp_path / "k",
            progress=False,
            log=lambda _: None,
        )
    last = tmp_path / "k" / "last.pt"
    assert load_checkpoint(tmp_path / "k" / "prev.pt")["epoch"] == 0
    last.write_bytes(last.read_bytes()[:100])  # truncated, as by a full disk
    lines = []
    resumed = tiny_net(seed=9)
    train(resumed, method(), data, cfg(), ckpt_dir=tmp_path / "k", progress=False, log=lines.append)
    assert any("cannot load checkpoint" in line and "falling back" in line for line in lines)
    assert "resumed after epoch 0" in lines
    for a, b in zip(ref.state_dict().values(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b)
