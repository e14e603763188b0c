"""TRADES (``trades``): Zhang et al., "Theoretically Principled Trade-off between Robustness and
Accuracy", ICML 2019 (official code: yaodongyu/TRADES, ``trades.py``).

    inner:  x' = argmax Σ_i KL(p_S(x_i) ‖ p_S(x'_i))       (normal start, student BN eval)
    outer:  L = mean_i CE(S(x_i), y_i) + beta · (1/B) Σ_i KL(p_S(x_i) ‖ p_S(x'_i))

The clean target is not detached: the gradient flows through both branches. The official code
runs the clean batch through the student twice in train mode (CE, then KL target); one pass
gives the same loss and gradient, and BN running statistics then see the clean batch once.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from harness.modes import eval_mode
from methods.base import Method, register_method
from methods.common import kl


def trades_loss(
    clean_logits: Tensor, adv_logits: Tensor, y: Tensor, beta: float
) -> tuple[Tensor, Tensor, Tensor]:
    """(total, natural CE, robust KL); the KL target ``p_S(x)`` keeps its gradient."""
    natural = F.cross_entropy(clean_logits, y)
    robust = kl(F.softmax(clean_logits, 1), F.log_softmax(adv_logits, 1), "batchmean")
    return natural + beta * robust, natural, robust


@register_method("trades")
class TRADES(Method):
    needs_teacher = False
    defaults = {"beta": 6.0, "init": "normal"}
    choices = {"init": ("normal", "uniform")}
    nonnegative = ("beta",)

    def perturb(
        self, student: nn.Module, teacher: nn.Module | None, x: Tensor, y: Tensor
    ) -> Tensor:
        with eval_mode(student):
            with torch.no_grad():
                p_clean = F.softmax(student(x), 1)
            return self.pgd(
                lambda xa: kl(p_clean, F.log_softmax(student(xa), 1), "sum"), x, self.init
            )

    def loss(self, student, teacher, x, x_adv, y, epoch: int = 0) -> tuple[Tensor, dict[str, Any]]:
        clean_logits = student(x)
        adv_logits = student(x_adv)
        total, natural, robust = trades_loss(clean_logits, adv_logits, y, self.beta)
        return total, {"ce_clean": natural.detach(), "kl_adv": robust.detach()}
