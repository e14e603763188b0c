"""ARD (``ard``): Goldblum et al., "Adversarially Robust Distillation", AAAI 2020 (official code:
goldblum/AdversariallyRobustDistillation ``main.py``, commit
779ade36d612bddb0a5a705fdd74efe7571a1381; every default follows it).

    inner:  x' = argmax Σ_i CE(S(x'_i), y_i)   (start x + U(−eps, eps), not clipped before the
            first gradient; the student STAYS IN TRAIN MODE: BN uses batch statistics during
            the attack, as the official ``AttackPGD`` module does)
    outer:  L = alpha · τ² · KL(σ(T(x)/τ) ‖ σ(S(x')/τ))  [elementwise: nn.KLDivLoss() default]
              + (1 − alpha) · CE(S(x), y)
    The teacher sees the CLEAN input.
    train-mode student forwards per step: the 10 attack steps, S(x') (``AttackPGD``'s return),
    S(x) (computed even at alpha = 1): 12, as the official loop
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from methods.base import Method, register_method
from methods.common import (
    REDUCTIONS,
    ce_attack,
    cross_entropy,
    full_precision,
    kl_logits,
    teacher_outputs,
)


@full_precision
def ard_loss(
    adv_logits: Tensor,
    clean_logits: Tensor,
    teacher_clean_logits: Tensor,
    y: Tensor,
    *,
    alpha: float,
    temperature: float,
    kl_reduction: str,
    weights: Tensor | None = None,
) -> Tensor:
    """``weights``: Fair-ARD's per-sample class weights on both terms (None: ARD)."""
    kd = kl_logits(teacher_clean_logits, adv_logits, temperature, kl_reduction, weights)
    return alpha * temperature**2 * kd + (1 - alpha) * cross_entropy(clean_logits, y, weights)


@register_method("ard")
class ARD(Method):
    defaults = {"alpha": 1.0, "temperature": 30.0, "kl_reduction": "elementwise"}
    choices = {"kl_reduction": REDUCTIONS[:3]}
    positive = ("temperature",)
    unit = ("alpha",)

    def perturb(
        self, student: nn.Module, teacher: nn.Module | None, x: Tensor, y: Tensor
    ) -> Tensor:
        return ce_attack(self, student, x, y, "uniform", bn_train=True)

    def loss(self, student, teacher, x, x_adv, y, epoch: int = 0) -> tuple[Tensor, dict[str, Any]]:
        adv_logits = student(x_adv)
        clean_logits = student(x)
        (t_clean,) = teacher_outputs(teacher, x)
        loss = ard_loss(
            adv_logits,
            clean_logits,
            t_clean,
            y,
            alpha=self.alpha,
            temperature=self.temperature,
            kl_reduction=self.kl_reduction,
            weights=self.sample_weights(y),
        )
        return loss, {}
