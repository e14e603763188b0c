"""AutoAttack adapter: the same numbers as pyautoattack itself, RNG and modes left alone, a quiet
library, its quirks evened out, and the fallback to fra31's ``autoattack`` API."""

from __future__ import annotations

import random
import sys
import types

import numpy as np
import pyautoattack
import pytest
import torch
from torch import nn

import harness
from harness.attacks.autoattack import MISSING, AutoAttack
from harness.utils.errors import UserError

EPS = 8 / 255
FAST = {"n_iter": 10, "n_target_classes": 3, "n_queries": 100}  # standard, cut down


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_net(classes: int = 10, seed: int = 0) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = nn.Sequential(
            nn.Conv2d(3, 4, 3, padding=1),
            nn.BatchNorm2d(4),
            nn.ReLU(),
            nn.AvgPool2d(2),
            nn.Flatten(),
            nn.Linear(64, classes),
        )
    with torch.no_grad():  # running statistics that differ from what a batch would give
        net[1].running_mean.copy_(torch.linspace(-0.1, 0.1, 4))
        net[1].running_var.copy_(torch.linspace(0.8, 1.2, 4))
    return net.eval()


def batch(net: nn.Module, n: int = 8):
    """Predicted labels, two of them wrong: clean accuracy 6/8, some points robust at 2/255."""
    x = torch.rand(n, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = net(x).argmax(1)
    y[:2] = (y[:2] + 1) % net[-1].out_features
    return x, y


def accuracy(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return (net(x).argmax(1) == y).float().mean().item()


def direct(net, x, y, *, eps, version="standard", attacks=None, seed=0, **fast):
    """pyautoattack's own API, the overrides set by hand as its attributes."""
    aa = pyautoattack.AutoAttack(
        net, attacks=attacks, device="cpu", eps=eps, norm="Linf", seed=seed, version=version
    )
    if "n_iter" in fast:
        for apgd in (aa.apgd, aa.apgd_targeted):
            n = fast["n_iter"]
            apgd.n_iter = apgd.n_iter_orig = n
            apgd.n_iter_2, apgd.n_iter_min = max(int(0.22 * n), 1), max(int(0.06 * n), 1)
            apgd.size_decr = max(int(0.03 * n), 1)
        aa.fab.n_iter = fast["n_iter"]
    if "n_target_classes" in fast:
        aa.apgd_targeted.n_target_classes = aa.fab.n_target_classes = fast["n_target_classes"]
    if "n_queries" in fast:
        aa.square.n_queries = fast["n_queries"]
    x_adv, _ = aa.run_standard_evaluation(x, y, batch_size=len(x))
    return x_adv


@pytest.mark.parametrize(
    "eps, kwargs",
    [
        (2 / 255, {"version": "standard", **FAST}),
        (2 / 255, {"version": "custom", "attacks": ["apgd-ce", "apgd-t"], "n_iter": 20}),
        (16 / 255, {"version": "standard"}),  # the library's settings; APGD-CE breaks all
    ],
)
def test_same_as_pyautoattack_directly(eps, kwargs):
    net = tiny_net()
    x, y = batch(net)
    attack = harness.create_attack("autoattack", eps=eps, seed=3, **kwargs)
    ours = attack(net, x, y)
    theirs = direct(net, x, y, eps=eps, seed=3, **kwargs)
    assert attack.backend == "pyautoattack"
    assert torch.equal(ours, theirs)
    assert accuracy(net, ours, y) == accuracy(net, theirs, y)
    if eps < EPS:  # cases that discriminate: some points broken, some robust
        assert 0 < accuracy(net, ours, y) < accuracy(net, x, y)
    # reproducible: the seed is the library's, so a second call gives the same tensor
    assert torch.equal(attack(net, x, y), ours)


def test_caller_rng_untouched_while_the_library_reseeds_it():
    net = tiny_net()
    x, y = batch(net)
    torch.manual_seed(1234)
    np.random.seed(1234)
    before = torch.get_rng_state(), np.random.get_state(), random.getstate()
    harness.create_attack("autoattack", eps=2 / 255, **FAST)(net, x, y)
    assert torch.equal(torch.get_rng_state(), before[0])
    np_after = np.random.get_state()
    assert np_after[0] == before[1][0] and np.array_equal(np_after[1], before[1][1])
    assert np_after[2:] == before[1][2:]
    assert random.getstate() == before[2]

    direct(net, x, y, eps=2 / 255, **FAST)  # the library itself calls torch.manual_seed
    assert not torch.equal(torch.get_rng_state(), before[0])


def test_inside_ball_and_box_modes_and_buffers_kept():
    net = tiny_net().train()
    net[2].eval()  # a submodule in its own mode stays so
    x, y = batch(net)
    x[:2] = 0.0  # the [0,1] box at both ends
    x[2:4] = 1.0
    buffers = {k: v.clone() for k, v in net.state_dict().items()}
    attack = harness.create_attack("autoattack", eps=EPS, **FAST)
    x_adv = attack(net, x, y)
    assert [m.training for m in net.modules()] == [True, True, True, False, True, True, True]
    assert all(torch.equal(v, buffers[k]) for k, v in net.state_dict().items())
    assert all(p.grad is None and p.requires_grad for p in net.parameters())
    assert not x_adv.requires_grad and x_adv.shape == x.shape and x_adv.dtype == x.dtype
    assert (x_adv - x).abs().max() <= EPS + 1e-6
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    net.eval()
    robust, clean = accuracy(net, x_adv, y), accuracy(net, x, y)
    assert robust <= clean
    with torch.no_grad():
        survived = net(x_adv).argmax(1) == y
    assert torch.equal(x_adv[survived], x[survived])  # robust points come back unchanged


def test_fab_would_fill_parameter_grads_the_adapter_does_not():
    net = tiny_net()
    x, y = batch(net)
    direct(net, x, y, eps=2 / 255, version="custom", attacks=["fab-t"], n_iter=5)
    assert any(p.grad is not None for p in net.parameters())
    net = tiny_net()
    harness.create_attack("autoattack", eps=2 / 255, version="custom", attacks=["fab-t"], n_iter=5)(
        net, x, y
    )
    assert all(p.grad is None and p.requires_grad for p in net.parameters())


def test_quiet_flags_become_warnings_and_trace_function_kept(capfd):
    probs = nn.Sequential(tiny_net(), nn.Softmax(dim=1)).eval()  # probabilities, not logits
    x, y = batch(probs[0])

    def tracer(frame, event, arg):  # check_dynamic ends with sys.settrace(None)
        return None

    previous = sys.gettrace()
    sys.settrace(tracer)
    try:
        attack = harness.create_attack("autoattack", eps=EPS, **FAST)
        with pytest.warns(UserWarning, match="probability distribution"):
            attack(probs, x, y)
        assert sys.gettrace() is tracer
    finally:
        sys.settrace(previous)
    assert any("logits" in flag for flag in attack.flags)
    out, err = capfd.readouterr()
    assert out == "" and err == ""


def test_fewer_classes_than_targets():
    """The library indexes past the logits with 9 targets on 5 classes; the adapter caps them."""
    net = tiny_net(classes=5)
    x, y = batch(net)
    with pytest.raises(IndexError):
        direct(net, x, y, eps=2 / 255, version="custom", attacks=["apgd-t"], n_iter=5)
    attack = harness.create_attack(
        "autoattack", eps=2 / 255, version="custom", attacks=["apgd-t", "fab-t"], n_iter=5
    )
    x_adv = attack(net, x, y)
    assert (x_adv - x).abs().max() <= 2 / 255 + 1e-6
    with pytest.raises(UserError, match="at least 4 classes"):
        harness.create_attack("autoattack", version="custom", attacks=["apgd-t"])(
            tiny_net(classes=3), x, y % 3
        )


def test_empty_batch():
    x = torch.zeros(0, 3, 8, 8)
    out = harness.create_attack("autoattack")(tiny_net(), x, torch.zeros(0, dtype=torch.long))
    assert out.shape == x.shape


def test_params_and_registry():
    assert "autoattack" in harness.list_attacks()
    params = harness.create_attack("autoattack").params()
    assert params == {
        "name": "autoattack",
        "eps": 8 / 255,
        "norm": "Linf",
        "version": "standard",
        "attacks": ["apgd-ce", "apgd-t", "fab-t", "square"],
        "seed": 0,
        "n_iter": None,
        "n_restarts": None,
        "n_target_classes": None,
        "n_queries": None,
        "backend": "pyautoattack",
        "library_version": pyautoattack.__version__,
    }
    custom = harness.create_attack("autoattack", version="custom", attacks=["square"], norm="L2")
    assert custom.params()["attacks"] == ["square"] and custom.params()["norm"] == "L2"
    assert harness.create_attack("autoattack", norm="L1", eps=12).eps == 12.0  # L1 radii > 1


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"version": "custom"}, "needs attacks"),
        ({"version": "custom", "attacks": ["apgd-x"]}, "unknown AutoAttack attack"),
        ({"version": "custom", "attacks": ["square", "square"]}, "repeat"),
        ({"attacks": ["apgd-ce"]}, "only with"),
        ({"version": "fast"}, "unknown AutoAttack version"),
        ({"norm": "L3"}, "unknown AutoAttack norm"),
        ({"norm": "linf"}, "valid: Linf, L2, L1"),
        ({"backend": "torchattacks"}, "unknown AutoAttack backend"),
        ({"eps": 8}, "8/255"),
        ({"n_iter": 0}, ">= 1"),
        ({"bogus": 1}, "valid"),
    ],
)
def test_user_errors(kwargs, match):
    with pytest.raises(UserError, match=match):
        harness.create_attack("autoattack", **kwargs)


