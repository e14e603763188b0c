"""JSMA: torchattacks 3.5.1's JSMA to the pixel, targets, batch independence, budget, modes."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import harness
from harness.attacks import jsma
from harness.attacks.jsma import JSMA, best_pairs
from harness.utils.errors import UserError

torchattacks = pytest.importorskip("torchattacks")

CLASSES = 5


pytestmark = pytest.mark.usefixtures("one_thread")


def conv_net(channels: int = 1, size: int = 6, seed: int = 0, dtype=torch.float32) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    net = nn.Sequential(
        nn.Conv2d(channels, 4, 3),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(4 * (size - 2) ** 2, CLASSES),
    )
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    return net.to(dtype).eval()


def images(n: int = 8, channels: int = 1, size: int = 6, seed: int = 1, dtype=torch.float32):
    """Multiples of 1/64 (0 and 1 included): exact in float, so 1 − (1 − x) == x."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 65, (n, channels, size, size), generator=g) / 64
    return x.to(dtype), torch.randint(0, CLASSES, (n,), generator=g)


def reference(model: nn.Module, x, targets, theta: float, gamma: float):
    """torchattacks' JSMA towards the given targets (its Jacobian buffer has the default dtype)."""
    atk = torchattacks.JSMA(model, theta=theta, gamma=gamma)
    atk.set_mode_targeted_by_function(lambda inputs, labels: targets, quiet=True)
    default = torch.get_default_dtype()
    torch.set_default_dtype(x.dtype)
    try:
        return atk(x, torch.zeros(len(x), dtype=torch.long))
    finally:
        torch.set_default_dtype(default)


class Mirror(nn.Module):
    """x ↦ model(1 − x): increasing features here is decreasing them for ``model``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(1 - x)


def changed(x_adv, x):
    return (x_adv != x).flatten(1).sum(1)


@pytest.mark.parametrize(
    "channels, theta, gamma, dtype",
    [
        (1, 1.0, 0.1, torch.float32),
        (1, 0.5, 0.3, torch.float32),
        (1, 1.0, 0.5, torch.float32),
        (1, 1.0, 0.1, torch.float64),
        (3, 1.0, 0.1, torch.float32),
        (3, 0.5, 0.3, torch.float64),
    ],
)
def test_matches_torchattacks_to_the_pixel(channels, theta, gamma, dtype):
    net = conv_net(channels, dtype=dtype)
    x, y = images(channels=channels, dtype=dtype)
    atk = harness.create_attack("jsma", theta=theta, gamma=gamma)
    ours = atk(net, x, y)
    assert ours.dtype == dtype
    assert torch.equal(ours, reference(net, x, atk.last_targets, theta, gamma))
    assert changed(ours, x).gt(2).any()  # not a trivial agreement


@pytest.mark.parametrize("chunk", [1, 7 * 12, 1 << 24])
def test_pair_choice_matches_torchattacks_saliency_map_with_ties(chunk, monkeypatch):
    """Small-integer Jacobians: many exactly tied pairs, so the tie-breaking is checked too; a
    θ < 0 map equals torchattacks' θ > 0 map of the negated Jacobian (its own one is broken)."""
    monkeypatch.setattr(jsma, "PAIR_CHUNK", chunk)
    g = torch.Generator().manual_seed(0)
    n, nf = 12, 10
    jac = torch.randint(-3, 4, (n, CLASSES, nf), generator=g).float()
    targets = torch.randint(0, CLASSES, (n,), generator=g)
    domain = torch.rand(n, nf, generator=g) < 0.7
    domain[0] = False  # no admissible pair: (0, 0)
    alpha = jac[torch.arange(n), targets]
    beta = jac.sum(1) - alpha
    ta = torchattacks.JSMA(conv_net(), theta=1.0, gamma=0.1)
    for increasing, sign in ((True, 1.0), (False, -1.0)):
        p, q = best_pairs(alpha, beta, domain, increasing)
        for i in range(n):
            ref = ta.saliency_map(sign * jac[i], targets[i : i + 1], True, domain[i], nf)
            assert (p[i].item(), q[i].item()) == (ref[0].item(), ref[1].item())
    assert (p[0].item(), q[0].item()) == (0, 0)


def test_chunked_pair_map_matches_torchattacks(monkeypatch):
    monkeypatch.setattr(jsma, "PAIR_CHUNK", 5 * 108)  # 5 rows per chunk at 1 image, fewer at 8
    net = conv_net(3)
    x, y = images(channels=3)
    atk = JSMA(theta=1.0, gamma=0.3)
    ours = atk(net, x, y)
    assert torch.equal(ours, reference(net, x, atk.last_targets, 1.0, 0.3))


