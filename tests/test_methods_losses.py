"""Outer losses of every method against an independent transcription of the methods' formulas.

Each expected value is written here with plain torch ops (log-softmax, explicit sums over i and
c), never with the method's helpers or ``methods.common``. Models are tiny MLPs without
BatchNorm in float64, so values and parameter gradients can be compared tightly; every test also
checks that an obviously wrong variant (other reduction, detached branch, teacher on the other
input, ...) gives a different answer, so the comparison discriminates.
"""

from __future__ import annotations

import pytest
import torch

import harness
from tests.helpers import FeatureMLP as MLP

B, C = 8, 4
SHAPE = (3, 4, 4)
D = 3 * 4 * 4


pytestmark = pytest.mark.usefixtures("one_thread")


def make_batch(seed: int = 0, n: int = B, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand((n, *SHAPE), generator=g, dtype=dtype)
    step = torch.rand((n, *SHAPE), generator=g, dtype=dtype).round() * 2 - 1
    # far from x (the loss does not care about the ball), so the x' and x terms differ clearly
    x_adv = (x + 0.25 * step).clamp(0, 1)
    y = torch.randint(0, C, (n,), generator=g)
    return x, x_adv, y


@pytest.fixture
def setup64():
    student = MLP(0).double()
    teacher = MLP(1, scale=1.5).double()
    x, x_adv, y = make_batch()
    # half of the labels follow the teacher, so both teacher-right and teacher-wrong samples exist
    with torch.no_grad():
        y[::2] = teacher(x)[::2].argmax(1)
    return student, teacher, x, x_adv, y


# -- independent formulas ---------------------------------------------------------------------
def log_softmax(z: torch.Tensor) -> torch.Tensor:
    shifted = z - z.max(1, keepdim=True).values
    return shifted - torch.log(torch.exp(shifted).sum(1, keepdim=True))


def softmax(z: torch.Tensor) -> torch.Tensor:
    return torch.exp(log_softmax(z))


def kl_per_sample(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """Σ_c p_c (log p_c − log q_c) for each sample i."""
    return (torch.exp(log_p) * (log_p - log_q)).sum(1)


def reduce(per_sample: torch.Tensor, how: str) -> torch.Tensor:
    n = per_sample.shape[0]
    if how == "batchmean":
        return per_sample.sum() / n
    if how == "elementwise":
        return per_sample.sum() / (n * C)
    assert how == "sum"
    return per_sample.sum()


def ce_mean(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    rows = torch.arange(len(y))
    return -(log_softmax(logits)[rows, y]).sum() / len(y)


def grads(value: torch.Tensor, params: list[torch.Tensor]) -> list[torch.Tensor]:
    out = torch.autograd.grad(value, params, allow_unused=True, retain_graph=True)
    return [torch.zeros_like(p) if g is None else g for p, g in zip(params, out)]


def assert_close_lists(a, b, rtol=1e-7, atol=1e-10):
    for ga, gb in zip(a, b):
        torch.testing.assert_close(ga, gb, rtol=rtol, atol=atol)


def differs(a: torch.Tensor, b: torch.Tensor, rel: float = 1e-3) -> bool:
    return bool((a - b).abs() > rel * max(a.abs().item(), b.abs().item(), 1e-12))


def grads_differ(a, b, rel: float = 1e-3) -> bool:
    num = sum(float((ga - gb).abs().sum()) for ga, gb in zip(a, b))
    den = sum(float(ga.abs().sum()) for ga in a)
    return num > rel * den


def check(method, student, teacher, x, x_adv, y, expected_fn, wrong_fns=(), epoch=0):
    """m.loss == expected (value and student gradients); each wrong variant differs."""
    params = list(student.parameters())
    loss, logs = method.loss(student, teacher, x, x_adv, y, epoch=epoch)
    assert loss.dim() == 0
    assert all(not torch.as_tensor(v).requires_grad for v in logs.values())
    assert all(torch.isfinite(torch.as_tensor(v)).all() for v in logs.values())
    expected = expected_fn()
    torch.testing.assert_close(loss, expected, rtol=1e-9, atol=1e-12)
    g_loss, g_exp = grads(loss, params), grads(expected, params)
    assert any(float(g.abs().sum()) > 0 for g in g_loss)
    assert_close_lists(g_loss, g_exp)
    if teacher is not None:
        assert all(p.grad is None for p in teacher.parameters())
    for wrong in wrong_fns:
        w = wrong()
        assert differs(w, expected) or grads_differ(grads(w, params), g_exp), wrong
    return loss, logs


# -- PGD-AT, TRADES, MART ----------------------------------------------------------------------
def test_pgd_at_loss(setup64):
    S, T, x, xa, y = setup64
    m = harness.create_method("pgd-at")
    check(
        m,
        S,
        None,
        x,
        xa,
        y,
        lambda: ce_mean(S(xa), y),
        [lambda: ce_mean(S(x), y), lambda: ce_mean(S(xa), y) * B],
    )


@pytest.mark.parametrize("beta", [6.0, 2.5])
def test_trades_loss_and_gradient_through_clean_branch(setup64, beta):
    S, T, x, xa, y = setup64
    m = harness.create_method("trades", beta=beta)
    assert m.beta == beta

    def expected(detach=False):
        clean = S(x)
        target = log_softmax(clean)
        if detach:
            target = target.detach()
        return ce_mean(clean, y) + beta * kl_per_sample(target, log_softmax(S(xa))).sum() / B

    check(
        m,
        S,
        None,
        x,
        xa,
        y,
        expected,
        [
            lambda: expected(detach=True),  # same value, gradient misses the clean branch
            lambda: (
                ce_mean(S(x), y)
                + beta * kl_per_sample(log_softmax(S(x)), log_softmax(S(xa))).sum() / (B * C)
            ),
        ],
    )


@pytest.mark.parametrize("beta", [6.0, 0.7])
def test_mart_loss(setup64, beta):
    S, T, x, xa, y = setup64
    m = harness.create_method("mart", beta=beta)
    rows = torch.arange(B)

    def expected(use_true_weight=True, wrong_on_clean=False):
        clean, adv = S(x), S(xa)
        p_adv, p_clean = softmax(adv), softmax(clean)
        pick = p_clean if wrong_on_clean else p_adv
        masked = pick.clone().detach()
        masked[rows, y] = -1.0
        y_hat = masked.argmax(1)  # top wrong class
        bce = ce_mean(adv, y) - torch.log(1.0001 - p_adv[rows, y_hat] + 1e-12).sum() / B
        kl_i = kl_per_sample(log_softmax(clean), log_softmax(adv))
        weight = (1.0000001 - p_clean[rows, y]) if use_true_weight else 1.0
        return bce + beta * (kl_i * weight).sum() / B

    check(
        m,
        S,
        None,
        x,
        xa,
        y,
        expected,
        [lambda: expected(use_true_weight=False), lambda: expected(wrong_on_clean=True)],
    )


def test_teacher_free_methods_accept_no_teacher(setup64):
    S, _, x, xa, y = setup64
    for name in ("pgd-at", "trades", "mart"):
        m = harness.create_method(name)
        assert m.needs_teacher is False
        loss, _ = m.loss(S, None, x, xa, y)
        assert torch.isfinite(loss)


# -- ARD ------------------------------------------------------------------------------------------
def ard_expected(S, T, x, xa, y, alpha, tau, red, teacher_input=None):
    t_in = x if teacher_input is None else teacher_input
    with torch.no_grad():
        log_pt = log_softmax(T(t_in) / tau)
    kd = reduce(kl_per_sample(log_pt, log_softmax(S(xa) / tau)), red)
    return alpha * tau**2 * kd + (1 - alpha) * ce_mean(S(x), y)


@pytest.mark.parametrize(
    ("hp", "alpha", "tau", "red"),
    [
        ({}, 1.0, 30.0, "elementwise"),
        ({"alpha": 0.7, "temperature": 4.0}, 0.7, 4.0, "elementwise"),
        ({"alpha": 0.7, "temperature": 4.0, "kl_reduction": "batchmean"}, 0.7, 4.0, "batchmean"),
        ({"alpha": 0.4, "temperature": 2.0, "kl_reduction": "sum"}, 0.4, 2.0, "sum"),
    ],
)
def test_ard_loss(setup64, hp, alpha, tau, red):
    S, T, x, xa, y = setup64
    m = harness.create_method("ard", **hp)
    other = "batchmean" if red != "batchmean" else "elementwise"
    check(
        m,
        S,
        T,
        x,
        xa,
        y,
        lambda: ard_expected(S, T, x, xa, y, alpha, tau, red),
        [
            lambda: ard_expected(S, T, x, xa, y, alpha, tau, other),
            lambda: ard_expected(S, T, x, xa, y, alpha, tau, red, teacher_input=xa),
            lambda: ard_expected(S, T, x, xa, y, alpha, 1.0, red),  # no τ
        ],
    )


# -- IAD ------------------------------------------------------------------------------------------
def iad_expected(S, T, x, xa, y, alpha, tau, beta, introspect, detach_clean=False, w_on=None):
    rows = torch.arange(B)
    with torch.no_grad():
        log_pt_tau = log_softmax(T(x) / tau)
        w = softmax(T(xa if w_on is None else w_on))[rows, y] ** beta
    adv, clean = S(xa), S(x)
    loss = alpha * tau**2 * kl_per_sample(log_pt_tau, log_softmax(adv / tau)).sum() / B
    if introspect:
        target = log_softmax(clean)
        if detach_clean:
            target = target.detach()
        loss = loss + alpha * ((1 - w) * kl_per_sample(target, log_softmax(adv))).sum() / B
    return loss + (1 - alpha) * ce_mean(clean, y)


@pytest.mark.parametrize(
    ("hp", "epoch", "introspect"),
    [
        ({}, 0, False),
        ({}, 59, False),
        ({}, 60, True),
        ({"alpha": 0.7, "temperature": 4.0, "beta": 0.5, "warmup_epochs": 3}, 2, False),
        ({"alpha": 0.7, "temperature": 4.0, "beta": 0.5, "warmup_epochs": 3}, 3, True),
        ({"alpha": 1.0, "temperature": 1.0, "beta": 2.0, "warmup_epochs": 0}, 7, True),
    ],
)
def test_iad_loss_before_and_after_warmup(setup64, hp, epoch, introspect):
    S, T, x, xa, y = setup64
    m = harness.create_method("iad", **hp)
    alpha, tau, beta = m.alpha, m.temperature, m.beta
    assert (alpha, tau, beta) == (
        hp.get("alpha", 1.0),
        hp.get("temperature", 1.0),
        hp.get("beta", 0.1),
    )

    def exp(**kw):
        return iad_expected(S, T, x, xa, y, alpha, tau, beta, introspect, **kw)

    wrong = [
        lambda: iad_expected(S, T, x, xa, y, alpha, tau, beta, not introspect),
    ]
    if introspect:
        wrong += [
            lambda: exp(detach_clean=True),  # p_S(x) must keep its gradient
            lambda: exp(w_on=x),  # w_i uses the teacher on x', not on x
        ]
    check(m, S, T, x, xa, y, exp, wrong, epoch=epoch)


# -- RSLAD ----------------------------------------------------------------------------------------
def rslad_expected(S, T, x, xa, aw, cw, red, teacher_input=None):
    with torch.no_grad():
        log_pt = log_softmax(T(x if teacher_input is None else teacher_input))
    adv = reduce(kl_per_sample(log_pt, log_softmax(S(xa))), red)
    clean = reduce(kl_per_sample(log_pt, log_softmax(S(x))), red)
    return aw * adv + cw * clean


@pytest.mark.parametrize(
    ("hp", "aw", "cw", "red"),
    [
        ({}, 5 / 6, 1 / 6, "elementwise"),
        ({"adv_weight": 0.6, "clean_weight": 0.4}, 0.6, 0.4, "elementwise"),
        (
            {"adv_weight": 10 * 5 / 6, "clean_weight": 10 / 6, "kl_reduction": "batchmean"},
            50 / 6,
            10 / 6,
            "batchmean",
        ),
        ({"kl_reduction": "sum"}, 5 / 6, 1 / 6, "sum"),
    ],
)
def test_rslad_loss(setup64, hp, aw, cw, red):
    S, T, x, xa, y = setup64
    m = harness.create_method("rslad", **hp)
    other = "batchmean" if red != "batchmean" else "elementwise"
    check(
        m,
        S,
        T,
        x,
        xa,
        y,
        lambda: rslad_expected(S, T, x, xa, aw, cw, red),
        [
            lambda: rslad_expected(S, T, x, xa, aw, cw, other),
            lambda: rslad_expected(S, T, x, xa, cw, aw, red),
            lambda: rslad_expected(S, T, x, xa, aw, cw, red, teacher_input=xa),
        ],
    )


# -- AKD ------------------------------------------------------------------------------------------
def akd_expected(S, T, x, xa, y, alpha, teacher_input=None):
    with torch.no_grad():
        p_t = softmax(T(xa if teacher_input is None else teacher_input))
    onehot = torch.zeros(B, C, dtype=x.dtype)
    onehot[torch.arange(B), y] = 1.0
    q = alpha * p_t + (1 - alpha) * onehot
    return -(q * log_softmax(S(xa))).sum() / B


@pytest.mark.parametrize(("hp", "alpha"), [({}, 0.9), ({"alpha": 0.7}, 0.7), ({"alpha": 0.0}, 0.0)])
def test_akd_loss(setup64, hp, alpha):
    S, T, x, xa, y = setup64
    m = harness.create_method("akd", **hp)
    wrong = [lambda: akd_expected(S, T, x, xa, y, 1 - alpha)]
    if alpha > 0:
        wrong.append(lambda: akd_expected(S, T, x, xa, y, alpha, teacher_input=x))
    check(m, S, T, x, xa, y, lambda: akd_expected(S, T, x, xa, y, alpha), wrong)


# -- AdaAD ----------------------------------------------------------------------------------------
def adaad_expected(S, T, x, xa, alpha, red, swap_teacher=False):
    with torch.no_grad():
        lt_adv, lt_clean = log_softmax(T(xa)), log_softmax(T(x))
    if swap_teacher:
        lt_adv, lt_clean = lt_clean, lt_adv
    adv = reduce(kl_per_sample(lt_adv, log_softmax(S(xa))), red)
    clean = reduce(kl_per_sample(lt_clean, log_softmax(S(x))), red)
    return alpha * adv + (1 - alpha) * clean


@pytest.mark.parametrize(
    ("hp", "alpha", "red"),
    [
        ({}, 1.0, "elementwise"),
        ({"alpha": 0.7}, 0.7, "elementwise"),
        ({"alpha": 0.7, "kl_reduction": "batchmean"}, 0.7, "batchmean"),
        ({"alpha": 0.3, "kl_reduction": "sum"}, 0.3, "sum"),
    ],
)
def test_adaad_loss(setup64, hp, alpha, red):
    S, T, x, xa, y = setup64
    m = harness.create_method("adaad", **hp)
    other = "batchmean" if red != "batchmean" else "elementwise"
    check(
        m,
        S,
        T,
        x,
        xa,
        y,
        lambda: adaad_expected(S, T, x, xa, alpha, red),
        [
            lambda: adaad_expected(S, T, x, xa, alpha, other),
            lambda: adaad_expected(S, T, x, xa, alpha, red, swap_teacher=True),
        ],
    )


@pytest.mark.parametrize("name", ["pgd-at", "trades", "dgad", "gacd"])
def test_logs_are_floats(setup64, name):
    S, T, x, xa, y = setup64
    S, T = S.float(), T.float()
    _, logs = harness.create_method(name).loss(S, T, x.float(), xa.float(), y)
    assert logs
    # Floats, or detached 0-d tensors: the trainer averages them on the device, with no host
    # synchronisation per step (methods/base.py, Method.loss).
    for key, value in logs.items():
        assert type(value) is float or (
            isinstance(value, torch.Tensor) and value.dim() == 0 and not value.requires_grad
        ), key