# -- fallback to fra31/auto-attack's API -------------------------------------------------------


class FakeOriginal:
    """fra31's wrapper signature; records how it is called, and behaves like it: prints,
    reseeds every global RNG, returns ``x_adv`` alone."""

    calls: list = []

    def __init__(
        self,
        model,
        norm="Linf",
        eps=0.3,
        seed=None,
        verbose=True,
        attacks_to_run=[],  # noqa: B006 (the original's signature)
        version="standard",
        is_tf_model=False,
        device="cuda",
        log_path=None,
    ):
        self.model = model
        self.init = {
            "norm": norm,
            "eps": eps,
            "seed": seed,
            "verbose": verbose,
            "attacks_to_run": attacks_to_run,
            "version": version,
            "device": device,
        }
        self.attacks_to_run = attacks_to_run
        if version == "standard":
            self.attacks_to_run = ["apgd-ce", "apgd-t", "fab-t", "square"]
        sub = types.SimpleNamespace
        self.apgd = sub(n_restarts=1)
        self.apgd_targeted = sub(n_restarts=1, n_target_classes=9)
        self.fab = sub(n_restarts=1, n_target_classes=9)
        self.square = sub(n_restarts=1, n_queries=5000)

    def run_standard_evaluation(self, x_orig, y_orig, bs=250, return_labels=False):
        FakeOriginal.calls.append(
            {
                "init": self.init,
                "bs": bs,
                "return_labels": return_labels,
                "training": [m.training for m in self.model.modules()],
                "targets": self.apgd_targeted.n_target_classes,
            }
        )
        print("using standard version including apgd-ce")
        print("Warning: it seems to be a randomized defense!")
        torch.manual_seed(0)
        np.random.seed(0)
        random.seed(0)
        return (x_orig + 0.5 * self.init["eps"]).clamp(0, 1)


