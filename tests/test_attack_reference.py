"""Our FGSM and PGD against torchattacks (the reference implementations) on the same tiny model,
inputs and random start: the same adversarial examples, hence exactly the same accuracy."""

from __future__ import annotations

import pytest
import torch
import torchattacks
from torch import nn

import harness

EPS = 8 / 255


@pytest.fixture(scope="module")
def setup():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Flatten(), nn.Linear(192, 32), nn.ReLU(), nn.Linear(32, 4))
        with torch.no_grad():
            model[1].weight.mul_(4)  # inputs matter: predictions vary and 8/255 can flip them
        model.eval()
        x = torch.rand(64, 3, 8, 8)
        with torch.no_grad():
            y = model(x).argmax(1)  # every sample clean-correct: the attacks have work to do
    return model, x, y


def acc(model, x, y) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def test_fgsm_equals_torchattacks(setup):
    model, x, y = setup
    ours = harness.create_attack("fgsm", eps=EPS)(model, x, y)
    ref = torchattacks.FGSM(model, eps=EPS)(x, y)
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-6)
    assert acc(model, ours, y) == acc(model, ref, y) < acc(model, x, y)


def test_pgd_without_random_start_equals_torchattacks(setup):
    model, x, y = setup
    ours = harness.create_attack("pgd", eps=EPS, step_size=EPS / 4, steps=10, init="none")
    ref = torchattacks.PGD(model, eps=EPS, alpha=EPS / 4, steps=10, random_start=False)
    a, b = ours(model, x, y), ref(x, y)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    assert acc(model, a, y) == acc(model, b, y)


def test_pgd_with_the_same_uniform_start_equals_torchattacks(setup):
    """torchattacks draws its start from the global RNG; ours from its own generator with the
    same seed: the same uniform numbers, so the same start and the same accuracy."""
    model, x, y = setup
    ours = harness.create_attack("pgd", eps=EPS, step_size=EPS / 4, steps=10, seed=1234)
    a = ours(model, x, y)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1234)
        b = torchattacks.PGD(model, eps=EPS, alpha=EPS / 4, steps=10, random_start=True)(x, y)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    assert acc(model, a, y) == acc(model, b, y) < acc(model, x, y)
