"""RSLAD (``rslad``): Zi et al., "Revisiting Adversarial Robustness Distillation: Robust Soft
Labels Make Student Better", ICCV 2021 (official code: zibojia/RSLAD ``rslad_loss.py`` and
``resnet18_rslad_cifar10.py``, commit c40e04f6c4edcd87431d0250b168d503b1293745; every default
follows it).

    inner:  x' = argmax Σ_{i,c} KL(p_T(x_i) ‖ p_S(x'_i))  with the teacher's CLEAN output fixed
            (start x + 0.001·N(0, I), not clipped before the first gradient, as
            ``rslad_inner_loss``; student BN eval)
    outer:  L = adv_weight · KL(p_T(x) ‖ p_S(x')) + clean_weight · KL(p_T(x) ‖ p_S(x)),
            both reduced ``elementwise`` (the official ``torch.mean`` over i and c). The official
            ``kl_loss`` is −log q·p + p·log(p + 1e-5): KL up to a constant in the student, so the
            same gradient; the exact KL is computed here. The official CIFAR-100 script
            multiplies each term by 10: set adv_weight and clean_weight accordingly.
    train-mode student forwards per step: S(x'), S(x), as the official loop

Schedule: the repository trains 300 epochs (lr /10 at 215, 260, 285, wd 2e-4); the DGAD paper
says it ran RSLAD on the shared 200-epoch schedule, so the paper grids do, with the
repository's schedule as the variant ``rslad-repo``.
"""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from methods.base import Method, register_method
from methods.common import REDUCTIONS, full_precision, kl, kl_attack, teacher_outputs


@full_precision
def rslad_loss(
    adv_logits: Tensor,
    clean_logits: Tensor,
    teacher_clean_logits: Tensor,
    *,
    adv_weight: float,
    clean_weight: float,
    kl_reduction: str,
    weights: Tensor | None = None,
) -> Tensor:
    """``weights``: Fair-RSLAD's per-sample class weights on both terms (None: RSLAD)."""
    target = F.softmax(teacher_clean_logits, 1)
    adv = kl(target, F.log_softmax(adv_logits, 1), kl_reduction, weights)
    clean = kl(target, F.log_softmax(clean_logits, 1), kl_reduction, weights)
    return adv_weight * adv + clean_weight * clean


@register_method("rslad")
class RSLAD(Method):
    defaults = {"adv_weight": 5 / 6, "clean_weight": 1 / 6, "kl_reduction": "elementwise"}
    choices = {"kl_reduction": REDUCTIONS[:3]}
    nonnegative = ("adv_weight", "clean_weight")

    def perturb(
        self, student: nn.Module, teacher: nn.Module | None, x: Tensor, y: Tensor
    ) -> Tensor:
        target = F.softmax(teacher_outputs(teacher, x)[0], 1)
        return kl_attack(self, student, x, target, "normal")

    def loss(self, student, teacher, x, x_adv, y, epoch: int = 0) -> tuple[Tensor, dict[str, Any]]:
        adv_logits = student(x_adv)
        clean_logits = student(x)
        (t_clean,) = teacher_outputs(teacher, x)
        loss = rslad_loss(
            adv_logits,
            clean_logits,
            t_clean,
            adv_weight=self.adv_weight,
            clean_weight=self.clean_weight,
            kl_reduction=self.kl_reduction,
            weights=self.sample_weights(y),
        )
        return loss, {}
