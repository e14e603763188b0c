"""FGSM / PGD: inside the eps-ball and [0,1], raise the loss, analytic optimum, modes, RNG."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import harness
from harness.attacks.pgd import cw_margin_sum, pgd_maximize
from harness.utils.errors import UserError

EPS = 8 / 255


def tiny_net(seed: int = 0) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    net = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 5),
    )
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    return net


def data(n: int = 16, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, 8, 8, generator=g)
    x[: n // 4] = 0.0  # exercise the [0,1] clipping at both ends
    x[n // 4 : n // 2] = 1.0
    return x, torch.randint(0, 5, (n,), generator=g)


@pytest.mark.parametrize("name", ["fgsm", "pgd"])
def test_inside_ball_and_box_and_loss_rises(name):
    net = tiny_net().eval()
    x, y = data()
    attack = harness.create_attack(name, eps=EPS)
    x_adv = attack(net, x, y)
    assert not x_adv.requires_grad
    assert (x_adv - x).abs().max() <= EPS + 1e-7
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    with torch.no_grad():
        assert F.cross_entropy(net(x_adv), y) > F.cross_entropy(net(x), y)


def test_linear_model_analytic_optimum():
    """Logits W·x: the CE-maximising L∞ step is eps·sign(∇) exactly; PGD reaches the corner."""
    torch.manual_seed(0)
    lin = nn.Sequential(nn.Flatten(), nn.Linear(12, 2, bias=False))
    x = torch.full((4, 3, 2, 2), 0.5)
    y = torch.tensor([0, 1, 0, 1])
    w = lin[1].weight.detach()
    # d CE / d x has the sign of (w_other − w_true) for a two-class linear model
    direction = torch.stack([(w[1 - c] - w[c]).sign() for c in y.tolist()]).view_as(x)
    expected = x + EPS * direction
    fgsm = harness.create_attack("fgsm", eps=EPS)(lin, x, y)
    torch.testing.assert_close(fgsm, expected)
    pgd = harness.create_attack("pgd", eps=EPS, step_size=EPS / 4, steps=20, init="none")(lin, x, y)
    torch.testing.assert_close(pgd, expected)


def test_attack_keeps_model_modes_and_global_rng():
    net = tiny_net().train()
    net[1].eval()  # a frozen BN inside a training model must stay frozen
    x, y = data()
    state = torch.get_rng_state()
    harness.create_attack("pgd")(net, x, y)
    assert net.training and not net[1].training and net[0].training
    assert torch.equal(state, torch.get_rng_state())


def test_pgd_seeded():
    net = tiny_net().eval()
    x, y = data()
    a = harness.create_attack("pgd", seed=3)(net, x, y)
    b = harness.create_attack("pgd", seed=3)(net, x, y)
    c = harness.create_attack("pgd", seed=4)(net, x, y)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_pgd_restarts_never_weaker():
    net = tiny_net().eval()
    x, y = data(32)
    one = harness.create_attack("pgd", steps=3, seed=0)(net, x, y)
    many = harness.create_attack("pgd", steps=3, restarts=4, seed=0)(net, x, y)
    with torch.no_grad():
        assert (net(many).argmax(1) != y).sum() >= (net(one).argmax(1) != y).sum()
    assert (many - x).abs().max() <= EPS + 1e-7


def test_cw_margin_and_custom_loss():
    logits = torch.tensor([[2.0, 1.0, -1.0], [-3.0, -1.0, -2.0]])
    y = torch.tensor([0, 2])
    assert cw_margin_sum(logits, y).item() == pytest.approx((1.0 - 2.0) + (-1.0 - -2.0))
    net = tiny_net().eval()
    x, y = data()
    custom = harness.create_attack("pgd", loss=lambda z, t: F.cross_entropy(z, t, reduction="sum"))
    assert custom.params()["loss"] == "<lambda>"
    assert (custom(net, x, y) - x).abs().max() <= EPS + 1e-7


def test_pgd_maximize_zero_steps_projects_start():
    x = torch.zeros(2, 3, 4, 4)
    out = pgd_maximize(
        lambda z: z.sum(),
        x,
        eps=EPS,
        step_size=EPS,
        steps=0,
        init="uniform",
        generator=torch.Generator().manual_seed(0),
    )
    assert out.min() >= 0 and out.max() <= EPS


@pytest.mark.parametrize("bad", [{"eps": 8}, {"step_size": 2}, {"init": "gauss"}, {"steps": -1}])
def test_bad_attack_params(bad):
    with pytest.raises(UserError):
        harness.create_attack("pgd", **bad)
