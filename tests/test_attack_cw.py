"""CW2: against an independent float64 re-implementation of advertorch's algorithm, the margin
on negative logits, clean input when not fooled, smallest L2, the analytic boundary of a linear
model, modes, gradients, RNG, registry."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import harness
from harness.attacks.cw import CW2, cw_hinge, cw_success
from harness.utils.errors import UserError

CLASSES = 4


pytestmark = pytest.mark.usefixtures("one_thread")


def conv_net(seed: int = 0, shift: float = 0.0) -> nn.Module:
    """A tiny conv net in float64; ``shift`` is subtracted from every logit."""
    g = torch.Generator().manual_seed(seed)
    net = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(64, CLASSES)
    ).double()
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(0.6 * torch.randn(p.shape, generator=g, dtype=torch.float64))
        net[3].bias.sub_(shift)
    return net.eval()


def batch(net: nn.Module, seed: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """8 inputs of 3x4x4 (two at the box's faces); labels = predictions, except every third one
    is wrong from the start."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(8, 3, 4, 4, generator=g, dtype=torch.float64)
    x[0], x[1] = 0.0, 1.0
    with torch.no_grad():
        y = net(x).argmax(1)
    y[::3] = (y[::3] + 1) % CLASSES
    return x, y


def reference_cw(
    model,
    x,
    y,
    *,
    c=0.1,
    confidence=0.0,
    steps=100,
    lr=0.01,
    binary_search_steps=1,
    abort_early=True,
    naive_margin=False,
):
    """advertorch's CarliniWagnerL2Attack written out plainly: float64, a hand-written Adam,
    per-sample Python bookkeeping. Returns (x_adv, fooled, last iterate, its success, the L2² of
    every successful iterate per sample)."""
    x = x.double()
    n = len(x)
    labels = y.tolist()
    w0 = torch.atanh((x.clamp(0, 1) * 2 - 1) * 0.999999)
    x0 = (torch.tanh(w0) + 1) / 2
    consts = [float(c)] * n
    lows = [0.0] * n
    ups = [1e10] * n
    best_l2 = [1e10] * n
    best = x.clone()
    last, last_ok = None, None
    all_l2: list[list[float]] = [[] for _ in range(n)]
    for outer in range(binary_search_steps):
        if binary_search_steps >= 10 and outer == binary_search_steps - 1:
            consts = list(ups)
        delta = torch.zeros_like(x)
        m1 = torch.zeros_like(x)
        m2 = torch.zeros_like(x)
        prev = 1e6
        found = [False] * n
        cur_l2 = [1e10] * n
        for t in range(1, steps + 1):
            d = delta.clone().requires_grad_(True)
            adv = (torch.tanh(w0 + d) + 1) / 2
            logits = model(adv)
            l2 = ((adv - x0) ** 2).sum(dim=(1, 2, 3))
            hinge = []
            for i in range(n):
                z = logits[i]
                if naive_margin:
                    mask = torch.ones(z.shape[0], dtype=torch.float64)
                    mask[labels[i]] = 0.0
                    other = (mask * z).max()
                else:
                    other = torch.cat([z[: labels[i]], z[labels[i] + 1 :]]).max()
                hinge.append(torch.clamp(z[labels[i]] - other + confidence, min=0.0))
            loss = l2.sum() + sum(consts[i] * hinge[i] for i in range(n))
            (grad,) = torch.autograd.grad(loss, d)
            m1 = 0.9 * m1 + 0.1 * grad
            m2 = 0.999 * m2 + 0.001 * grad * grad
            m_hat = m1 / (1 - 0.9**t)
            v_hat = m2 / (1 - 0.999**t)
            delta = delta - lr * m_hat / (v_hat.sqrt() + 1e-8)
            if abort_early and (t - 1) % max(steps // 10, 1) == 0:
                if loss.item() > prev * 0.999999:
                    break
                prev = loss.item()
            adv, logits, l2 = adv.detach(), logits.detach(), l2.detach()
            last, last_ok = adv, []
            for i in range(n):
                z = logits[i].clone()
                z[labels[i]] += confidence
                ok = int(z.argmax()) != labels[i]
                last_ok.append(ok)
                if not ok:
                    continue
                all_l2[i].append(float(l2[i]))
                if l2[i] < cur_l2[i]:
                    cur_l2[i] = float(l2[i])
                    found[i] = int(logits[i].argmax()) != labels[i]
                if l2[i] < best_l2[i]:
                    best_l2[i] = float(l2[i])
                    best[i] = adv[i]
        for i in range(n):
            if found[i]:
                ups[i] = min(ups[i], consts[i])
                if ups[i] < 1e9:
                    consts[i] = (lows[i] + ups[i]) / 2
            else:
                lows[i] = max(lows[i], consts[i])
                consts[i] = (lows[i] + ups[i]) / 2 if ups[i] < 1e9 else consts[i] * 10
    fooled = torch.tensor([v < 1e10 for v in best_l2])
    return best, fooled, last, torch.tensor(last_ok), all_l2


def fooled_by(net, x_adv, y):
    with torch.no_grad():
        return net(x_adv).argmax(1) != y


def succeeds(net, x_adv, y, confidence=0.0):
    """CW's success: the argmax with ``confidence`` added to the true logit is another class."""
    with torch.no_grad():
        logits = net(x_adv)
    logits[torch.arange(len(y)), y] += confidence
    return logits.argmax(1) != y


CONFIGS = {
    "default": {},
    "binary_search": {"binary_search_steps": 3, "c": 0.01},
    "binary_search_repeat": {"binary_search_steps": 10, "steps": 10},
    "confidence": {"confidence": 0.5, "c": 1.0},
    "no_abort": {"abort_early": False, "steps": 60},
}


@pytest.mark.parametrize("shift", [0.0, 50.0], ids=["logits", "negative_logits"])
@pytest.mark.parametrize("config", list(CONFIGS))
def test_matches_independent_reference(config, shift):
    net = conv_net(shift=shift)
    x, y = batch(net)
    kwargs = {"steps": 100, **CONFIGS[config]}
    x_adv = harness.create_attack("cw2", **kwargs)(net, x, y)
    ref, ref_fooled, *_ = reference_cw(net, x, y, **kwargs)
    torch.testing.assert_close(x_adv, ref, atol=1e-5, rtol=0)
    confidence = kwargs.get("confidence", 0.0)
    assert torch.equal(succeeds(net, x_adv, y, confidence), ref_fooled)
    # not a trivial agreement: the optimisation fools some samples and fails on others
    assert (ref_fooled & ~fooled_by(net, x, y)).any() and not ref_fooled.all()


def test_margin_with_negative_logits():
    logits = torch.tensor([[-5.0, -1.0, -3.0], [-5.0, -1.0, -3.0]])
    onehot = torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    # true class 1: Z_y − max_{j≠y} Z_j = −1 − (−3) = 2; zeroing alone would give max(−1 − 0, 0)
    assert cw_hinge(logits, onehot, 0.0).tolist() == [2.0, 0.0]
    assert cw_hinge(logits, onehot, 0.5).tolist() == [2.5, 0.0]
    y = torch.tensor([1, 0])
    assert cw_success(logits, y, 0.0).tolist() == [False, True]
    assert cw_success(torch.tensor([[0.0, 1.0]]), torch.tensor([0]), 0.5).tolist() == [True]
    assert cw_success(torch.tensor([[0.0, 1.0]]), torch.tensor([0]), 1.5).tolist() == [False]


def test_negative_logits_attack_succeeds_where_a_naive_margin_fails():
    net = conv_net(shift=50.0)
    x, y = batch(net)
    with torch.no_grad():
        assert net(x).max() < 0  # every logit of every sample is negative
    wrong_from_start = fooled_by(net, x, y)
    x_adv = harness.create_attack("cw2", steps=100)(net, x, y)
    fooled = fooled_by(net, x_adv, y)
    ref, ref_fooled, *_ = reference_cw(net, x, y, steps=100)
    torch.testing.assert_close(x_adv, ref, atol=1e-5, rtol=0)
    assert (fooled & ~wrong_from_start).any()  # the optimisation itself fools some samples
    # a (1 − onehot)·logits margin sees 0 as the best other logit: no adversarial gradient
    naive, naive_fooled, *_ = reference_cw(net, x, y, steps=100, naive_margin=True)
    assert torch.equal(naive_fooled, wrong_from_start)
    assert int(fooled.sum()) > int(naive_fooled.sum())
    assert not torch.allclose(naive, x_adv, atol=1e-3)
    # the margin does not see a common shift of the logits: same answer as the unshifted net
    unshifted = harness.create_attack("cw2", steps=100)(conv_net(), x, y)
    torch.testing.assert_close(x_adv, unshifted, atol=1e-6, rtol=0)


def test_clean_input_returned_when_not_fooled():
    net = conv_net(seed=2)
    x, y = batch(net)
    x_adv = harness.create_attack("cw2", c=1e-3, steps=20)(net, x, y)
    fooled = fooled_by(net, x_adv, y)
    assert (~fooled).sum() >= 3
    assert torch.equal(x_adv[~fooled], x[~fooled])  # exactly the clean input
    # samples wrong from the start are returned at (a 1e-6 shrink of) the clean input
    start = fooled_by(net, x, y)
    assert start.any()
    assert (x_adv[start] - x[start]).abs().max() < 1e-6
    assert harness.create_attack("cw2", steps=0)(net, x, y).equal(x)


def test_smallest_l2_over_iterates():
    net = conv_net()
    x, y = batch(net)
    x_adv = harness.create_attack("cw2", steps=80, abort_early=False, c=1.0)(net, x, y)
    _, ref_fooled, last, last_ok, all_l2 = reference_cw(
        net, x, y, steps=80, abort_early=False, c=1.0
    )
    x0 = 0.5 + (x - 0.5) * 0.999999  # the point advertorch measures distances from
    l2 = ((x_adv - x0) ** 2).sum(dim=(1, 2, 3))
    l2_last = ((last - x0) ** 2).sum(dim=(1, 2, 3))
    both = ref_fooled & last_ok
    assert both.sum() >= 3
    assert (l2[both] <= l2_last[both] + 1e-12).all()
    assert (l2[both] < l2_last[both] - 1e-6).any()  # the last iterate is not always the best
    for i in torch.nonzero(ref_fooled).flatten().tolist():
        assert math.isclose(float(l2[i]), min(all_l2[i]), rel_tol=1e-6, abs_tol=1e-12)


def test_linear_two_class_lands_on_the_boundary():
    """Logits W·x + b: the closest point of the other class is at distance f(x)/‖Δw‖ with
    f = margin; CW's answer must be at least that far (it succeeds) and not much farther."""
    g = torch.Generator().manual_seed(5)
    lin = nn.Sequential(nn.Flatten(), nn.Linear(48, 2)).double().eval()
    with torch.no_grad():
        lin[1].weight.copy_(torch.randn(2, 48, generator=g, dtype=torch.float64))
        lin[1].bias.zero_()
    x = 0.4 + 0.2 * torch.rand(8, 3, 4, 4, generator=g, dtype=torch.float64)
    w = lin[1].weight.detach()
    with torch.no_grad():
        y = lin(x).argmax(1)
    dw = torch.stack([w[k] - w[1 - k] for k in y.tolist()])  # true minus other
    norm = dw.norm(dim=1)
    # move every input to distance 0.1 from the boundary, on its own side
    f = (dw * x.flatten(1)).sum(1)
    x = (x.flatten(1) - ((f - 0.1 * norm) / norm**2)[:, None] * dw).view_as(x)
    assert x.min() >= 0 and x.max() <= 1
    clean = ((dw * x.flatten(1)).sum(1)) / norm
    torch.testing.assert_close(clean, torch.full_like(clean, 0.1))
    x_adv = harness.create_attack("cw2", steps=300)(lin, x, y)
    assert fooled_by(lin, x_adv, y).all()
    moved = (x_adv - x).flatten(1).norm(dim=1)
    to_boundary = ((dw * x_adv.flatten(1)).sum(1)) / norm  # signed; negative: other class
    assert (to_boundary <= 0).all()
    assert (moved >= clean - 1e-6).all()
    assert (moved <= 1.05 * clean).all()
    assert (to_boundary.abs() <= 0.02 * clean).all()
    # and the step is (nearly) along −Δw, the direct route to the boundary
    cos = ((x - x_adv).flatten(1) * dw).sum(1) / (moved * norm)
    assert (cos > 0.98).all()


def test_modes_grads_rng_box_and_dtype():
    net = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(64, CLASSES),
    )
    net.train()
    net[1].eval()  # a frozen BN inside a training model must stay frozen
    g = torch.Generator().manual_seed(0)
    x = torch.rand(6, 3, 4, 4, generator=g)
    y = torch.randint(0, CLASSES, (6,), generator=g)
    state = torch.get_rng_state()
    x_adv = harness.create_attack("cw2", steps=15)(net, x, y)
    assert torch.equal(state, torch.get_rng_state())
    assert net.training and net[0].training and not net[1].training and net[4].training
    assert all(p.grad is None for p in net.parameters())
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype and not x_adv.requires_grad
    assert x_adv.min() >= 0 and x_adv.max() <= 1


def test_registry_and_params():
    assert "cw2" in harness.list_attacks()
    attack = harness.create_attack("cw2", steps=10)
    assert isinstance(attack, CW2) and attack.steps == 10
    params = attack.params()
    assert params["name"] == "cw2"
    assert params["c"] == 0.1 and params["confidence"] == 0.0 and params["lr"] == 0.01
    assert params["steps"] == 10 and params["binary_search_steps"] == 1
    assert params["abort_early"] is True
    default = harness.create_attack("cw2")
    assert default.steps == 1000 and default.c == 0.1
    with pytest.raises(UserError, match="valid"):
        harness.create_attack("cw2", eps=0.5)
    with pytest.raises(UserError):
        harness.create_attack("cw2", binary_search_steps=0)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    net = conv_net()
    x, y = batch(net)
    attack = harness.create_attack("cw2", steps=50, abort_early=False)
    cpu = attack(net, x, y)
    gpu = attack(net.cuda(), x.cuda(), y.cuda())
    assert gpu.device.type == "cuda"
    torch.testing.assert_close(gpu.cpu(), cpu, atol=1e-6, rtol=0)
