"""BatchNorm passes: each method's training step makes the official code's train-mode forwards.

Attacks run the student's BN in eval mode (ARD and IAD: train mode), so the number and order of
train-mode forwards per step decide the BN running statistics, and through the next step's attack,
the weights. Each official training step (the authors' loop: attack, forwards, loss, SGD step) is
re-implemented here, independently of the harness, on a tiny float64 model with BatchNorm, from the
same random start; one harness step (``harness.training.train.train_steps``) must leave the same
running statistics, the same number of tracked batches and the same weights. ``extra_passes =
false`` (the speed switch) must not.

Official files: yaodongyu/TRADES trades.py; YisenWang/MART mart.py;
goldblum/AdversariallyRobustDistillation main.py; ZFancy/IAD IAD-I.py; zibojia/RSLAD
rslad_loss.py + resnet18_rslad_cifar10.py; boyellow/AdaAD and kunsaram01/DGAD main.py +
AT_helper.py (``AdaAD``, ``DGAD`` and ``Plain_Madry``, the paper's PGD-AT).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import harness
from harness.training.fast import FastPath
from harness.training.train import train_steps
from tests.helpers import BNNet

B, C = 16, 4  # BNNet: 48 = 3·4·4 inputs, 12 hidden units, 4 classes
SHAPE = (3, 4, 4)
EPS, STEP, STEPS = 8 / 255, 2 / 255, 10
SEED = 7
LR, MOMENTUM, WD = 0.1, 0.9, 5e-4

# train-mode student forwards per step in the official code (default hyperparameters)
OFFICIAL_PASSES = {
    "pgd-at": 2,  # Plain_Madry: S(x'), then S(x) for the accuracy print
    "trades": 3,  # S(x), S(x'), S(x) again inside the KL
    "mart": 2,
    "ard": 12,  # 10 attack steps in train mode, S(x'), S(x)
    "iad": 13,  # ARD's 12 and ``basicop``; 14 once the introspection term is on
    "rslad": 2,
    "akd": 1,  # no official code: see methods/akd.py
    "adaad": 2,
    "dgad": 2,
    "gacd": 1,  # a reconstruction: see methods/gacd.py
    "natural": 1,
}
WITHOUT_EXTRA = {"pgd-at": 1, "trades": 2, "iad": 12}


pytestmark = [
    pytest.mark.usefixtures("one_thread"),
    # the official ARD and AdaAD losses use nn.KLDivLoss()'s default 'mean', which torch warns on
    pytest.mark.filterwarnings("ignore:reduction. 'mean' divides the total loss"),
]


def models():
    student = BNNet(0, scale=0.3).train()
    teacher = BNNet(1, bn=False).eval().requires_grad_(False)
    return student, teacher


def batch():
    g = torch.Generator().manual_seed(3)
    x = torch.rand((B, *SHAPE), generator=g, dtype=torch.float64)
    x[:, 0, 0, :2] = torch.tensor([0.0, 1.0], dtype=torch.float64)  # the [0,1] clip is active
    y = torch.randint(0, C, (B,), generator=g)
    return x, y


def sgd(model: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM, weight_decay=WD)


def harness_step(name: str, student, teacher, x, y, epoch: int = 0, **hp):
    m = harness.create_method(name, **hp)
    m.reseed(SEED)
    if name == "gacd":  # its heads are built in fp32; this student is float64
        m.setup(student, teacher, x)
        m.heads.double()
    opt = sgd(student)
    train_steps(
        student,
        teacher if m.needs_teacher else None,
        m,
        opt,
        [(x, y)],
        epoch=epoch,
        fast=FastPath(),
        device=torch.device("cpu"),
    )
    return student


# -- the official training steps, transcribed ------------------------------------------------------
def normal_noise(x):
    return 0.001 * torch.randn(
        x.shape, generator=torch.Generator().manual_seed(SEED), dtype=x.dtype
    )


def uniform_noise(x):
    g = torch.Generator().manual_seed(SEED)
    return torch.zeros_like(x).uniform_(-EPS, EPS, generator=g)


def pgd_loop(x, x_adv, loss_of):
    """The official L∞ loop: sign step, then the eps-ball, then [0,1]."""
    for _ in range(STEPS):
        x_adv.requires_grad_()
        with torch.enable_grad():
            loss = loss_of(x_adv)
        (grad,) = torch.autograd.grad(loss, [x_adv])
        x_adv = x_adv.detach() + STEP * torch.sign(grad.detach())
        x_adv = torch.min(torch.max(x_adv, x - EPS), x + EPS)
        x_adv = torch.clamp(x_adv, 0.0, 1.0)
    return x_adv


def kl_sum(log_q, p):
    return nn.KLDivLoss(reduction="sum")(log_q, p)


def official_plain_madry(model, teacher, x, y, opt, epoch):
    # AT_helper.py Madry_PGD (CE summed, as DGAD's copy means; AdaAD's takes the mean)
    model.eval()
    x_adv = torch.clamp(x + normal_noise(x), 0.0, 1.0)
    x_adv = pgd_loop(x, x_adv, lambda xa: F.cross_entropy(model(xa), y, reduction="sum"))
    model.train()
    # main.py, method Plain_Madry
    opt.zero_grad()
    adv_outputs = model(x_adv)
    loss = nn.CrossEntropyLoss()(adv_outputs, y)
    model(x)  # ori_outputs: the accuracy print only
    loss.backward()
    opt.step()


def official_trades(model, teacher, x, y, opt, epoch, beta=6.0):
    model.eval()
    x_adv = x + normal_noise(x)
    x_adv = pgd_loop(
        x, x_adv, lambda xa: kl_sum(F.log_softmax(model(xa), 1), F.softmax(model(x), 1))
    )
    model.train()
    x_adv = torch.clamp(x_adv, 0.0, 1.0)
    opt.zero_grad()
    logits = model(x)
    loss_natural = F.cross_entropy(logits, y)
    loss_robust = (1.0 / len(x)) * kl_sum(F.log_softmax(model(x_adv), 1), F.softmax(model(x), 1))
    loss = loss_natural + beta * loss_robust
    loss.backward()
    opt.step()


def official_mart(model, teacher, x, y, opt, epoch, beta=6.0):
    model.eval()
    x_adv = x + normal_noise(x)
    x_adv = pgd_loop(x, x_adv, lambda xa: F.cross_entropy(model(xa), y))
    model.train()
    x_adv = torch.clamp(x_adv, 0.0, 1.0)
    opt.zero_grad()
    logits = model(x)
    logits_adv = model(x_adv)
    adv_probs = F.softmax(logits_adv, dim=1)
    tmp1 = torch.argsort(adv_probs, dim=1)[:, -2:]
    new_y = torch.where(tmp1[:, -1] == y, tmp1[:, -2], tmp1[:, -1])
    loss_adv = F.cross_entropy(logits_adv, y) + F.nll_loss(
        torch.log(1.0001 - adv_probs + 1e-12), new_y
    )
    nat_probs = F.softmax(logits, dim=1)
    true_probs = torch.gather(nat_probs, 1, (y.unsqueeze(1)).long()).squeeze()
    kl = nn.KLDivLoss(reduction="none")
    loss_robust = (1.0 / len(x)) * torch.sum(
        torch.sum(kl(torch.log(adv_probs + 1e-12), nat_probs), dim=1) * (1.0000001 - true_probs)
    )
    loss = loss_adv + beta * loss_robust
    loss.backward()
    opt.step()


def attack_pgd_module(model, x, y):
    """ARD's and IAD's ``AttackPGD.forward``: the student stays in train mode."""
    x_adv = x.detach() + uniform_noise(x)
    x_adv = pgd_loop(x, x_adv, lambda xa: F.cross_entropy(model(xa), y, reduction="sum"))
    return model(x_adv), x_adv


def official_ard(model, teacher, x, y, opt, epoch, alpha=1.0, temp=30.0):
    model.train()
    opt.zero_grad()
    outputs, _ = attack_pgd_module(model, x, y)
    teacher_outputs = teacher(x)
    basic_outputs = model(x)
    loss = alpha * temp * temp * nn.KLDivLoss()(
        F.log_softmax(outputs / temp, dim=1), F.softmax(teacher_outputs / temp, dim=1)
    ) + (1.0 - alpha) * nn.CrossEntropyLoss()(basic_outputs, y)
    loss.backward()
    opt.step()


def official_iad(model, teacher, x, y, opt, epoch, alpha=1.0, temp=1.0, beta=0.1, begin=60):
    model.train()
    opt.zero_grad()
    teacher_outputs = teacher(x)
    outputs, pert_inputs = attack_pgd_module(model, x, y)
    alpha_w = torch.ones(len(x), dtype=x.dtype)
    model(pert_inputs).detach()  # basicop
    guide = teacher(pert_inputs)
    kl = nn.KLDivLoss(reduction="none")
    kd = (
        alpha
        * temp
        * temp
        * (1 / len(outputs))
        * torch.sum(
            kl(F.log_softmax(outputs / temp, dim=1), F.softmax(teacher_outputs / temp, dim=1)).sum(
                dim=1
            )
        )
    )
    if epoch >= begin:
        for pp in range(len(outputs)):
            alpha_w[pp] = F.softmax(guide, dim=1)[pp][y[pp].item()].pow(beta).item()
        loss = (
            kd
            + alpha
            * (1 / len(outputs))
            * torch.sum(
                kl(F.log_softmax(outputs, dim=1), F.softmax(model(x), dim=1))
                .sum(dim=1)
                .mul(1 - alpha_w)
            )
            + (1.0 - alpha) * nn.CrossEntropyLoss()(model(x), y)
        )
    else:
        loss = kd + (1.0 - alpha) * nn.CrossEntropyLoss()(model(x), y)
    loss.backward()
    opt.step()


def official_rslad(model, teacher, x, y, opt, epoch):
    model.train()
    opt.zero_grad()
    with torch.no_grad():
        teacher_logits = teacher(x)
    # rslad_inner_loss
    model.eval()
    x_adv = x + normal_noise(x)
    x_adv = pgd_loop(
        x,
        x_adv,
        lambda xa: torch.sum(
            nn.KLDivLoss(reduction="none")(
                F.log_softmax(model(xa), dim=1), F.softmax(teacher_logits, dim=1)
            )
        ),
    )
    model.train()
    x_adv = torch.clamp(x_adv, 0.0, 1.0)
    opt.zero_grad()
    adv_logits = model(x_adv)
    # resnet18_rslad_cifar10.py
    model.train()
    nat_logits = model(x)

    def kl_loss(a, b):
        return -a * b + torch.log(b + 1e-5) * b

    t = F.softmax(teacher_logits.detach(), dim=1)
    kl1 = torch.mean(kl_loss(F.log_softmax(adv_logits, dim=1), t))
    kl2 = torch.mean(kl_loss(F.log_softmax(nat_logits, dim=1), t))
    loss = 5 / 6.0 * kl1 + 1 / 6.0 * kl2
    loss.backward()
    opt.step()


def adaad_inner(model, teacher, x):
    model.eval()
    teacher.eval()
    x_adv = x + normal_noise(x)
    x_adv = pgd_loop(
        x,
        x_adv,
        lambda xa: torch.sum(
            nn.KLDivLoss(reduction="none")(
                F.log_softmax(model(xa), dim=1), F.softmax(teacher(xa), dim=1)
            )
        ),
    )
    model.train()
    return torch.clamp(x_adv, 0.0, 1.0)


def official_adaad(model, teacher, x, y, opt, epoch, alpha=1.0):
    x_adv = adaad_inner(model, teacher, x)
    model.train()
    opt.zero_grad()
    ori_outputs = model(x)
    adv_outputs = model(x_adv)
    with torch.no_grad():
        t_ori, t_adv = teacher(x), teacher(x_adv)
    kl1 = nn.KLDivLoss()(F.log_softmax(adv_outputs, dim=1), F.softmax(t_adv, dim=1))
    kl2 = nn.KLDivLoss()(F.log_softmax(ori_outputs, dim=1), F.softmax(t_ori, dim=1))
    loss = alpha * kl1 + (1 - alpha) * kl2
    loss.backward()
    opt.step()


def official_dgad(model, teacher, x, y, opt, epoch, alp_beta=5.0):
    x_adv = adaad_inner(model, teacher, x)
    model.train()
    opt.zero_grad()
    ori_outputs = model(x)
    adv_outputs = model(x_adv)
    kl = nn.KLDivLoss(reduction="none")
    with torch.no_grad():
        t_ori, t_adv = teacher(x), teacher(x_adv)
    lam = torch.zeros(len(x), dtype=x.dtype)
    wrong = torch.argmax(t_ori, dim=1) != y
    lam[wrong] = 1.0
    n = lam.sum().item()
    true_p = torch.gather(t_ori, 1, y.unsqueeze(1)).squeeze()
    max_p, max_i = torch.max(t_ori, dim=1)
    t_ori[wrong, y[wrong]] = max_p[wrong]
    t_ori[wrong, max_i[wrong]] = true_p[wrong]
    correct_p = torch.gather(t_adv, 1, y.unsqueeze(1)).squeeze()
    max_p, max_i = torch.max(t_adv.scatter(1, y.unsqueeze(1), -float("inf")), dim=1)
    mask = correct_p - max_p < 0
    t_adv[mask, y[mask]] = max_p[mask]
    t_adv[mask, max_i[mask]] = correct_p[mask]
    loss_clean = (1 / (n + 1e-10)) * torch.sum(
        lam * kl(F.log_softmax(ori_outputs, dim=1), F.softmax(t_ori, dim=1)).sum(dim=1)
    )
    loss_adv = (1 / (len(x_adv) - n)) * torch.sum(
        (1 - lam) * kl(F.log_softmax(adv_outputs, dim=1), F.softmax(t_adv, dim=1)).sum(dim=1)
    )
    loss_alp = nn.MSELoss()(F.softmax(adv_outputs, dim=1), F.softmax(ori_outputs, dim=1))
    bs = len(x)
    loss = (n / bs) * loss_clean + ((bs - n) / bs) * loss_adv + alp_beta * loss_alp
    loss.backward()
    opt.step()


OFFICIAL = {
    "pgd-at": official_plain_madry,
    "trades": official_trades,
    "mart": official_mart,
    "ard": official_ard,
    "iad": official_iad,
    "rslad": official_rslad,
    "adaad": official_adaad,
    "dgad": official_dgad,
}


def official_step(name, epoch=0):
    student, teacher = models()
    x, y = batch()
    OFFICIAL[name](student, teacher, x, y, sgd(student), epoch)
    return student


def state(model: BNNet) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_same_state(a: BNNet, b: BNNet) -> None:
    sa, sb = state(a), state(b)
    assert sa.keys() == sb.keys()
    for key in sa:
        torch.testing.assert_close(sa[key], sb[key], rtol=1e-9, atol=1e-12, msg=key)


def bn_gap(a: BNNet, b: BNNet) -> float:
    """Relative distance of the two running means."""
    ma, mb = a.bn.running_mean, b.bn.running_mean
    return float((ma - mb).norm() / mb.norm())


# -- counts ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(OFFICIAL_PASSES))
def test_train_mode_forwards_per_step(name):
    student, teacher = models()
    x, y = batch()
    harness_step(name, student, teacher, x, y)
    assert int(student.bn.num_batches_tracked) == OFFICIAL_PASSES[name]


def test_iad_makes_one_more_clean_pass_once_introspection_is_on():
    for epoch, passes in ((59, 13), (60, 14)):
        student, teacher = models()
        x, y = batch()
        harness_step("iad", student, teacher, x, y, epoch=epoch)
        assert int(student.bn.num_batches_tracked) == passes, epoch


@pytest.mark.parametrize("name", sorted(WITHOUT_EXTRA))
def test_extra_passes_switch_drops_them(name):
    student, teacher = models()
    x, y = batch()
    harness_step(name, student, teacher, x, y, extra_passes=False)
    assert int(student.bn.num_batches_tracked) == WITHOUT_EXTRA[name]
    assert harness.create_method(name, extra_passes=False).hparams["extra_passes"] is False


# -- the official sequence, re-implemented ---------------------------------------------------------
@pytest.mark.parametrize("name", sorted(OFFICIAL))
def test_one_step_matches_the_official_loop(name):
    """BN running statistics, tracked batches and weights after one step: as the official loop."""
    student, teacher = models()
    x, y = batch()
    ours = harness_step(name, student, teacher, x, y)
    ref = official_step(name)
    assert int(ref.bn.num_batches_tracked) == OFFICIAL_PASSES[name]
    assert_same_state(ours, ref)


@pytest.mark.parametrize("epoch", [0, 60])
def test_iad_step_matches_the_official_loop_before_and_after_warmup(epoch):
    student, teacher = models()
    x, y = batch()
    ours = harness_step("iad", student, teacher, x, y, epoch=epoch)
    ref = official_step("iad", epoch=epoch)
    assert int(ref.bn.num_batches_tracked) == (14 if epoch >= 60 else 13)
    assert_same_state(ours, ref)


@pytest.mark.parametrize("name", sorted(WITHOUT_EXTRA))
def test_without_extra_passes_the_statistics_differ(name):
    """The comparison discriminates: the faster sequence leaves other running statistics (the
    loss and its gradient are the same, so the weights after one step are too)."""
    student, teacher = models()
    x, y = batch()
    fast = harness_step(name, student, teacher, x, y, extra_passes=False)
    ref = official_step(name)
    assert bn_gap(fast, ref) > 1e-3
    torch.testing.assert_close(fast.fc1.weight, ref.fc1.weight, rtol=1e-9, atol=1e-12)
