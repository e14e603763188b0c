"""MART (``mart``): Wang et al., "Improving Adversarial Robustness Requires Revisiting
Misclassified Examples", ICLR 2020 (official code: YisenWang/MART ``mart.py:mart_loss``, commit
2d83e17b381dd2ee52223695e517bf6d5ff09c2c; every default follows it).

    inner:  x' = argmax Σ_i CE(S(x'_i), y_i)   (start x + 0.001·N(0, I), not clipped before the
            first gradient; student BN eval)
    outer:  L = CE(S(x'), y) − (1/B) Σ_i log(1.0001 − p_S(x'_i)_{ŷ_i} + 1e-12)
              + beta · (1/B) Σ_i KL(p_S(x_i) ‖ p_S(x'_i)) · (1.0000001 − p_S(x_i)_{y_i})
    with ŷ_i the top wrong class on x' and log p_S(x') taken as log(p + 1e-12), as the code does.
    train-mode student forwards per step: S(x), S(x'), as the official loop
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from methods.base import Method, register_method
from methods.common import ce_attack, full_precision, top_wrong_class


@full_precision
def mart_loss(clean_logits: Tensor, adv_logits: Tensor, y: Tensor, beta: float) -> Tensor:
    adv_probs = F.softmax(adv_logits, 1)
    wrong = top_wrong_class(adv_probs, y)
    bce = F.cross_entropy(adv_logits, y) + F.nll_loss(torch.log(1.0001 - adv_probs + 1e-12), wrong)
    nat_probs = F.softmax(clean_logits, 1)
    true_probs = nat_probs.gather(1, y[:, None]).squeeze(1)
    kl_per = F.kl_div(torch.log(adv_probs + 1e-12), nat_probs, reduction="none").sum(1)
    robust = (kl_per * (1.0000001 - true_probs)).sum() / len(y)
    return bce + beta * robust


@register_method("mart")
class MART(Method):
    needs_teacher = False
    defaults = {"beta": 6.0, "init": "normal"}
    choices = {"init": ("normal", "uniform")}
    nonnegative = ("beta",)

    def perturb(
        self, student: nn.Module, teacher: nn.Module | None, x: Tensor, y: Tensor
    ) -> Tensor:
        return ce_attack(self, student, x, y, self.init)

    def loss(self, student, teacher, x, x_adv, y, epoch: int = 0) -> tuple[Tensor, dict[str, Any]]:
        loss = mart_loss(student(x), student(x_adv), y, self.beta)
        return loss, {}
