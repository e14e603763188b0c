"""ABSLD (``absld``): Zhao et al., "Improving Adversarial Robust Fairness via Anti-Bias Soft
Label Distillation", NeurIPS 2024 (official code: zhaoshiji123/ABSLD ``absld_loss.py`` and
``resnet18_absld_cifar10.py``, commit 7407c3ad226a1373c8a2af13bf3f6946e100ff84; every default
follows it).

RSLAD's soft labels, sharpened or softened per class: each class c has a temperature for the
adversarial term, τ^adv_c, and one for the clean term, τ^nat_c (both start at 1).

    targets with z = T(x) (the teacher on the CLEAN input, no gradient):
            ``product`` (the code, the default): both terms use z_i / τ^adv_{y_i} / τ^nat_{y_i}
            ``separate`` (the paper): z_i / τ^adv_{y_i} for x', z_i / τ^nat_{y_i} for x
    inner:  x' = argmax Σ_{i,c} KL(σ(target^adv_i) ‖ p_S(x'_i))   (``absld_inner_loss``: start
            x + 0.001·N(0, I), not clipped before the first gradient; student BN eval)
    outer:  L = adv_weight · mean_{i,c} ℓ(log σ(S(x')), σ(target^adv))
              + clean_weight · mean_{i,c} ℓ(log σ(S(x)), σ(target^nat))
            ℓ(a, b) = −a·b + b·log(b + 1e-5) (the official ``kl_loss``), log σ taken as
            ``torch.log(F.softmax(·))`` as there
    after each epoch, with E^adv_c = Σ_{i: y_i = c} CE(S(x'_i), y_i) over the epoch (E^nat: on
    S(x_i)), the outputs of the loss's train-mode forwards:
            g = E − mean_c E;   τ ← clamp(τ − rate · g / max_c |g|, temp_min, temp_max)
            rate = temp_rate × the LR schedule's factor AFTER the epoch's scheduler step (the
            script multiplies ``class_labels_temp_rate`` by 0.1 with the LR, before updating)
    train-mode student forwards per step: S(x'), S(x), as the official loop

Code and paper disagree on the targets: the script divides ``teacher_logits_new_adv`` and
``teacher_logits_new_nat`` in place, but both are ``.detach()`` views of one tensor, so each
row is divided by τ^adv AND τ^nat and both terms (and the attack) see the same targets. The
code is followed (``class_temperatures = "product"``); ``"separate"`` gives the paper's.

The temperatures and the per-class sums live on the device (float32, as the script's CUDA
tensors), are updated there (``end_epoch``) and saved with the run's checkpoint. One guard the
script lacks: an epoch whose class sums are all equal (no step, say) leaves the temperatures
as they are instead of dividing 0 by 0.

Official CIFAR-10 schedule (ResNet-18 student, TRADES WRN-34-10 teacher as RSLAD's): 300
epochs, batch 128, SGD lr 0.1, momentum 0.9, weight decay 2e-4, no Nesterov, LR ÷10 after
epochs 215, 260, 285 (``milestones = [215, 260, 285]``).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from methods.base import Method, Teachers, register_method
from methods.common import full_precision, kl_attack, smoothed_kl, teacher_outputs

CLASS_TEMPERATURES = ("product", "separate")


def absld_targets(
    teacher_logits: Tensor, y: Tensor, temp_adv: Tensor, temp_nat: Tensor, mode: str
) -> tuple[Tensor, Tensor]:
    """The teacher logits scaled per sample by its class's temperatures: (adv, nat) targets."""
    t_adv, t_nat = temp_adv[y][:, None], temp_nat[y][:, None]
    if mode == "product":
        scaled = teacher_logits / t_adv / t_nat
        return scaled, scaled
    return teacher_logits / t_adv, teacher_logits / t_nat


