"""PGD-AT (``pgd-at``): Madry et al., "Towards Deep Learning Models Resistant to Adversarial
Attacks", ICLR 2018.

    inner:  x' = argmax_{‖x'−x‖∞ ≤ eps} Σ_i CE(S(x'_i), y_i)   (student BN eval)
            start x⁰ = clip_[0,1](x + 0.001·N(0, I)), clipped BEFORE the first gradient
    outer:  L = mean_i CE(S(x'_i), y_i)
    train-mode student forwards per step: S(x'), then S(x) (``extra_passes``)

Defaults follow the DGAD paper's PGD-AT, i.e. ``Plain_Madry`` of the official DGAD code,
kunsaram01/DGAD ``main.py`` + ``AT_helper.py:Madry_PGD`` at commit
a0329c860570484e0835108985954f30bbb374ee (identical to boyellow/AdaAD ``main.py`` +
``AT_helper.py`` at 9e5c6e5ff73052af196065439517562d37eff6e6, whose basic settings the DGAD
paper follows):

- the start is 0.001·N(0, I) noise clipped to [0,1] (``init = "uniform"`` gives MadryLab's
  ``pgd_attack.py`` start instead, U(−eps, eps) clipped to [0,1], at
  MadryLab/cifar10_challenge f15682d9f1e26eb47a2d3b371ef8b6c7abcf6276);
- after the attack the student runs in train mode on x' (the loss) and then on the clean x,
  whose output only feeds the code's accuracy print: that pass moves the BN running statistics,
  so it is made by default; ``extra_passes = false`` drops it for speed.

Broken official code, done as the authors evidently meant: DGAD's ``Madry_PGD`` calls
``nn.CrossEntropyLoss()(logits, y, size_average=False)``, a TypeError (a module's forward takes
no ``size_average``); it means the summed CE, which is what runs here (AdaAD's copy takes the
mean: the same sign of the gradient, hence the same step).
"""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from methods.base import Method, register_method
from methods.common import bn_passes, ce_attack, full_precision


@full_precision
def pgd_at_loss(adv_logits: Tensor, y: Tensor) -> Tensor:
    return F.cross_entropy(adv_logits, y)


@register_method("pgd-at")
class PGDAT(Method):
    needs_teacher = False
    defaults = {"init": "normal", "extra_passes": True}
    choices = {"init": ("normal", "uniform")}

    def perturb(
        self, student: nn.Module, teacher: nn.Module | None, x: Tensor, y: Tensor
    ) -> Tensor:
        return ce_attack(self, student, x, y, self.init, clamp_start=True)

    def loss(self, student, teacher, x, x_adv, y, epoch: int = 0) -> tuple[Tensor, dict[str, Any]]:
        adv_logits = student(x_adv)
        if self.extra_passes:
            bn_passes(student, x)
        loss = pgd_at_loss(adv_logits, y)
        return loss, {"ce_adv": loss.detach()}
