"""MTARD (``mtard``): Zhao et al., "Enhanced Accuracy and Robustness via Multi-Teacher
Adversarial Distillation", ECCV 2022 (official code: zhaoshiji123/MTARD ``mtard/mtard_loss.py``
and ``mtard/mtard_resnet18_cifar10.py``, commit 6480a1b40d6195e437a876639ea37b7b40c46a58; every
default follows it).

Two teachers (``teacher_roles``): ``natural`` (trained on clean images) and ``robust``
(adversarially trained).

    inner:  x' = argmax CE(S(x'), y)   (``mtard_inner_loss_ce``: start x + 0.001·N(0, I), not
            clipped before the first gradient; student BN eval)
    with ℓ(a, b) = −a·b + b·log(b + 1e-5) elementwise (the official ``kl_loss``, KL(b ‖ ·) up to
    a constant: its VALUE drives the weights below), means over i and c:
      L_adv = mean ℓ(log σ(S(x')), σ(T_robust(x')))     the robust teacher on x'
      L_nat = mean ℓ(log σ(S(x)),  σ(T_natural(x)))     the natural teacher on x
    adaptive weights, updated at every step BEFORE that step's loss:
      L⁰ = (L_adv, L_nat) of the run's first step;  r = (L / L⁰) ** weight_power
      w_nat ← w_nat − η · (w_nat − r_nat / (r_adv + r_nat)),  w_adv = 1 − w_nat  (w_nat₀ = 1/2)
      L = w_adv · L_adv + w_nat · L_nat
    η = weight_lr × the LR schedule's factor: the official script multiplies ``weight_learn_rate``
    by 0.1 whenever it multiplies the LR by 0.1 (``start_epoch``'s ``lr_scale``).
    train-mode student forwards per step: S(x'), S(x), as the official loop

The weights are the official Python floats' arithmetic in float64 on the device (no host read
per step), saved with the run's checkpoint with L⁰ (``register_state``), so a resumed run goes
on with the same weights. ``weight_power`` is the official ``bert``.

``nat_target = "robust_adv"`` distils S(x) towards the robust teacher on x' instead, as the
official Fair-MTARD.py does (``fair-mtard``, see ``methods/fair.py``).

Official CIFAR-10 schedule (ResNet-18 student; teachers WRN-34-10: TRADES-trained robust, as
RSLAD's, and a clean-trained natural one): 300 epochs, batch 128, SGD lr 0.1, momentum 0.9,
weight decay 2e-4, no Nesterov, LR ÷10 at epochs 215, 260, 285 (``milestones = [215, 260,
285]``).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from methods.base import Method, Teachers, register_method
from methods.common import ce_attack, constants, full_precision, smoothed_kl

NAT_TARGETS = ("natural", "robust_adv")


def mean_smoothed_kl(logits: Tensor, target_logits: Tensor, weights: Tensor | None) -> Tensor:
    """(1/(B·C)) Σ_i w_i Σ_c ℓ(log σ(logits), σ(target)) (w_i = 1 without ``weights``)."""
    per_entry = smoothed_kl(F.log_softmax(logits, 1), F.softmax(target_logits, 1))
    if weights is not None:
        per_entry = per_entry * weights[:, None]
    return per_entry.mean()


@full_precision
def mtard_loss(
    adv_logits: Tensor,
    nat_logits: Tensor,
    teacher_adv_logits: Tensor,
    teacher_nat_logits: Tensor,
    w_nat: Tensor,
    init_losses: Tensor,
    *,
    weight_lr: float,
    weight_power: float,
    weights: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor, dict[str, Tensor]]:
    """(loss, the updated w_nat, L⁰, values to log). ``init_losses`` is NaN until the run's
    first step sets it; ``weights``: Fair-MTARD's per-sample class weights (None: MTARD)."""
    l_adv = mean_smoothed_kl(adv_logits, teacher_adv_logits, weights)
    l_nat = mean_smoothed_kl(nat_logits, teacher_nat_logits, weights)
    losses = torch.stack([l_adv, l_nat]).detach().to(init_losses.dtype)
    init_losses = torch.where(torch.isnan(init_losses), losses, init_losses)
    rate = (losses / init_losses) ** weight_power
    w_nat = w_nat - weight_lr * (w_nat - rate[1] / (rate[0] + rate[1]))
    w_adv = 1 - w_nat
    loss = w_adv.to(l_adv.dtype) * l_adv + w_nat.to(l_nat.dtype) * l_nat
    logs = {"w_nat": w_nat, "kd_adv": l_adv.detach(), "kd_nat": l_nat.detach()}
    return loss, w_nat, init_losses, logs


@register_method("mtard")
class MTARD(Method):
    teacher_roles = ("natural", "robust")
    defaults = {"weight_lr": 0.025, "weight_power": 1.0, "nat_target": "natural"}
    choices = {"nat_target": NAT_TARGETS}
    nonnegative = ("weight_lr",)

    def __init__(self, /, **hparams: Any) -> None:
        super().__init__(**hparams)
        self.register_state("w_nat", torch.tensor(0.5, dtype=torch.float64))
        self.register_state("init_losses", torch.full((2,), float("nan"), dtype=torch.float64))
        self.lr_scale = 1.0

    def start_epoch(self, epoch: int, lr_scale: float = 1.0) -> None:
        super().start_epoch(epoch, lr_scale)
        self.lr_scale = lr_scale

    def perturb(self, student: nn.Module, teacher: Teachers, x: Tensor, y: Tensor) -> Tensor:
        return ce_attack(self, student, x, y, "normal")

    def loss(self, student, teacher, x, x_adv, y, epoch: int = 0) -> tuple[Tensor, dict[str, Any]]:
        adv_logits = student(x_adv)
        nat_logits = student(x)
        robust, natural = teacher["robust"], teacher["natural"]
        if self.nat_target == "natural":
            t_adv, t_nat = constants(lambda: (robust(x_adv), natural(x)))
        else:
            (t_adv,) = constants(lambda: (robust(x_adv),))
            t_nat = t_adv
        loss, self.w_nat, self.init_losses, logs = mtard_loss(
            adv_logits,
            nat_logits,
            t_adv,
            t_nat,
            self.w_nat,
            self.init_losses,
            weight_lr=self.weight_lr * self.lr_scale,
            weight_power=self.weight_power,
            weights=self.sample_weights(y),
        )
        return loss, logs
