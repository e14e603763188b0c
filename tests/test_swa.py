"""Stochastic weight averaging (``[train] swa = true``), as PeerAiD's official ``--swa_s``:
the average and the BatchNorm pass against a transcription of ``utils/SWA.py``, the trainer
selecting and keeping the averaged student, an exact resume, and the schema keeping every
earlier run id."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import harness
from harness.data import batches
from harness.schema import Training
from harness.training.swa import WeightAverage, bn_update, swa_start
from harness.training.train import TrainConfig, train
from harness.utils.compat import load_checkpoint
from harness.utils.errors import UserError
from tests.helpers import synthetic_splits, tiny_net
from tests.test_train import KillAt, Killed


def official_moving_average(net1: nn.Module, net2: nn.Module, alpha: float) -> None:
    """PeerAiD ``utils/SWA.py:moving_average``, written out."""
    for p1, p2 in zip(net1.parameters(), net2.parameters(), strict=True):
        p1.data *= 1.0 - alpha
        p1.data += p2.data * alpha


def official_bn_update(batches_x: list[torch.Tensor], model: nn.Module) -> None:
    """PeerAiD ``utils/SWA.py:bn_update``, written out: reset, momentum b/(n+b) per batch."""
    model.train()
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    momenta = {m: m.momentum for m in norms}
    for m in norms:
        m.running_mean = torch.zeros_like(m.running_mean)
        m.running_var = torch.ones_like(m.running_var)
    n = 0
    for x in batches_x:
        b = x.size(0)
        for m in norms:
            m.momentum = b / (n + b)
        model(x)
        n += b
    for m in norms:
        m.momentum = momenta[m]


def test_average_and_bn_pass_match_the_official_code():
    data = synthetic_splits(n_train=70)  # 70 = 32 + 32 + 6: a short last batch
    students = [tiny_net(seed=s) for s in (1, 2, 3)]
    swa = WeightAverage(tiny_net(seed=9), start=0, device="cpu")
    official = tiny_net(seed=9)
    for n, student in enumerate(students):
        swa.update(student, data.train, batch_size=32, seed=5, epoch=n, device=torch.device("cpu"))
        official_moving_average(official, student, 1.0 / (n + 1))
        gen = torch.Generator().manual_seed(harness.utils.values.derive_seed(5, "swa-bn", n))
        xs = [x for x, _ in batches(data.train, 32, shuffle=True, generator=gen, augment=True)]
        assert [len(x) for x in xs] == [32, 32, 6]
        with torch.no_grad():
            official_bn_update(xs, official)
    assert swa.n == 3
    mean = [sum(ps) / 3 for ps in zip(*(s.parameters() for s in students), strict=True)]
    for got, want, official_p in zip(swa.model.parameters(), mean, official.parameters()):
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-7)
        assert torch.equal(got, official_p)  # the same operations in the same order
    for name, buf in swa.model.named_buffers():
        if "running" in name:  # (num_batches_tracked only counts: momentum is set per batch)
            torch.testing.assert_close(buf, dict(official.named_buffers())[name], rtol=0, atol=0)


def test_bn_pass_weights_images_not_batches():
    """The image-weighted average: a batch of 2 images counts 2/10, not 1/2."""
    net = nn.Sequential(nn.BatchNorm2d(1))
    xs = [torch.full((8, 1, 2, 2), 1.0), torch.full((2, 1, 2, 2), 6.0)]
    bn_update(net, [(x, None) for x in xs])
    assert net[0].running_mean.item() == pytest.approx((8 * 1.0 + 2 * 6.0) / 10)
    assert net[0].momentum == 0.1  # put back


def test_swa_start_is_the_first_milestone():
    assert swa_start([214, 259, 284], 300) == 214
    assert swa_start([5], 5) == swa_start([], 3) == 0  # none within the schedule: from 0


def cfg(**kw) -> TrainConfig:
    base = {"epochs": 4, "batch_size": 32, "lr": 0.1, "milestones": [2], "select_steps": 2,
            "eval_batch_size": 64, "seed": 0, "swa": True}  # fmt: skip
    return TrainConfig(**{**base, **kw})


def method():
    return harness.create_method("pgd-at", steps=2)


def test_trainer_keeps_the_best_averaged_student(tmp_path):
    """Epochs 0-1 plain, 2-3 averaged: best.pt is an averaged student (the best is started
    again at the first averaged epoch), and after epoch 3 the average is of epochs 2 and 3."""
    seen: dict[int, dict[str, torch.Tensor]] = {}
    net = tiny_net()

    def keep(record: dict) -> None:
        seen[record["epoch"]] = copy.deepcopy(net.state_dict())

    res = train(net, method(), synthetic_splits(), cfg(), ckpt_dir=tmp_path, progress=False,
                log=lambda _: None, on_epoch=keep)  # fmt: skip
    assert [h["swa_models"] for h in res.history] == [0, 0, 1, 2]
    assert res.best_epoch in (2, 3)
    last = load_checkpoint(tmp_path / "last.pt")
    assert last["swa"]["n"] == 2 and last["swa"]["start"] == 2
    for name, value in last["swa"]["model"].items():
        if "running" in name or "num_batches" in name:
            continue
        torch.testing.assert_close(value, (seen[2][name] + seen[3][name]) / 2)
    best = load_checkpoint(tmp_path / "best.pt")
    if res.best_epoch == 3:
        for name, value in best["student"].items():
            assert torch.equal(value, last["swa"]["model"][name])
    trained = dict(net.named_parameters())
    assert not torch.equal(best["student"]["fc.weight"], trained["fc.weight"])


def test_only_averaged_epoch_is_kept(tmp_path):
    """With one averaged epoch (the last), best.pt is that epoch: the student's weights with
    BatchNorm statistics estimated again, whatever the plain epochs scored."""
    net = tiny_net()
    res = train(net, method(), synthetic_splits(), cfg(epochs=3), ckpt_dir=tmp_path,
                progress=False, log=lambda _: None)  # fmt: skip
    assert res.best_epoch == 2
    best = load_checkpoint(tmp_path / "best.pt")["student"]
    for name, value in net.state_dict().items():
        same = torch.equal(best[name], value)
        assert same == ("running" not in name and "num_batches" not in name), name


def test_resume_keeps_the_average(tmp_path):
    data = synthetic_splits()
    ref = tiny_net()
    ref_res = train(ref, method(), data, cfg(), ckpt_dir=tmp_path / "ref", progress=False,
                    log=lambda _: None)  # fmt: skip
    with pytest.raises(Killed):
        train(tiny_net(), KillAt(method(), epoch=3, step=1), data, cfg(), ckpt_dir=tmp_path / "k",
              progress=False, log=lambda _: None)  # fmt: skip
    resumed = tiny_net(seed=123)
    res = train(resumed, method(), data, cfg(), ckpt_dir=tmp_path / "k", progress=False,
                log=lambda _: None)  # fmt: skip
    assert [h["val_pgd2"] for h in res.history] == [h["val_pgd2"] for h in ref_res.history]
    a = load_checkpoint(tmp_path / "ref" / "best.pt")["student"]
    b = load_checkpoint(tmp_path / "k" / "best.pt")["student"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    a = load_checkpoint(tmp_path / "ref" / "last.pt")["swa"]
    b = load_checkpoint(tmp_path / "k" / "last.pt")["swa"]
    assert a["n"] == b["n"] == 2 and all(
        torch.equal(a["model"][k], b["model"][k]) for k in a["model"]
    )


def test_schema_keeps_earlier_configs_and_checks_the_key():
    plain = Training.from_table({}, "g.toml", "train")
    assert "swa" not in plain.to_json()  # every config written before the key: the same JSON
    on = Training.from_table({"swa": True}, "g.toml", "train")
    assert on.to_json()["swa"] is True and Training.from_json(on.to_json()) == on
    assert TrainConfig.of(on, "val", 0).swa is True
    with pytest.raises(UserError, match=r"\[train\] swa"):
        Training.from_table({"swa": "often"}, "g.toml", "train")
    for table in ({"swa": True, "epochs": 10}, {"swa": True, "milestones": []}):
        with pytest.raises(UserError, match="it needs a milestone below epochs"):
            Training.from_table(table, "g.toml", "train")  # it would never average
    short = Training.from_table({"swa": True, "epochs": 10, "milestones": [5]}, "g", "train")
    one = short.shortened(1)
    assert swa_start(one.milestones, one.epochs) == 0  # --epochs 1: that epoch is averaged


def test_surrogates_are_trained_without_swa():
    from harness.grid.runs import surrogate_run

    on = Training.from_table({"swa": True, "epochs": 10, "milestones": [5]}, "g", "train")
    spec = surrogate_run("tiny_cnn", {"name": "digits", "options": {}}, on.to_json())
    assert spec.config.train.swa is False


def test_peeraid_variant_trains_with_swa():
    from harness.grid.load import load_grid

    grid = load_grid("cifar10", method="peeraid")
    assert grid.runs and all(spec.config.train.swa for spec in grid.runs)
    other = load_grid("cifar10", method="absld")
    assert not any(spec.config.train.swa for spec in other.runs)


def test_averaged_student_stays_eager_and_plain_under_the_fast_path(tmp_path, monkeypatch):
    """A compiled, channels-last student: its average is an eager NCHW copy of its own, and
    best.pt keeps the plain keys a fresh model loads."""
    import harness.training.compiling as compiling
    from harness.training.fast import FastPath

    monkeypatch.setattr(compiling, "BACKEND", "eager")
    net = tiny_net()
    res = train(net, method(), synthetic_splits(), cfg(epochs=3), ckpt_dir=tmp_path,
                progress=False, log=lambda _: None,
                fast=FastPath(compile=True, channels_last=True))  # fmt: skip
    assert res.compile["graphs"] > 0 and not res.compile["fell_back"]
    assert "forward" in vars(net)  # the student's entry point is compiled (on the instance)
    fresh = tiny_net(seed=5)
    fresh.load_state_dict(load_checkpoint(tmp_path / "best.pt")["student"])
    conv = load_checkpoint(tmp_path / "best.pt")["student"]["body.0.weight"]
    assert conv.is_contiguous()
