"""AKD (``akd``): Maroto et al., "On the Benefits of Knowledge Distillation for Adversarial
Robustness", 2022.

    inner:  x' = argmax Σ_i CE(S(x'_i), y_i)   (uniform start, student BN eval)
    outer:  L = −(1/B) Σ_i Σ_c q_ic · log p_S(x'_i)_c
            q = alpha · p_T(x') + (1 − alpha) · onehot(y)  (teacher on the adversarial input, τ = 1)

**Unverified** (Maroto et al. published no code, so nothing official could be checked): the
paper's ``alpha`` (default 0.9 here), and what its "weak" adversarial training means. Both stay
switchable: ``alpha`` is a hyperparameter, and a weaker inner attack is the method's
``eps``/``steps``/``step_size``. The start (x + U(−eps, eps), not clipped before the first
gradient) is the one of the nearest public code, ZFancy/IAD ``AKD2.py`` (commit
a8091a8c7552cef43d8f3f28085426cb786ce9d3), which is Chen et al.'s two-teacher distillation and
not this method: it attacks with the student in train mode (11 train-mode forwards per step);
here the attack keeps BN in eval mode, as Madry-style training does, and the step makes one
train-mode forward, S(x').
"""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from methods.base import Method, register_method
from methods.common import ce_attack, full_precision, soft_cross_entropy, teacher_outputs


@full_precision
def akd_loss(adv_logits: Tensor, teacher_adv_logits: Tensor, y: Tensor, alpha: float) -> Tensor:
    onehot = F.one_hot(y, adv_logits.shape[1]).to(adv_logits.dtype)
    target = alpha * F.softmax(teacher_adv_logits, 1) + (1 - alpha) * onehot
    return soft_cross_entropy(target, adv_logits)


@register_method("akd")
class AKD(Method):
    defaults = {"alpha": 0.9, "init": "uniform"}
    choices = {"init": ("uniform", "normal")}
    unit = ("alpha",)

    def perturb(
        self, student: nn.Module, teacher: nn.Module | None, x: Tensor, y: Tensor
    ) -> Tensor:
        return ce_attack(self, student, x, y, self.init)

    def loss(self, student, teacher, x, x_adv, y, epoch: int = 0) -> tuple[Tensor, dict[str, Any]]:
        (t_adv,) = teacher_outputs(teacher, x_adv)
        return akd_loss(student(x_adv), t_adv, y, self.alpha), {}
