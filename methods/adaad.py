"""AdaAD (``adaad``): Huang et al., "Boosting Accuracy and Robustness of Student Models via
Adaptive Adversarial Distillation", CVPR 2023 (official code: boyellow/AdaAD ``main.py``, method
``AdaAD``, and ``AT_helper.py:adaad_inner_loss``, commit
9e5c6e5ff73052af196065439517562d37eff6e6; every default follows it).

    inner:  x' = argmax Σ_{i,c} KL(p_T(x'_i) ‖ p_S(x'_i))  with BOTH models at x' and the gradient
            flowing through both (the teacher output is not detached); start x + 0.001·N(0, I),
            not clipped before the first gradient; student BN eval, teacher eval
    outer:  L = alpha · KL(p_T(x') ‖ p_S(x')) + (1 − alpha) · KL(p_T(x) ‖ p_S(x)),
            teacher no-grad, ``kl_reduction`` = elementwise (official CIFAR-10 code) or
            batchmean (its CIFAR-100 code)
    train-mode student forwards per step: S(x), S(x'), as the official loop

The repository's ``Plain_Madry`` baseline is ``pgd-at`` (methods/pgd_at.py).
"""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from harness.utils.modes import eval_mode
from methods.base import Method, register_method
from methods.common import REDUCTIONS, forward_both, full_precision, kl, kl_logits


def adaptive_attack(method: Method, student: nn.Module, teacher: nn.Module, x: Tensor) -> Tensor:
    """AdaAD's (and DGAD's) inner loop: maximise KL(p_T(x') ‖ p_S(x')) through both networks."""

    def objective(xa: Tensor) -> Tensor:
        return kl(F.softmax(teacher(xa), 1), F.log_softmax(student(xa), 1), "sum")

    with eval_mode(student, teacher):
        return method.pgd(objective, x, "normal")


@full_precision
def adaad_loss(
    adv_logits: Tensor,
    clean_logits: Tensor,
    teacher_adv_logits: Tensor,
    teacher_clean_logits: Tensor,
    *,
    alpha: float,
    kl_reduction: str,
) -> Tensor:
    adv = kl_logits(teacher_adv_logits, adv_logits, 1.0, kl_reduction)
    clean = kl_logits(teacher_clean_logits, clean_logits, 1.0, kl_reduction)
    return alpha * adv + (1 - alpha) * clean


@register_method("adaad")
class AdaAD(Method):
    defaults = {"alpha": 1.0, "kl_reduction": "elementwise"}
    choices = {"kl_reduction": REDUCTIONS[:3]}
    unit = ("alpha",)

    def perturb(
        self, student: nn.Module, teacher: nn.Module | None, x: Tensor, y: Tensor
    ) -> Tensor:
        return adaptive_attack(self, student, teacher, x)

    def loss(self, student, teacher, x, x_adv, y, epoch: int = 0) -> tuple[Tensor, dict[str, Any]]:
        clean_logits, adv_logits, t_clean, t_adv = forward_both(student, teacher, x, x_adv)
        loss = adaad_loss(
            adv_logits,
            clean_logits,
            t_adv,
            t_clean,
            alpha=self.alpha,
            kl_reduction=self.kl_reduction,
        )
        return loss, {}