@pytest.fixture
def fake_autoattack(monkeypatch):
    module = types.ModuleType("autoattack")
    module.AutoAttack = FakeOriginal
    FakeOriginal.calls = []
    monkeypatch.setitem(sys.modules, "pyautoattack", None)  # import pyautoattack → ImportError
    monkeypatch.setitem(sys.modules, "autoattack", module)
    return module


def test_fallback_to_the_original_api(fake_autoattack, capfd):
    net = tiny_net().train()
    x, y = batch(net)
    attack = harness.create_attack("autoattack", eps=EPS, seed=5, n_target_classes=4)
    assert attack.backend == "autoattack"
    assert attack.params()["backend"] == "autoattack"
    torch.manual_seed(99)
    np.random.seed(99)
    before = torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate()
    with pytest.warns(UserWarning, match="randomized defense"):
        x_adv = attack(net, x, y)
    assert torch.equal(x_adv, (x + EPS / 2).clamp(0, 1))
    (call,) = FakeOriginal.calls
    assert call["init"] == {
        "norm": "Linf",
        "eps": EPS,
        "seed": 5,
        "verbose": False,
        "attacks_to_run": [],
        "version": "standard",
        "device": torch.device("cpu"),  # not the original's default "cuda"
    }
    assert call["bs"] == len(x) and call["return_labels"] is False
    assert not any(call["training"]) and net.training  # eval inside, train mode back
    assert call["targets"] == 4
    assert attack.flags == ["it seems to be a randomized defense!"]
    assert capfd.readouterr() == ("", "")
    # the fake reseeds torch, numpy and random; the adapter puts the caller's states back
    assert torch.equal(torch.get_rng_state(), before[0])
    assert np.array_equal(np.random.get_state()[1], before[1])
    assert random.getstate() == before[2]
    FakeOriginal(net).run_standard_evaluation(x, y)
    assert not np.array_equal(np.random.get_state()[1], before[1])

    custom = harness.create_attack("autoattack", version="custom", attacks=["apgd-ce"])
    with pytest.warns(UserWarning):
        custom(net, x, y)
    assert FakeOriginal.calls[-1]["init"]["attacks_to_run"] == ["apgd-ce"]


