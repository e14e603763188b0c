"""The losses and state updates of MTARD, Fair-*, ABSLD and PeerAiD against their formulas.

As tests/test_methods_losses.py: each expected value is written out here in plain torch
(explicit log-softmax, sums over i and c, Python floats where the official code uses them),
never with the methods' helpers; tiny MLPs without BatchNorm in float64 so values and
gradients compare tightly; every test also checks that a plausible wrong variant differs.
"""

from __future__ import annotations

import pytest
import torch

import harness
from tests.helpers import FeatureMLP as MLP

B, C = 8, 4
SHAPE = (3, 4, 4)

pytestmark = pytest.mark.usefixtures("one_thread")


def make_batch(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand((B, *SHAPE), generator=g, dtype=torch.float64)
    step = torch.rand((B, *SHAPE), generator=g, dtype=torch.float64).round() * 2 - 1
    x_adv = (x + 0.25 * step).clamp(0, 1)
    y = torch.arange(B) % C  # every class present
    return x, x_adv, y


@pytest.fixture
def nets():
    return MLP(0).double(), MLP(1, scale=1.5).double(), MLP(2, scale=0.8).double()


# -- independent formulas ---------------------------------------------------------------------
def log_softmax(z):
    shifted = z - z.max(1, keepdim=True).values
    return shifted - torch.log(torch.exp(shifted).sum(1, keepdim=True))


def softmax(z):
    return torch.exp(log_softmax(z))


def ce_per_sample(logits, y):
    return -log_softmax(logits)[torch.arange(len(y)), y]


def kl_entries(p, log_q):
    """p_c (log p_c − log q_c), per (i, c)."""
    return p * (torch.log(p) - log_q)


def smoothed_entries(p, log_q):
    """The official ``kl_loss(log_q, p)``: −log q·p + p·log(p + 1e-5), per (i, c)."""
    return -log_q * p + p * torch.log(p + 1e-5)


def grads(value, params):
    out = torch.autograd.grad(value, params, allow_unused=True, retain_graph=True)
    return [torch.zeros_like(p) if g is None else g for p, g in zip(params, out)]


def assert_grads_close(a, b):
    for ga, gb in zip(a, b, strict=True):
        torch.testing.assert_close(ga, gb, rtol=1e-7, atol=1e-10)


def grads_differ(a, b, rel=1e-3):
    num = sum(float((ga - gb).abs().sum()) for ga, gb in zip(a, b))
    return num > rel * sum(float(ga.abs().sum()) for ga in a)


# -- MTARD ----------------------------------------------------------------------------------------
def mtard_terms(S, Tn, Tr, x, xa, w=None, nat_on_robust=False, exact_kl=False):
    """(L_adv, L_nat): means over i and c of the official kl_loss, per-sample weights w."""
    entries = kl_entries if exact_kl else smoothed_entries
    with torch.no_grad():
        p_adv = softmax(Tr(xa))
        p_nat = p_adv if nat_on_robust else softmax(Tn(x))
    w = torch.ones(B, dtype=torch.float64) if w is None else w.double()
    l_adv = (w[:, None] * entries(p_adv, log_softmax(S(xa)))).sum() / (B * C)
    l_nat = (w[:, None] * entries(p_nat, log_softmax(S(x)))).sum() / (B * C)
    return l_adv, l_nat


def test_mtard_loss_and_adaptive_weights_over_three_steps(nets):
    S, Tn, Tr = nets
    m = harness.create_method("mtard")
    assert (m.weight_lr, m.weight_power, m.nat_target) == (0.025, 1.0, "natural")
    teacher = {"natural": Tn, "robust": Tr}
    params = list(S.parameters())
    w_nat, init, eta = 0.5, None, 0.025
    for step, lr_scale in enumerate([1.0, 1.0, 0.1]):
        m.start_epoch(step, lr_scale=lr_scale)
        x, xa, y = make_batch(step)
        loss, logs = m.loss(S, teacher, x, xa, y)
        l_adv, l_nat = mtard_terms(S, Tn, Tr, x, xa)
        # the official update, in Python floats from .item()
        if init is None:
            init = (l_adv.item(), l_nat.item())
        r_adv, r_nat = l_adv.item() / init[0], l_nat.item() / init[1]
        w_nat = w_nat - eta * lr_scale * (w_nat - r_nat / (r_adv + r_nat))
        expected = (1 - w_nat) * l_adv + w_nat * l_nat
        torch.testing.assert_close(loss, expected, rtol=1e-10, atol=1e-12)
        assert float(m.w_nat) == pytest.approx(w_nat, rel=1e-12, abs=0)
        assert float(logs["w_nat"]) == pytest.approx(w_nat, rel=1e-12)
        assert_grads_close(grads(loss, params), grads(expected, params))
        # wrong: the exact KL (another value, so other weights), the robust teacher on x
        if step:
            e_adv, e_nat = mtard_terms(S, Tn, Tr, x, xa, exact_kl=True)
            assert min(abs(e_adv.item() - l_adv.item()), abs(e_nat.item() - l_nat.item())) > 1e-7
            wrong = (1 - w_nat) * mtard_terms(S, Tn, Tr, x, x)[0] + w_nat * l_nat
            assert abs(wrong.item() - expected.item()) > 1e-6
    assert w_nat != 0.5
    torch.testing.assert_close(
        m.init_losses, torch.tensor(init, dtype=torch.float64), rtol=1e-15, atol=0
    )


def test_mtard_first_step_weighs_both_terms_one_half(nets):
    S, Tn, Tr = nets
    m = harness.create_method("mtard", weight_lr=0.9, weight_power=3.0)
    x, xa, y = make_batch()
    loss, _ = m.loss(S, {"natural": Tn, "robust": Tr}, x, xa, y)
    l_adv, l_nat = mtard_terms(S, Tn, Tr, x, xa)
    torch.testing.assert_close(loss, 0.5 * l_adv + 0.5 * l_nat, rtol=1e-10, atol=1e-12)


def test_mtard_weight_power(nets):
    S, Tn, Tr = nets
    m = harness.create_method("mtard", weight_power=2.0)
    teacher = {"natural": Tn, "robust": Tr}
    first = mtard_terms(S, Tn, Tr, *make_batch(0)[:2])
    m.loss(S, teacher, *make_batch(0))
    x, xa, y = make_batch(1)
    m.loss(S, teacher, x, xa, y)
    l_adv, l_nat = mtard_terms(S, Tn, Tr, x, xa)
    r_adv = (l_adv.item() / first[0].item()) ** 2
    r_nat = (l_nat.item() / first[1].item()) ** 2
    assert float(m.w_nat) == pytest.approx(0.5 - 0.025 * (0.5 - r_nat / (r_adv + r_nat)), rel=1e-12)


# -- Fair-* ---------------------------------------------------------------------------------------
def fair_weights(kappa_per_class: list[float], beta: float, eps: float) -> torch.Tensor:
    """(1/(κ̄_c + eps))^β, scaled to sum to C, clamped to [5/6, 5/2], in float32 as there."""
    v = [(1.0 / (k + eps)) ** beta for k in kappa_per_class]
    w = [C * vc / sum(v) for vc in v]
    return torch.tensor([min(max(wc, 5 / 6), 5 / 2) for wc in w], dtype=torch.float32)


@pytest.mark.parametrize(("name", "eps"), [("fair-ard", 1e-5), ("fair-rslad", 0.0)])
def test_fair_class_weights_after_an_epoch(nets, name, eps):
    S, T, _ = nets
    m = harness.create_method(name)
    assert (m.fair_beta, m.fair_eps) == (2.0, eps)
    x, _, _ = make_batch()
    m.setup(S, T, x)
    torch.testing.assert_close(m.class_weight, torch.ones(C))  # the first epoch: all 1
    n = 40  # images in the epoch; counts of correct attack forwards per class
    counts = [52, 3, 17, 100]
    m.kappa.copy_(torch.tensor(counts))
    m.seen.fill_(n)
    m.end_epoch(0)
    kappa = [k / (n / C) for k in counts]
    expected = fair_weights(kappa, 2.0, eps)
    torch.testing.assert_close(m.class_weight, expected, rtol=1e-6, atol=0)
    assert expected.max() == pytest.approx(5 / 2) and expected.min() == pytest.approx(5 / 6)
    assert int(m.kappa.sum()) == 0 and int(m.seen) == 0  # counts restart each epoch
    # unclamped middle values too: β = 0.5
    m = harness.create_method(name, fair_beta=0.5)
    m.setup(S, T, x)
    m.kappa.copy_(torch.tensor(counts))
    m.seen.fill_(n)
    m.end_epoch(0)
    torch.testing.assert_close(m.class_weight, fair_weights(kappa, 0.5, eps), rtol=1e-6, atol=0)


def test_fair_counts_correct_attack_forwards(nets):
    """κ_i: of the attack's forwards x_0 … x_{steps−1}, those classifying sample i right."""
    S, T, _ = nets
    m = harness.create_method("fair-ard", steps=3)
    x, _, y = make_batch()
    m.setup(S, T, x)
    m.reseed(0)
    seen = []
    handle = S.register_forward_hook(lambda mod, args, out: seen.append(out.detach().argmax(1)))
    m.perturb(S, T, x, y)
    handle.remove()
    assert len(seen) == 3
    per_sample = sum((pred == y).long() for pred in seen)
    expected = torch.zeros(C, dtype=torch.long).index_add_(0, y, per_sample)
    assert torch.equal(m.kappa, expected) and int(m.seen) == B


def weighted_mean(w, per_sample):
    return (w * per_sample).sum() / B


FAIR_W = torch.tensor([0.9, 2.5, 1.3, 5 / 6], dtype=torch.float32)


def fair_expected(name, S, T, x, xa, y, w):
    """The base loss, each sample's terms times w_i (official defaults)."""
    with torch.no_grad():
        t_x = T(x)
    if name == "fair-ard":  # τ 30, alpha 1: τ² · (1/(B·C)) Σ_i w_i KL_i
        kd = kl_entries(softmax(t_x / 30), log_softmax(S(xa) / 30)).sum(1)
        return 900 * weighted_mean(w, kd) / C
    if name == "fair-rslad":  # 5/6, 1/6, elementwise
        p = softmax(t_x)
        adv = weighted_mean(w, kl_entries(p, log_softmax(S(xa))).sum(1)) / C
        nat = weighted_mean(w, kl_entries(p, log_softmax(S(x))).sum(1)) / C
        return 5 / 6 * adv + 1 / 6 * nat
    assert name == "fair-iad"  # after the warm-up; alpha 0.6 so the CE (on S(x')) counts
    with torch.no_grad():
        p_y = softmax(T(xa))[torch.arange(B), y] ** 0.1
    adv, clean = S(xa), S(x)
    kd = kl_entries(softmax(t_x), log_softmax(adv)).sum(1)
    intro = (1 - p_y) * kl_entries(softmax(clean), log_softmax(adv)).sum(1)
    ce = ce_per_sample(adv, y)
    return 0.6 * weighted_mean(w, kd) + 0.6 * weighted_mean(w, intro) + 0.4 * weighted_mean(w, ce)


@pytest.mark.parametrize("name", ["fair-ard", "fair-rslad", "fair-iad"])
def test_fair_losses_weigh_each_sample_by_its_class(nets, name):
    S, T, _ = nets
    hp = {"alpha": 0.6, "warmup_epochs": 0} if name == "fair-iad" else {}
    m = harness.create_method(name, **hp)
    x, xa, y = make_batch()
    m.setup(S, T, x)
    m.class_weight.copy_(FAIR_W)
    loss, _ = m.loss(S, T, x, xa, y, epoch=1)
    w = FAIR_W[y].double()
    expected = fair_expected(name, S, T, x, xa, y, w)
    torch.testing.assert_close(loss, expected, rtol=1e-9, atol=1e-12)
    params = list(S.parameters())
    assert_grads_close(grads(loss, params), grads(expected, params))
    unweighted = fair_expected(name, S, T, x, xa, y, torch.ones(B, dtype=torch.float64))
    by_prediction = fair_expected(name, S, T, x, xa, y, FAIR_W[T(x).argmax(1)].double())
    for wrong in (unweighted, by_prediction):
        assert abs(wrong.item() - expected.item()) > 1e-6 * abs(expected.item())


def test_fair_iad_has_no_ce_term_before_the_warmup(nets):
    S, T, _ = nets
    m = harness.create_method("fair-iad", alpha=0.6, warmup_epochs=5)
    x, xa, y = make_batch()
    m.setup(S, T, x)
    m.class_weight.copy_(FAIR_W)
    loss, _ = m.loss(S, T, x, xa, y, epoch=4)
    with torch.no_grad():
        t_x = T(x)
    kd = kl_entries(softmax(t_x), log_softmax(S(xa))).sum(1)
    torch.testing.assert_close(loss, 0.6 * weighted_mean(FAIR_W[y].double(), kd))


def test_fair_mtard_weighs_both_terms_and_distils_towards_the_robust_teacher_on_x_adv(nets):
    S, Tn, Tr = nets
    m = harness.create_method("fair-mtard")
    assert m.nat_target == "robust_adv" and m.teacher_roles == ("natural", "robust")
    x, xa, y = make_batch()
    teacher = {"natural": Tn, "robust": Tr}
    m.setup(S, teacher, x)
    m.class_weight.copy_(FAIR_W)
    loss, _ = m.loss(S, teacher, x, xa, y)
    w = FAIR_W[y]
    l_adv, l_nat = mtard_terms(S, Tn, Tr, x, xa, w=w, nat_on_robust=True)
    torch.testing.assert_close(loss, 0.5 * l_adv + 0.5 * l_nat, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(m.init_losses, torch.stack([l_adv, l_nat]).detach())
    paper = mtard_terms(S, Tn, Tr, x, xa, w=w)
    assert abs((0.5 * paper[0] + 0.5 * paper[1]).item() - loss.item()) > 1e-6


# -- ABSLD ----------------------------------------------------------------------------------------
def absld_expected(S, T, x, xa, y, t_adv, t_nat, product=True):
    with torch.no_grad():
        z = T(x)
    ta, tn = t_adv[y].double()[:, None], t_nat[y].double()[:, None]
    z_adv, z_nat = (z / ta / tn, z / ta / tn) if product else (z / ta, z / tn)
    adv = smoothed_entries(softmax(z_adv), log_softmax(S(xa))).mean()
    nat = smoothed_entries(softmax(z_nat), log_softmax(S(x))).mean()
    return 5 / 6 * adv + 1 / 6 * nat


T_ADV = torch.tensor([1.0, 0.6, 2.0, 4.5])
T_NAT = torch.tensor([0.7, 1.0, 3.0, 1.2])


@pytest.mark.parametrize("mode", ["product", "separate"])
def test_absld_loss_with_class_temperatures(nets, mode):
    S, T, _ = nets
    m = harness.create_method("absld", class_temperatures=mode)
    x, xa, y = make_batch()
    m.setup(S, T, x)
    m.temp_adv.copy_(T_ADV)
    m.temp_nat.copy_(T_NAT)
    loss, _ = m.loss(S, T, x, xa, y)
    expected = absld_expected(S, T, x, xa, y, T_ADV, T_NAT, product=mode == "product")
    torch.testing.assert_close(loss, expected, rtol=1e-9, atol=1e-12)
    params = list(S.parameters())
    assert_grads_close(grads(loss, params), grads(expected, params))
    other = absld_expected(S, T, x, xa, y, T_ADV, T_NAT, product=mode != "product")
    assert abs(other.item() - expected.item()) > 1e-6
    # the per-class CE sums the temperature update reads
    torch.testing.assert_close(
        m.loss_adv,
        torch.zeros(C, dtype=torch.float64).index_add_(0, y, ce_per_sample(S(xa), y)).float(),
    )
    torch.testing.assert_close(
        m.loss_nat,
        torch.zeros(C, dtype=torch.float64).index_add_(0, y, ce_per_sample(S(x), y)).float(),
    )


def test_absld_attack_targets_the_scaled_teacher(nets):
    """The inner maximisation follows Σ KL(σ(target^adv) ‖ σ(S(x'))), the temperatures in."""
    S, T, _ = nets
    m = harness.create_method("absld", steps=1, step_size=0.01, eps=0.03)
    x, _, y = make_batch()
    m.setup(S, T, x)
    m.temp_adv.copy_(T_ADV)
    m.temp_nat.copy_(T_NAT)
    m.reseed(3)
    x_adv = m.perturb(S, T, x, y)
    start = x + 0.001 * torch.randn(
        x.shape, generator=torch.Generator().manual_seed(3), dtype=x.dtype
    )
    with torch.no_grad():
        p = softmax(T(x) / T_ADV[y].double()[:, None] / T_NAT[y].double()[:, None])
    s = start.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(kl_entries(p, log_softmax(S(s))).sum(), s)
    expected = torch.min(torch.max(start + 0.01 * g.sign(), x - 0.03), x + 0.03).clamp(0, 1)
    torch.testing.assert_close(x_adv, expected, rtol=0, atol=1e-12)


def test_absld_temperature_update(nets):
    S, T, _ = nets
    m = harness.create_method("absld")
    x, _, _ = make_batch()
    m.setup(S, T, x)
    m.temp_adv.copy_(T_ADV)
    m.temp_nat.copy_(T_NAT)
    sums_adv, sums_nat = [10.0, 2.0, 5.0, 40.0], [3.0, 3.5, 1.0, 2.5]
    m.loss_adv.copy_(torch.tensor(sums_adv))
    m.loss_nat.copy_(torch.tensor(sums_nat))
    m.end_epoch(0, lr_scale=0.1)  # the rate decays with the LR: 0.1 · 0.1

    def update(temps, sums, rate=0.01):
        mean = sum(sums) / C
        gap = [s - mean for s in sums]
        top = max(abs(g) for g in gap)
        return torch.tensor([min(max(t - rate * g / top, 0.5), 5.0) for t, g in zip(temps, gap)])

    torch.testing.assert_close(m.temp_adv, update(T_ADV.tolist(), sums_adv), rtol=1e-6, atol=0)
    torch.testing.assert_close(m.temp_nat, update(T_NAT.tolist(), sums_nat), rtol=1e-6, atol=0)
    assert int((m.loss_adv != 0).sum()) == 0 and int((m.loss_nat != 0).sum()) == 0
    # the clamp: a large rate pushes the hardest class to temp_min, the easiest to temp_max
    m = harness.create_method("absld", temp_rate=100.0)
    m.setup(S, T, x)
    m.loss_adv.copy_(torch.tensor(sums_adv))
    m.loss_nat.copy_(torch.tensor(sums_nat))
    m.end_epoch(0)
    assert m.temp_adv.tolist() == [5.0, 5.0, 5.0, 0.5]
    # an epoch with equal sums (no step) leaves the temperatures as they are
    m.end_epoch(1)
    assert m.temp_adv.tolist() == [5.0, 5.0, 5.0, 0.5]


# -- PeerAiD --------------------------------------------------------------------------------------
def peeraid_expected(S, P, x, xa, y, detach_target=False, detach_clean=False, tau=5.0):
    """L_P + L_S with the CIFAR-10 script's weights (λ1 0, λ2 1, λ3 1, γ1 1, γ2 0.1, τ_r 1)."""
    p_adv, s_adv, s_clean = P(xa), S(xa), S(x)
    target = s_adv.detach() if detach_target else s_adv
    clean = s_clean.detach() if detach_clean else s_clean
    l_peer = ce_per_sample(p_adv, y).mean() + 0.1 * kl_entries(
        softmax(target), log_softmax(p_adv)
    ).sum() / (B * C)
    log_s = log_softmax(s_adv / tau)
    l_student = tau**2 * kl_entries(softmax(p_adv.detach() / tau), log_s).sum() / (
        B * C
    ) + tau**2 * kl_entries(softmax(clean / tau), log_s).sum() / (B * C)
    return l_peer + l_student, l_peer, l_student


def test_peeraid_losses_and_gradients_into_student_and_peer(nets):
    S, _, _ = nets
    m = harness.create_method("peeraid")
    assert (m.temperature, m.re_kd_temperature, m.lamb1, m.lamb2, m.lamb3) == (5, 1, 0, 1, 1)
    assert (m.gamma1, m.gamma2) == (1, 0.1)
    x, xa, y = make_batch()
    m.setup(S, None, x)
    P = m.peer
    assert P is not S and not any(p is q for p in P.parameters() for q in S.parameters())
    loss, logs = m.loss(S, None, x, xa, y)
    expected, l_peer, l_student = peeraid_expected(S, P, x, xa, y)
    torch.testing.assert_close(loss, expected, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(logs["loss_peer"], l_peer.detach())
    torch.testing.assert_close(logs["loss_student"], l_student.detach())
    params = list(S.parameters()) + list(P.parameters())
    assert m.parameters() == list(P.parameters())
    g_loss, g_exp = grads(loss, params), grads(expected, params)
    assert_grads_close(g_loss, g_exp)
    # the official code keeps the gradient through S(x') in L_P and through S(x) in L_S
    for kw in ({"detach_target": True}, {"detach_clean": True}):
        assert grads_differ(grads(peeraid_expected(S, P, x, xa, y, **kw)[0], params), g_exp)
    assert abs(peeraid_expected(S, P, x, xa, y, tau=1.0)[0].item() - expected.item()) > 1e-6


def test_peeraid_attack_targets_the_peer_in_eval_mode(nets):
    S, _, _ = nets
    m = harness.create_method("peeraid", steps=1, step_size=0.01, eps=0.03)
    x, _, y = make_batch()
    m.setup(S, None, x)
    modes = []
    handle = m.peer.register_forward_hook(lambda mod, a, out: modes.append(mod.training))
    m.reseed(5)
    x_adv = m.perturb(S, None, x, y)
    handle.remove()
    assert modes == [False] and m.peer.training  # P(x) in eval mode, then back to train
    start = x + 0.001 * torch.randn(
        x.shape, generator=torch.Generator().manual_seed(5), dtype=x.dtype
    )
    with torch.no_grad():
        p = softmax(m.peer(x))
    s = start.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(kl_entries(p, log_softmax(S(s))).sum(), s)
    expected = torch.min(torch.max(start + 0.01 * g.sign(), x - 0.03), x + 0.03).clamp(0, 1)
    torch.testing.assert_close(x_adv, expected, rtol=0, atol=1e-12)


# -- the contract ---------------------------------------------------------------------------------
BEYOND = ["mtard", "fair-mtard", "fair-ard", "fair-iad", "fair-rslad", "absld", "peeraid"]


class BNMLP(MLP):
    """The MLP with a BatchNorm1d whose mode can differ from its parent's."""

    def __init__(self, seed: int) -> None:
        super().__init__(seed)
        self.bn = torch.nn.BatchNorm1d(6)
        self.double()

    def forward_features(self, x):
        return torch.tanh(self.bn(self.fc1(x.flatten(1))))


def contract_setup(name, seed=0, setup=True):
    S = BNMLP(0)
    m = harness.create_method(name, steps=3)
    if m.teacher_roles:
        teacher = {"natural": MLP(2).double(), "robust": MLP(1, scale=1.5).double()}
    else:
        teacher = MLP(1, scale=1.5).double() if m.needs_teacher else None
    x, _, y = make_batch(seed)
    x[:, 0, 0, :2] = torch.tensor([0.0, 1.0], dtype=torch.float64)
    if setup:
        m.setup(S, teacher, x)
    return S, teacher, m, x, y


def all_nets(S, teacher, m):
    nets = [S, *m.modules()]
    if isinstance(teacher, dict):
        return nets + list(teacher.values())
    return nets + ([teacher] if teacher is not None else [])


def modes(nets):
    return [(i, name, mod.training) for i, n in enumerate(nets) for name, mod in n.named_modules()]


@pytest.mark.parametrize("name", BEYOND)
@pytest.mark.parametrize("s_train", [True, False])
def test_attack_and_loss_keep_modes_and_leave_no_gradients(name, s_train):
    S, teacher, m, x, y = contract_setup(name)
    nets = all_nets(S, teacher, m)
    S.train(s_train)
    S.bn.train(not s_train)  # a submodule whose flag differs from its parent's
    before = modes(nets)
    x0 = x.clone()
    x_adv = m.perturb(S, teacher, x, y)
    assert modes(nets) == before and torch.equal(x, x0)
    assert not x_adv.requires_grad and x_adv.grad_fn is None and (x_adv != x).any()
    assert (x_adv - x).abs().max() <= 8 / 255 + 1e-9 and 0 <= x_adv.min() <= x_adv.max() <= 1
    assert all(p.grad is None for net in nets for p in net.parameters())
    loss, _ = m.loss(S, teacher, x, x_adv, y)
    assert modes(nets) == before and loss.dim() == 0 and torch.isfinite(loss)


@pytest.mark.parametrize("name", BEYOND)
def test_reseed_reproduces_and_the_global_rng_is_untouched(name):
    S, teacher, m, x, y = contract_setup(name, setup=False)  # building the nets draws
    rng = torch.get_rng_state()
    m.setup(S, teacher, x)  # PeerAiD's peer: initialised from the method's own seed
    m.reseed(11)
    a = m.perturb(S, teacher, x, y)
    m.reseed(11)
    b = m.perturb(S, teacher, x, y)
    m.reseed(12)
    c = m.perturb(S, teacher, x, y)
    m.loss(S, teacher, x, a, y)
    m.end_epoch(0)
    assert torch.equal(rng, torch.get_rng_state())
    assert torch.equal(a, b) and not torch.equal(a, c)