@full_precision
def absld_loss(
    adv_logits: Tensor,
    nat_logits: Tensor,
    target_adv_logits: Tensor,
    target_nat_logits: Tensor,
    y: Tensor,
    *,
    adv_weight: float,
    clean_weight: float,
) -> tuple[Tensor, Tensor, Tensor]:
    """(loss, per-sample CE on S(x'), per-sample CE on S(x)): the last two, detached, are what
    the script sums per class for the temperature update."""
    kl_adv = smoothed_kl(torch.log(F.softmax(adv_logits, 1)), F.softmax(target_adv_logits, 1))
    kl_nat = smoothed_kl(torch.log(F.softmax(nat_logits, 1)), F.softmax(target_nat_logits, 1))
    loss = adv_weight * kl_adv.mean() + clean_weight * kl_nat.mean()
    ce_adv = F.cross_entropy(adv_logits.detach(), y, reduction="none")
    ce_nat = F.cross_entropy(nat_logits.detach(), y, reduction="none")
    return loss, ce_adv, ce_nat


def update_temperatures(
    temps: Tensor, class_loss: Tensor, rate: float, temp_min: float, temp_max: float
) -> Tensor:
    """τ − rate · g / max|g| with g = class_loss − mean(class_loss), clamped (as the script);
    unchanged where g is all zero."""
    gap = class_loss - torch.mean(class_loss)
    top = torch.max(torch.abs(gap))
    new = torch.clamp(temps - rate * gap / top, temp_min, temp_max)
    return torch.where(top > 0, new, temps)


@register_method("absld")
class ABSLD(Method):
    defaults = {
        "adv_weight": 5 / 6,
        "clean_weight": 1 / 6,
        "temp_rate": 0.1,
        "temp_min": 0.5,
        "temp_max": 5.0,
        "class_temperatures": "product",
    }
    choices = {"class_temperatures": CLASS_TEMPERATURES}
    positive = ("temp_min", "temp_max")
    nonnegative = ("adv_weight", "clean_weight", "temp_rate")

    def setup(self, student: nn.Module, teacher: Teachers, x: Tensor) -> None:
        self._init_state(teacher, x)

    def _init_state(self, teacher: nn.Module, x: Tensor) -> None:
        """Temperatures at 1 and zero class sums, sized by the teacher's output (once)."""
        if hasattr(self, "temp_adv"):
            return
        (logits,) = teacher_outputs(teacher, x[:2])
        ones = torch.ones(logits.shape[1], device=x.device)
        self.register_state("temp_adv", ones.clone())
        self.register_state("temp_nat", ones.clone())
        self.register_state("loss_adv", torch.zeros_like(ones))
        self.register_state("loss_nat", torch.zeros_like(ones))

    def targets(self, teacher: nn.Module, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        self._init_state(teacher, x)
        (z,) = teacher_outputs(teacher, x)
        return absld_targets(z, y, self.temp_adv, self.temp_nat, self.class_temperatures)

    def perturb(self, student: nn.Module, teacher: Teachers, x: Tensor, y: Tensor) -> Tensor:
        target = F.softmax(self.targets(teacher, x, y)[0], 1)
        return kl_attack(self, student, x, target, "normal")

    def loss(self, student, teacher, x, x_adv, y, epoch: int = 0) -> tuple[Tensor, dict[str, Any]]:
        adv_logits = student(x_adv)
        nat_logits = student(x)
        target_adv, target_nat = self.targets(teacher, x, y)
        loss, ce_adv, ce_nat = absld_loss(
            adv_logits,
            nat_logits,
            target_adv,
            target_nat,
            y,
            adv_weight=self.adv_weight,
            clean_weight=self.clean_weight,
        )
        self.loss_adv.index_add_(0, y, ce_adv.to(self.loss_adv.dtype))
        self.loss_nat.index_add_(0, y, ce_nat.to(self.loss_nat.dtype))
        return loss, {"ce_adv": ce_adv.mean(), "ce_nat": ce_nat.mean()}

    def end_epoch(self, epoch: int, lr_scale: float = 1.0) -> None:
        super().end_epoch(epoch, lr_scale)
        if not hasattr(self, "temp_adv"):
            return
        rate = self.temp_rate * lr_scale
        bounds = (self.temp_min, self.temp_max)
        self.temp_adv = update_temperatures(self.temp_adv, self.loss_adv, rate, *bounds)
        self.temp_nat = update_temperatures(self.temp_nat, self.loss_nat, rate, *bounds)
        self.loss_adv.zero_()
        self.loss_nat.zero_()