def test_forced_backends(fake_autoattack):
    assert harness.create_attack("autoattack", backend="autoattack").backend == "autoattack"
    with pytest.raises(UserError, match="backend 'pyautoattack' is not installed"):
        harness.create_attack("autoattack", backend="pyautoattack")


def test_neither_backend(monkeypatch):
    monkeypatch.setitem(sys.modules, "pyautoattack", None)
    monkeypatch.setitem(sys.modules, "autoattack", None)
    with pytest.raises(UserError) as info:
        harness.create_attack("autoattack")
    assert str(info.value) == MISSING
    assert "\n" not in MISSING


def test_alias_reports_the_real_package(monkeypatch):
    """robustbench wants ``autoattack`` as an alias of pyautoattack: its API is detected."""
    monkeypatch.setitem(sys.modules, "autoattack", pyautoattack)
    attack = AutoAttack(backend="autoattack")
    assert attack.backend == "pyautoattack" and not attack._original_api


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_same_as_direct_and_cuda_rng_kept():
    net = tiny_net().cuda()
    x, y = batch(net.cpu())
    net, x, y = net.cuda(), x.cuda(), y.cuda()
    before = [torch.cuda.get_rng_state(i) for i in range(torch.cuda.device_count())]
    cpu_before = torch.get_rng_state()
    ours = harness.create_attack("autoattack", eps=2 / 255, **FAST)(net, x, y)
    assert ours.device.type == "cuda"
    assert all(
        torch.equal(torch.cuda.get_rng_state(i), s) for i, s in enumerate(before)
    ) and torch.equal(torch.get_rng_state(), cpu_before)
    aa = pyautoattack.AutoAttack(net, device="cuda", eps=2 / 255, seed=0)
    for apgd in (aa.apgd, aa.apgd_targeted):
        apgd.n_iter = apgd.n_iter_orig = 10
        apgd.n_iter_2, apgd.n_iter_min, apgd.size_decr = 2, 1, 1
    aa.fab.n_iter = 10
    aa.apgd_targeted.n_target_classes = aa.fab.n_target_classes = 3
    aa.square.n_queries = 100
    theirs, _ = aa.run_standard_evaluation(x, y, batch_size=len(x))
    assert torch.equal(ours, theirs)
    # the model on the GPU, the batch on the CPU: the library moves batches to the model
    on_cpu = harness.create_attack("autoattack", eps=2 / 255, **FAST)(net, x.cpu(), y.cpu())
    assert on_cpu.device.type == "cpu" and torch.equal(on_cpu, ours.cpu())
