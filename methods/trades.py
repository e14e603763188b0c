"""TRADES (``trades``): Zhang et al., "Theoretically Principled Trade-off between Robustness and
Accuracy", ICML 2019 (official code: yaodongyu/TRADES ``trades.py:trades_loss``, commit
6e8e11b7c281371c2f027ffadfbaea80361f09de; every default follows it).

    inner:  x' = argmax Σ_i KL(p_S(x_i) ‖ p_S(x'_i))
            start x + 0.001·N(0, I), not clipped before the first gradient; student BN eval
    outer:  L = mean_i CE(S(x_i), y_i) + beta · (1/B) Σ_i KL(p_S(x_i) ‖ p_S(x'_i))
    train-mode student forwards per step: S(x), S(x'), S(x)

The clean target is not detached: the gradient flows through both branches. The official code
runs the clean batch through the student twice in train mode (``logits = model(x_natural)`` for
the CE, then ``model(x_natural)`` again inside the KL), after the adversarial pass. BN in train
mode gives both the same output, so one of them carries the loss and its gradient; the other is
still made (``extra_passes``, without gradient), because it moves the BN running statistics,
and through them, from the second step on, the weights. ``extra_passes = false`` drops it for
speed. (The attack's clean target, which the official
loop recomputes in eval mode at every step, is computed once: eval mode changes nothing.)
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from harness.utils.modes import eval_mode
from methods.base import Method, register_method
from methods.common import bn_passes, full_precision, kl, kl_attack


@full_precision
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
    defaults = {"beta": 6.0, "init": "normal", "extra_passes": True}
    choices = {"init": ("normal", "uniform")}
    nonnegative = ("beta",)

    def perturb(
        self, student: nn.Module, teacher: nn.Module | None, x: Tensor, y: Tensor
    ) -> Tensor:
        with eval_mode(student), torch.no_grad():
            p_clean = F.softmax(student(x), 1)
        return kl_attack(self, student, x, p_clean, self.init)

    def loss(self, student, teacher, x, x_adv, y, epoch: int = 0) -> tuple[Tensor, dict[str, Any]]:
        clean_logits = student(x)
        adv_logits = student(x_adv)
        if self.extra_passes:
            bn_passes(student, x)  # the official KL target's pass: same output as S(x) above
        total, natural, robust = trades_loss(clean_logits, adv_logits, y, self.beta)
        return total, {"ce_clean": natural.detach(), "kl_adv": robust.detach()}
