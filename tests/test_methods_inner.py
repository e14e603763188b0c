"""The inner maximisation (``perturb``) of every method, against its formula and the contract.

Tiny MLPs (48 → 6 → 4) carry identity "recorder" modules that log, per forward, their
``training`` flag, whether their input requires grad and the input itself; a BatchNorm variant
shows whether the attack ran with batch statistics. Objectives are transcribed from the spec here.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import harness

B, C, H = 8, 4, 6
SHAPE = (3, 4, 4)
D = 3 * 4 * 4
EPS = 8 / 255
ALL = ["pgd-at", "trades", "mart", "ard", "iad", "rslad", "akd", "adaad", "dgad", "gacd"]
TRAIN_MODE_ATTACK = {"ard", "iad"}  # the student keeps BN batch statistics in the attack
TEACHER_IN_ATTACK = {"adaad", "dgad"}  # gradient through the teacher at x'
NORMAL_INIT = {"pgd-at", "trades", "mart", "rslad", "adaad", "dgad"}
UNIFORM_INIT = {"ard", "iad", "akd", "gacd"}
NO_TEACHER = {"pgd-at", "trades", "mart"}
# Each method's random start in its official code: (kind, clipped to [0,1] before the first
# gradient). Normal: x + 0.001·N(0, I) (TRADES trades.py, MART mart.py, RSLAD rslad_inner_loss,
# AdaAD/DGAD adaad_inner_loss, and DGAD/AdaAD Madry_PGD, which clips it: Plain_Madry, the
# paper's PGD-AT). Uniform: x + U(−eps, eps) (ARD's and IAD's AttackPGD; AKD: no official
# code, IAD's AKD2.py; GACD: a reconstruction).
OFFICIAL_START = {
    "pgd-at": ("normal", True),
    "trades": ("normal", False),
    "mart": ("normal", False),
    "ard": ("uniform", False),
    "iad": ("uniform", False),
    "rslad": ("normal", False),
    "akd": ("uniform", False),
    "adaad": ("normal", False),
    "dgad": ("normal", False),
    "gacd": ("uniform", False),
}


pytestmark = pytest.mark.usefixtures("one_thread")


class Recorder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[bool, bool, torch.Tensor]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append((self.training, x.requires_grad, x.detach().clone()))
        return x


class Net(nn.Module):
    """rec_in -> flatten -> fc1 -> [BatchNorm1d] -> tanh -> fc2 -> rec_out."""

    def __init__(self, seed: int, scale: float = 1.0, bn: bool = False) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.rec_in = Recorder()
        self.fc1 = nn.Linear(D, H)
        self.bn = nn.BatchNorm1d(H) if bn else nn.Identity()
        self.fc2 = nn.Linear(H, C)
        self.rec_out = Recorder()
        self.num_features = H
        with torch.no_grad():
            for p in (*self.fc1.parameters(), *self.fc2.parameters()):
                p.copy_(torch.randn(p.shape, generator=g) * scale)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.bn(self.fc1(self.rec_in(x).flatten(1))))

    def forward_head(self, f: torch.Tensor) -> torch.Tensor:
        return self.rec_out(self.fc2(f))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def reset(self) -> None:
        self.rec_in.calls.clear()
        self.rec_out.calls.clear()


def nets(bn: bool = False):
    # a weak student and a stronger teacher: the teacher's share of the AdaAD gradient is large
    return Net(0, scale=0.15, bn=bn), Net(1, scale=1.0)


def interior_batch(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = 0.3 + 0.4 * torch.rand((B, *SHAPE), generator=g)
    y = torch.randint(0, C, (B,), generator=g)
    return x, y


def edge_batch(seed: int = 0):
    """Pixels at and next to 0 and 1, so the [0,1] clip is active."""
    g = torch.Generator().manual_seed(seed)
    u = torch.rand((B, *SHAPE), generator=g)
    x = torch.where(u < 0.5, 0.01 * u, 1 - 0.01 * (u - 0.5))
    x[:, 0, 0, 0] = 0.0
    x[:, 0, 0, 1] = 1.0
    y = torch.randint(0, C, (B,), generator=g)
    return x, y


def method(name: str, **hp):
    m = harness.create_method(name, **hp)
    m.reseed(0)
    return m


# -- spec objectives ------------------------------------------------------------------------------
def log_softmax(z):
    shifted = z - z.max(1, keepdim=True).values
    return shifted - torch.log(torch.exp(shifted).sum(1, keepdim=True))


def kl_sum(log_p, log_q):
    return (torch.exp(log_p) * (log_p - log_q)).sum()


def ce_sum(logits, y):
    return -log_softmax(logits)[torch.arange(len(y)), y].sum()


def objective(name, S, T, x, y, xa, detach_teacher=False):
    """The inner objective of the method's docstring (a scalar to maximise over x')."""
    if name in ("pgd-at", "mart", "ard", "iad", "akd", "gacd"):
        return ce_sum(S(xa), y)
    if name == "trades":
        return kl_sum(log_softmax(S(x)).detach(), log_softmax(S(xa)))
    if name == "rslad":
        return kl_sum(log_softmax(T(x)).detach(), log_softmax(S(xa)))
    assert name in ("adaad", "dgad")
    lt = log_softmax(T(xa))
    return kl_sum(lt.detach() if detach_teacher else lt, log_softmax(S(xa)))


def grad_sign(fn, x):
    xa = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(fn(xa), xa)
    return g.sign()


# -- the returned tensor ------------------------------------------------------------------------
@pytest.mark.parametrize("name", ALL)
def test_returns_detached_tensor_in_ball_and_box(name):
    S, T = nets()
    x, y = edge_batch()
    x0, y0 = x.clone(), y.clone()
    x_adv = method(name).perturb(S, T, x, y)
    assert torch.equal(x, x0) and torch.equal(y, y0)  # inputs untouched
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype
    assert not x_adv.requires_grad and x_adv.grad_fn is None
    assert (x_adv - x).abs().max() <= EPS + 1e-6
    assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0
    assert (x_adv != x).any()
    # the box clip is active: unclipped, some pixels would have left [0,1]
    assert ((x_adv == 0) & (x > 0)).any() or ((x_adv == 1) & (x < 1)).any()
    # no parameter gradient left behind
    assert all(p.grad is None for p in (*S.parameters(), *T.parameters()))


@pytest.mark.parametrize("name", ALL)
def test_respects_the_threat_model_hparams(name):
    S, T = nets()
    x, y = interior_batch()
    eps = 3 / 255
    x_adv = method(name, eps=eps, step_size=1 / 255, steps=5).perturb(S, T, x, y)
    d = (x_adv - x).abs()
    assert d.max() <= eps + 1e-6
    # 5 steps of 1/255 from a start at most eps away reach the eps boundary on many pixels
    assert (d > eps - 1e-6).float().mean() > 0.3


@pytest.mark.parametrize("name", ALL)
def test_random_start(name):
    """steps = 0 returns the (projected) start: normal = x + 0.001·N(0,I), uniform = U(±eps)."""
    S, T = nets()
    x, y = interior_batch()
    d = method(name, steps=0).perturb(S, T, x, y) - x
    if name in NORMAL_INIT:
        assert 0.0005 < float(d.std()) < 0.002 and float(d.abs().max()) < 0.006
    else:
        assert name in UNIFORM_INIT
        assert abs(float(d.std()) - EPS / 3**0.5) < 0.15 * EPS and float(d.abs().max()) > 0.9 * EPS


def expected_start(x: torch.Tensor, kind: str, clipped: bool, seed: int = 0) -> torch.Tensor:
    """The official start, drawn the way the official code writes it, from the generator the
    method uses (seeded with its seed): the same numbers, hence the same start."""
    g = torch.Generator().manual_seed(seed)
    if kind == "normal":
        start = x + 0.001 * torch.randn(x.shape, generator=g)
    else:
        start = x + torch.zeros_like(x).uniform_(-EPS, EPS, generator=g)
    return start.clamp(0.0, 1.0) if clipped else start


@pytest.mark.parametrize("name", ALL)
def test_random_start_is_the_official_one(name):
    """The point of the first gradient (the student's first forward on x' ≠ x): kind, scale
    and [0,1] clipping exactly as the official code; pixels at 0 and 1 show the clipping."""
    S, T = nets()
    x, y = edge_batch()
    kind, clipped = OFFICIAL_START[name]
    S.reset()
    method(name, steps=1).perturb(S, T, x, y)
    start = next(inp for _, _, inp in S.rec_in.calls if not torch.equal(inp, x))
    torch.testing.assert_close(start, expected_start(x, kind, clipped), rtol=0, atol=1e-7)
    outside = (start < 0) | (start > 1)
    assert not outside.any() if clipped else outside.any()
    other = "uniform" if kind == "normal" else "normal"
    assert not torch.allclose(start, expected_start(x, other, clipped), atol=1e-4)


@pytest.mark.parametrize(("name", "init"), [("pgd-at", "uniform"), ("trades", "uniform")])
def test_init_hparam(name, init):
    S, T = nets()
    x, y = interior_batch()
    d = method(name, steps=0, init=init).perturb(S, None, x, y) - x
    spread = float(d.abs().max())
    assert spread < 0.006 if init == "normal" else spread > 0.9 * EPS


# -- the objective --------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ALL)
def test_increases_its_objective(name):
    S, T = nets()
    x, y = interior_batch()
    x_adv = method(name).perturb(S, T, x, y)
    with torch.no_grad():
        at_adv = objective(name, S, T, x, y, x_adv)
        at_clean = objective(name, S, T, x, y, x)
        g = torch.Generator().manual_seed(5)
        corners = [
            objective(
                name, S, T, x, y, (x + EPS * torch.randint(0, 2, x.shape, generator=g) * 2 - EPS)
            )
            for _ in range(4)
        ]
    assert at_adv > at_clean
    assert at_adv > max(corners)  # better than random corners of the ball


@pytest.mark.parametrize("name", sorted(set(ALL) - {"trades"}))
def test_first_step_follows_the_spec_objective(name):
    """One step of size eps from a start near x: sign(x' − x) = sign(∇ objective(x))."""
    S, T = nets()
    x, y = interior_batch()
    m = method(name, eps=1 / 255, step_size=1 / 255, steps=1)
    moved = (m.perturb(S, T, x, y) - x).sign()

    def agree(fn):
        return float((moved == grad_sign(fn, x)).float().mean())

    assert agree(lambda xa: objective(name, S, T, x, y, xa)) > 0.95
    others = {"ce": "pgd-at", "rslad": "rslad", "adaad": "adaad"}
    for label, other in others.items():
        if objective_family(other) != objective_family(name):
            assert agree(lambda xa, o=other: objective(o, S, T, x, y, xa)) < 0.9, label
    if name in TEACHER_IN_ATTACK:
        # the gradient flows through the teacher too
        detached = agree(lambda xa: objective(name, S, T, x, y, xa, detach_teacher=True))
        assert detached < 0.9


def objective_family(name):
    if name in ("adaad", "dgad"):
        return "adaad"
    return "rslad" if name == "rslad" else "ce"


def test_trades_first_step_is_not_the_ce_direction():
    S, T = nets()
    x, y = interior_batch()
    moved = (method("trades", eps=1 / 255, steps=1).perturb(S, None, x, y) - x).sign()
    ce = grad_sign(lambda xa: ce_sum(S(xa), y), x)
    assert float((moved == ce).float().mean()) < 0.9


# -- modes ----------------------------------------------------------------------------------------
def snapshot(*models):
    return [(name, mod.training) for model in models for name, mod in model.named_modules()]


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize(
    ("s_train", "t_train"), [(True, False), (False, False), (True, True), (False, True)]
)
def test_modes_restored_and_used_inside_the_attack(name, s_train, t_train):
    S, _ = nets(bn=True)
    _, T = nets()
    S.train(s_train)
    T.train(t_train)
    S.bn.train(not s_train)  # a submodule whose flag differs from its parent's
    before = snapshot(S, T)
    S.reset()
    T.reset()
    x, y = interior_batch()
    method(name).perturb(S, T, x, y)
    assert snapshot(S, T) == before
    modes = [training for training, _, _ in S.rec_in.calls]
    assert modes, "the student was never evaluated"
    if name in TRAIN_MODE_ATTACK:
        if s_train:
            assert all(modes)
    else:
        assert not any(modes), "student BN must be in eval mode during the attack"
    if name in TEACHER_IN_ATTACK:
        assert not any(training for training, _, _ in T.rec_in.calls)
    # loss() leaves the modes too
    method(name).loss(S, T, x, x + 0.01, y)
    assert snapshot(S, T) == before


@pytest.mark.parametrize(("name", "init"), [("pgd-at", "uniform"), ("pgd-at", "normal")])
def test_pgd_at_clips_either_start(name, init):
    """MadryLab's uniform start and DGAD/AdaAD's normal one are both clipped to [0,1]."""
    S, _ = nets()
    x, y = edge_batch()
    S.reset()
    method(name, steps=1, init=init).perturb(S, None, x, y)
    start = S.rec_in.calls[0][2]
    torch.testing.assert_close(start, expected_start(x, init, True), rtol=0, atol=1e-7)


@pytest.mark.parametrize("name", ALL)
def test_batchnorm_statistics_only_in_ard_and_iad(name):
    S, T = nets(bn=True)
    S.train()
    T.eval()
    x, y = interior_batch()
    mean0 = S.bn.running_mean.clone()
    m = method(name)
    m.perturb(S, T, x, y)
    tracked = int(S.bn.num_batches_tracked)
    if name in TRAIN_MODE_ATTACK:
        # one train-mode forward per step, as the official AttackPGD loop
        assert tracked == m.steps and not torch.equal(S.bn.running_mean, mean0)
    else:
        assert tracked == 0 and torch.equal(S.bn.running_mean, mean0)


# -- the teacher inside the attack ----------------------------------------------------------------
@pytest.mark.parametrize("name", ALL)
def test_teacher_use_in_the_attack(name):
    S, T = nets()
    if name in TEACHER_IN_ATTACK:
        T.requires_grad_(False)  # frozen: its output requires grad only through the input
    x, y = interior_batch()
    m = method(name)
    T.reset()
    m.perturb(S, T, x, y)
    outs = T.rec_out.calls
    ins = T.rec_in.calls
    if name in TEACHER_IN_ATTACK:
        assert len(outs) == m.steps
        assert all(requires_grad for _, requires_grad, _ in outs)
        assert all(not torch.equal(inp, x) for _, _, inp in ins)
    elif name == "rslad":
        # the teacher's clean output, computed once, without gradient
        assert len(ins) == 1 and torch.equal(ins[0][2], x)
        assert not outs[0][1]
    else:
        assert outs == [], f"{name}'s attack does not involve the teacher"


@pytest.mark.parametrize("name", sorted(NO_TEACHER))
def test_teacher_free_attacks_accept_none(name):
    S, _ = nets()
    x, y = interior_batch()
    m = method(name)
    assert not m.needs_teacher
    x_adv = m.perturb(S, None, x, y)
    assert (x_adv - x).abs().max() <= EPS + 1e-6


# -- randomness -----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ALL)
def test_reseed_reproduces_and_global_rng_untouched(name):
    S, T = nets()
    x, y = interior_batch()
    m = harness.create_method(name, steps=2)
    state = torch.get_rng_state()
    m.reseed(11)
    a = m.perturb(S, T, x, y)
    m.reseed(11)
    b = m.perturb(S, T, x, y)
    m.reseed(12)
    c = m.perturb(S, T, x, y)
    m.setup(S, T, x)
    m.loss(S, T, x, a, y)
    assert torch.equal(state, torch.get_rng_state())
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