def test_no_admissible_pair_moves_feature_zero_like_torchattacks():
    """The target logit falls with every feature: the saliency map is all zero, its arg max is
    the pair (0, 0), so feature 0 alone moves by 2θ per step (torchattacks and cleverhans)."""
    lin = nn.Sequential(nn.Flatten(), nn.Linear(16, 3, bias=False))
    with torch.no_grad():
        lin[1].weight.copy_(torch.tensor([[-1.0] * 16, [0.5] * 16, [0.25] * 16]))
    x = torch.full((2, 1, 4, 4), 0.25)
    targets = torch.tensor([0, 0])
    atk = JSMA(theta=0.25, gamma=0.5)
    ours = atk.attack_targets(lin, x, targets)
    assert torch.equal(ours, reference(lin, x, targets, 0.25, 0.5))
    expected = x.clone().flatten(1)
    expected[:, 0] = 1.0  # 0.25 + 2·0.25 after step 1, clipped at 1 after step 2
    assert torch.equal(ours.flatten(1), expected)


@pytest.mark.parametrize("channels, theta, gamma", [(1, -1.0, 0.1), (3, -0.5, 0.3)])
def test_negative_theta_is_the_mirror_of_torchattacks_positive(channels, theta, gamma):
    """θ < 0 here is torchattacks' θ > 0 on 1 − x (Papernot's decreasing map); torchattacks' own
    θ < 0 scores pairs by α·|β| < 0 and so only ever moves feature 0."""
    net = conv_net(channels)
    x, y = images(channels=channels)
    atk = harness.create_attack("jsma", theta=theta, gamma=gamma)
    ours = atk(net, x, y)
    targets = atk.last_targets
    mirrored = 1 - reference(Mirror(net).eval(), 1 - x, targets, -theta, gamma)
    assert torch.equal(ours, mirrored)
    assert (ours <= x).all() and changed(ours, x).gt(2).any()
    theirs = reference(net, x, targets, theta, gamma)
    assert not (theirs != x).flatten(1)[:, 1:].any()


def test_targets_seeded_wrong_and_uniform():
    y = torch.arange(400) % CLASSES
    a = JSMA(seed=3).draw_targets(y, CLASSES)
    assert torch.equal(a, JSMA(seed=3).draw_targets(y, CLASSES))
    assert not torch.equal(a, JSMA(seed=4).draw_targets(y, CLASSES))
    assert (a != y).all() and a.min() >= 0 and a.max() < CLASSES
    assert set(((a - y) % CLASSES).tolist()) == {1, 2, 3, 4}  # every wrong class is drawn

    net = conv_net()
    x, y = images()
    state = torch.get_rng_state()
    atk = harness.create_attack("jsma", seed=7)
    atk(net, x, y)
    assert torch.equal(state, torch.get_rng_state())
    assert torch.equal(atk.last_targets, JSMA(seed=7).draw_targets(y, CLASSES))
    assert (atk.last_targets != y).all()


def test_batch_independent():
    net = conv_net(3)
    x, y = images(channels=3)
    atk = JSMA(theta=1.0, gamma=0.3)
    batch = atk(net, x, y)
    targets = atk.last_targets
    single = torch.cat(
        [atk.attack_targets(net, x[i : i + 1], targets[i : i + 1]) for i in range(8)]
    )
    assert torch.equal(batch, single)


@pytest.mark.parametrize("gamma", [0.05, 0.1, 0.25, 0.5])
def test_budget_and_box(gamma):
    net = conv_net(1, size=8)
    x, y = images(16, size=8)
    n = x[0].numel()
    atk = JSMA(gamma=gamma)
    x_adv = atk(net, x, y)
    budget = 2 * math.ceil(n * gamma / 2)  # torchattacks' ceil: < gamma·n + 2
    counts = changed(x_adv, x)
    assert counts.max() <= budget < gamma * n + 2
    assert x_adv.min() >= 0 and x_adv.max() <= 1 and not x_adv.requires_grad
    if gamma < 0.5:  # the budget is reached (at gamma = 0.1: 8 features of 64, not floor's 6)
        assert counts.max() == budget
    else:  # with half the features the targets are mostly reached
        with torch.no_grad():
            assert (net(x_adv).argmax(1) == atk.last_targets).float().mean() >= 0.75


def test_modes_grads_input_and_no_grad_context():
    net = conv_net(3)
    net.train()
    net[1].eval()
    x, y = images(channels=3)
    x0 = x.clone()
    with torch.no_grad():
        x_adv = JSMA()(net, x, y)
    assert net.training and net[0].training and not net[1].training
    assert all(p.grad is None for p in net.parameters())
    assert torch.equal(x, x0) and not torch.equal(x_adv, x)
    empty = JSMA()(net, x[:0], y[:0])
    assert empty.shape == (0, 3, 6, 6)


def test_registered_and_params():
    assert "jsma" in harness.list_attacks()
    atk = harness.create_attack("jsma", theta=0.5, gamma=0.2, seed=1)
    net = conv_net()
    atk(net, *images())
    assert atk.params() == {
        "name": "jsma",
        "seed": 1,
        "theta": 0.5,
        "gamma": 0.2,
        "target": "random",
        "rules": "torchattacks",
    }


@pytest.mark.parametrize(
    "bad",
    [{"theta": 0}, {"theta": 2}, {"gamma": 0}, {"gamma": 1.5}, {"target": "next"}, {"eps": 1}],
)
def test_bad_params(bad):
    with pytest.raises(UserError):
        harness.create_attack("jsma", **bad)
