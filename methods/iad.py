"""IAD (``iad``, IAD-I): Zhu et al., "Reliable Adversarial Distillation with Unreliable
Teachers", ICLR 2022 (official code: ZFancy/IAD, ``IAD-I``).

    inner:  as ARD (CE, uniform start, student in train mode)
    outer:  L = alpha · τ² · (1/B) Σ_i KL(σ(T(x_i)/τ) ‖ σ(S(x'_i)/τ))
              + [epoch ≥ warmup_epochs] · alpha · (1/B) Σ_i (1 − w_i) · KL(p_S(x_i) ‖ p_S(x'_i))
              + (1 − alpha) · CE(S(x), y)
    with w_i = p_T(x'_i)_{y_i} ** beta (teacher on the adversarial input, τ = 1, no gradient).
    ``p_S(x)`` is a clean student forward in train mode and is NOT detached.

Train-mode student forwards per step, as ``IAD-I.py`` makes them: the 10 attack steps; S(x')
(the loss's); S(x') again (``basicop``, never used); then S(x) for the introspection term's
target (from ``warmup_epochs`` on) and S(x) for the CE term (computed even at alpha = 1):
13 passes before the warm-up ends, 14 after. The passes whose outputs the loss does not need
(``basicop``, and the second clean pass, identical to the first) run without gradient, since
they only move the BN running statistics; ``extra_passes = false`` drops them for speed
(12 passes).
"""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from methods.base import Method, register_method
from methods.common import (
    bn_passes,
    ce_attack,
    cross_entropy,
    full_precision,
    kl,
    kl_logits,
    teacher_outputs,
)


@full_precision
def iad_loss(
    adv_logits: Tensor,
    clean_logits: Tensor,
    teacher_clean_logits: Tensor,
    teacher_adv_logits: Tensor,
    y: Tensor,
    *,
    alpha: float,
    temperature: float,
    beta: float,
    introspect: bool,
    weights: Tensor | None = None,
    ce_input: str = "clean",
) -> Tensor:
    """``weights``: Fair-IAD's per-sample class weights on every term (None: IAD). ``ce_input``:
    what the (1 − alpha) CE term sees: ``clean`` (IAD-I.py), ``adv`` (Fair-IAD.py, from the
    warm-up on) or ``none`` (Fair-IAD.py before the warm-up ends: no CE term)."""
    kd = kl_logits(teacher_clean_logits, adv_logits, temperature, "batchmean", weights)
    loss = alpha * temperature**2 * kd
    if introspect:
        w = F.softmax(teacher_adv_logits, 1).gather(1, y[:, None]).squeeze(1).pow(beta).detach()
        self_w = 1 - w if weights is None else (1 - w) * weights
        self_kl = kl(F.softmax(clean_logits, 1), F.log_softmax(adv_logits, 1), "none")
        loss = loss + alpha * (self_w * self_kl).sum() / len(y)
    if ce_input == "none":
        return loss
    ce_logits = clean_logits if ce_input == "clean" else adv_logits
    return loss + (1 - alpha) * cross_entropy(ce_logits, y, weights)


@register_method("iad")
class IAD(Method):
    defaults = {
        "alpha": 1.0,
        "temperature": 1.0,
        "beta": 0.1,
        "warmup_epochs": 60,
        "extra_passes": True,
    }
    positive = ("temperature",)
    nonnegative = ("beta", "warmup_epochs")
    unit = ("alpha",)

    def perturb(
        self, student: nn.Module, teacher: nn.Module | None, x: Tensor, y: Tensor
    ) -> Tensor:
        return ce_attack(self, student, x, y, "uniform", bn_train=True)

    def loss(self, student, teacher, x, x_adv, y, epoch: int = 0) -> tuple[Tensor, dict[str, Any]]:
        introspect = epoch >= self.warmup_epochs
        adv_logits = student(x_adv)
        if self.extra_passes:
            bn_passes(student, x_adv)  # the official ``basicop``
        clean_logits = student(x)
        if self.extra_passes and introspect:
            bn_passes(student, x)  # the official loop's second clean forward
        t_clean, t_adv = teacher_outputs(teacher, x, x_adv)
        loss = iad_loss(
            adv_logits,
            clean_logits,
            t_clean,
            t_adv,
            y,
            alpha=self.alpha,
            temperature=self.temperature,
            beta=self.beta,
            introspect=introspect,
            weights=self.sample_weights(y),
        )
        return loss, {}
