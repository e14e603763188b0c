"""The evaluation engine: resumable per batch, worst case, per-class accuracy, reliability checks,
transfer cache."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import harness.evaluation.evaluate as ev
import harness.evaluation.transfer as tr
from harness.attacks.base import Attack
from harness.data import ArraySet
from harness.evaluation.per_class import per_class_accuracy
from harness.registry import ATTACKS
from harness.store.index import worst_class
from tests.helpers import fit, synthetic_splits, tiny_net

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def trained():
    """A tiny net trained to fit the synthetic blobs (clean accuracy well above chance)."""
    data = synthetic_splits(n_train=96, n_test=48)
    return fit(tiny_net(), data.train, steps=60).eval(), data


PGD = {"attack": "pgd", "eps": 8 / 255, "step_size": 2 / 255, "steps": 3}


class Killed(Exception):
    pass


def test_resume_redoes_no_finished_batch(trained, tmp_path, monkeypatch):
    net, data = trained
    full, full_mask = ev.run_attack(net, data.test, "pgd", PGD, batch_size=8, seed=3)
    calls = []
    real = ev.build_attack

    def dying(config, seed):
        calls.append(seed)
        if len(calls) == 4:
            raise Killed
        return real(config, seed)

    monkeypatch.setattr(ev, "build_attack", dying)
    with pytest.raises(Killed):
        ev.run_attack(net, data.test, "pgd", PGD, batch_size=8, seed=3, state_dir=tmp_path)
    calls.clear()
    monkeypatch.setattr(ev, "build_attack", lambda c, s: calls.append(s) or real(c, s))
    row, mask = ev.run_attack(net, data.test, "pgd", PGD, batch_size=8, seed=3, state_dir=tmp_path)
    assert len(calls) == 6 - 3  # 48 images / 8: batches 0-2 were done before the kill
    assert torch.equal(mask, full_mask) and row["accuracy"] == full["accuracy"]
    assert row["params"]["steps"] == 3 and row["in_bounds"]


def test_state_of_another_config_is_not_reused(trained, tmp_path):
    net, data = trained
    ev.run_attack(net, data.test, "pgd", PGD, batch_size=8, state_dir=tmp_path)
    other = {**PGD, "steps": 1}
    _, fresh = ev.run_attack(net, data.test, "pgd", other, batch_size=8)
    _, reused = ev.run_attack(net, data.test, "pgd", other, batch_size=8, state_dir=tmp_path)
    assert torch.equal(fresh, reused)


def test_worst_case_is_per_sample():
    masks = {"a": torch.tensor([1, 1, 0, 1]).bool(), "b": torch.tensor([1, 0, 1, 1]).bool()}
    row = ev.worst_case(masks)
    assert row["accuracy"] == 0.5 and row["params"]["of"] == ["a", "b"]


def test_per_class_accuracy_from_a_known_per_sample_result():
    # class 0: 2 of 3 right, class 1: 0 of 2, class 2: 1 of 1, class 3: no image
    labels = torch.tensor([0, 1, 0, 2, 1, 0])
    mask = torch.tensor([1, 0, 1, 1, 0, 0]).bool()
    acc, counts = per_class_accuracy(mask, labels, 4)
    assert acc == [pytest.approx(2 / 3), 0.0, 1.0, None] and counts == [3, 2, 1, 0]
    assert worst_class(acc) == 0.0  # the lowest of the classes that have images
    assert worst_class([None, 0.5, 0.25]) == 0.25 and worst_class(None) is None
    # a label beyond num_classes widens the list instead of being dropped
    assert per_class_accuracy(torch.tensor([True]), torch.tensor([2]), 2) == (
        [None, None, 1.0],
        [0, 0, 1],
    )
    with pytest.raises(ValueError):
        per_class_accuracy(mask[:3], labels, 4)


def test_worst_case_row_has_per_class_accuracy():
    labels = torch.tensor([0, 0, 1, 1])
    masks = {"a": torch.tensor([1, 1, 0, 1]).bool(), "b": torch.tensor([1, 0, 1, 1]).bool()}
    row = ev.worst_case(masks, labels, 2)
    assert row["per_class"] == [0.5, 0.5] and row["class_n"] == [2, 2]


def test_every_attack_of_a_suite_has_per_class_accuracy(trained):
    net, data = trained
    out = ev.evaluate_suite(
        net, data.test, {"clean": None, "pgd": PGD}, batch_size=16, num_classes=3, checks=False
    )
    for name in ("clean", "pgd"):
        mask, row = out["masks"][name], out["results"][name]
        want = [float(mask[data.test.y == c].float().mean()) for c in range(3)]
        assert row["per_class"] == pytest.approx(want)
        assert row["class_n"] == [int((data.test.y == c).sum()) for c in range(3)]
        assert sum(a * n for a, n in zip(row["per_class"], row["class_n"])) == pytest.approx(
            row["accuracy"] * row["n"]
        )
    survivors = out["masks"]["clean"] & out["masks"]["pgd"]
    want = [float(survivors[data.test.y == c].float().mean()) for c in range(3)]
    assert out["results"]["worst_case"]["per_class"] == pytest.approx(want)


def test_ordering_check():
    good = {"clean": {"accuracy": 0.9}, "fgsm": {"accuracy": 0.6}, "pgd10": {"accuracy": 0.5}}
    assert ev.check_ordering(good)["ok"]
    bad = {**good, "pgd10": {"accuracy": 0.7}}
    assert ev.check_ordering(bad) == {"ok": False, "detail": ["fgsm < pgd10"]}


class Rounding(nn.Module):
    """Quantises its input: zero gradients everywhere, the textbook masked-gradient model."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(torch.round(x * 4) / 4)


