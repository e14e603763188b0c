"""PGD-AT (``pgd-at``): Madry et al., "Towards Deep Learning Models Resistant to Adversarial
Attacks", ICLR 2018.

    inner:  x' = argmax_{‖x'−x‖∞ ≤ eps} Σ_i CE(S(x'_i), y_i)   (uniform start, student BN eval)
    outer:  L = mean_i CE(S(x'_i), y_i)
"""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from methods.base import Method, register_method
from methods.common import ce_attack


def pgd_at_loss(adv_logits: Tensor, y: Tensor) -> Tensor:
    return F.cross_entropy(adv_logits, y)


@register_method("pgd-at")
class PGDAT(Method):
    needs_teacher = False
    defaults = {"init": "uniform"}
    choices = {"init": ("uniform", "normal")}

    def perturb(
        self, student: nn.Module, teacher: nn.Module | None, x: Tensor, y: Tensor
    ) -> Tensor:
        return ce_attack(self, student, x, y, self.init)

    def loss(self, student, teacher, x, x_adv, y, epoch: int = 0) -> tuple[Tensor, dict[str, Any]]:
        adv_logits = student(x_adv)
        loss = pgd_at_loss(adv_logits, y)
        return loss, {"ce_adv": loss.detach()}