def test_eps_sweep_catches_masked_gradients(trained):
    net, data = trained
    sane = ev.check_eps_sweep(net, data.test, batch_size=48, device="cpu", seed=0, chance=1 / 3)
    assert sane["ok"], sane
    masked = ev.check_eps_sweep(
        Rounding(net), data.test, batch_size=48, device="cpu", seed=0, chance=1 / 3
    )
    assert not masked["ok"] and not masked["detail"]["reaches_zero"], masked


def test_batch_invariance_check(trained):
    net, data = trained

    class BatchDependent(nn.Module):
        def forward(self, x):
            return net(x - x.mean(0, keepdim=True))

    assert ev.check_batch_invariance(net, data.test, batch_size=32, device="cpu")["ok"]
    assert not ev.check_batch_invariance(BatchDependent(), data.test, batch_size=32, device="cpu")[
        "ok"
    ]


@ATTACKS.register("test-overshoot")
class Overshoot(Attack):
    """A broken attack that leaves its threat model (for the check's test only)."""

    def __init__(self, eps: float = 8 / 255, seed: int = 0) -> None:
        super().__init__(seed)
        self.eps = eps

    def __call__(self, model, x, y):
        return (x + 2 * self.eps).clamp(0, 1)


def test_out_of_threat_model_is_flagged(trained):
    net, data = trained
    out = ev.evaluate_suite(
        net,
        data.test,
        {"clean": None, "bad": {"attack": "test-overshoot", "eps": 8 / 255}},
        batch_size=48,
        num_classes=3,
    )
    assert not out["checks"]["in_threat_model"]["ok"]
    assert out["results"]["bad"]["max_linf"] == pytest.approx(16 / 255, abs=1e-6)
    assert set(out["checks"]) == {"ordering", "in_threat_model", "batch_invariant", "eps_sweep"}


def test_eval_subset_is_seeded():
    data = synthetic_splits(n_test=40).test
    a, b = ev.eval_subset(data, 10, 1), ev.eval_subset(data, 10, 1)
    assert torch.equal(a.x, b.x) and len(a) == 10
    assert not torch.equal(a.x, ev.eval_subset(data, 10, 2).x)
    assert ev.eval_subset(data, None, 0) is data


def test_transfer_cache_hit_on_second_call(trained, tmp_path, monkeypatch):
    net, data = trained
    surrogate = tiny_net(seed=5).eval()
    calls = []
    real = tr.build_attack
    monkeypatch.setattr(tr, "build_attack", lambda c, s: calls.append(s) or real(c, s))
    kw = {"cache_dir": tmp_path, "batch_size": 16, "seed": 0}
    first = tr.surrogate_examples(surrogate, "sha-a", data.test, PGD, **kw)
    n_first = len(calls)
    second = tr.surrogate_examples(surrogate, "sha-a", data.test, PGD, **kw)
    assert n_first == 3 and len(calls) == n_first and torch.equal(first, second)
    tr.surrogate_examples(surrogate, "sha-b", data.test, PGD, **kw)  # another checkpoint: miss
    assert len(calls) == 2 * n_first and len(list(tmp_path.glob("*.pt"))) == 2
    mask = tr.transfer_accuracy(net, first, data.test.y)
    assert mask.dtype == torch.bool and len(mask) == len(data.test)


def test_data_fingerprint_tracks_content():
    data = synthetic_splits(n_test=8).test
    changed = ArraySet(data.x.clone(), data.y.clone())
    changed.x[0, 0, 0, 0] ^= 1
    assert tr.data_fingerprint(data) != tr.data_fingerprint(changed)
