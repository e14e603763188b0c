"""DGAD (``dgad``): "Dynamic Guidance Adversarial Distillation with Enhanced Teacher Knowledge",
ECCV 2024, arXiv 2409.01627 (official code: kunsaram01/DGAD ``main.py``, method ``DGAD``, and
``AT_helper.py:adaad_inner_loss``, commit a0329c860570484e0835108985954f30bbb374ee; every
default follows it).

    inner:  as AdaAD on the whole batch: x' = argmax Σ KL(p_T(x') ‖ p_S(x')) through both nets,
            start x + 0.001·N(0, I) not clipped before the first gradient, student BN eval
    with z = T(x), z' = T(x') (no gradient, fp32):
      MAP        m_i = [argmax z_i ≠ y_i]: teacher-wrong samples (ST subset) are distilled on the
                 clean input, teacher-right ones (AT subset) on the adversarial input
      ELS clean  for m_i = 1 swap z_{i,y_i} ↔ z_{i,argmax z_i}
      ELS adv    where z'_{i,y_i} − max_{c≠y_i} z'_{i,c} < 0, swap z'_{i,y_i} with that
                 top wrong logit
      L_ST  = (1/(n_ST + 1e-10)) Σ_i m_i KL(σ(z̃_i) ‖ p_S(x_i))
      L_AT  = (1/(B − n_ST)) Σ_i (1 − m_i) KL(σ(z̃'_i) ‖ p_S(x'_i))        (0 when n_ST = B)
      L_PCR = (1/(B·C)) Σ_{i,c} (p_S(x'_i)_c − p_S(x_i)_c)²   (gradient through both branches)
      L     = (n_ST/B) L_ST + ((B − n_ST)/B) L_AT + gamma · L_PCR
    train-mode student forwards per step: S(x), S(x'), as the official loop

Ablations (the paper's Table 2) are switches: ``map`` (False: every sample on x'),
``els_clean``, ``els_adv``, ``pcr``. Label correction (Table 3): ``label_fix`` = ``swap``,
``smooth`` ((1 − smoothing)·onehot(y) + smoothing/C replaces the corrected sample's teacher
distribution) or ``mix`` (mix·p_T + (1 − mix)·onehot(y)).

MobileNetV2 students (the official ``--model mobilenetV2``): with PCR on (``--alp on``), the
official code weights the KD terms by 0.5 with a misplaced parenthesis, multiplying them:
0.5·[(n_ST/B) L_ST + (B − n_ST)/B]·L_AT + gamma·L_PCR. With PCR off it uses the formula above
(no 0.5 at all), for every student. The paper's MobileNetV2 numbers come from that code, so it
is the default: ``mobilenet_weighting = "literal"``. ``"intended"`` moves the parenthesis,
0.5·[(n_ST/B) L_ST + ((B − n_ST)/B) L_AT] + gamma·L_PCR, in the PCR branch only (a documented
deviation, for comparison); ``"off"`` uses the formula above for every student in every branch.

Deviations, documented:
- B is the actual batch length; the official weights use the nominal ``--bs`` 128, which
  differs only on the short last batch of an epoch.
- Broken official code, done as the authors evidently meant: when every sample of a batch is
  teacher-wrong (n_ST = B), the official ``1 / (len(adv_inputs) − num_lambda)`` divides a Python
  float by zero (ZeroDivisionError); here L_AT = 0, the empty AT subset's evident contribution.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from methods.adaad import adaptive_attack
from methods.base import Method, register_method
from methods.common import (
    forward_both,
    full_precision,
    kl,
    margin,
    swap_logits,
    top_wrong_class,
)

LABEL_FIXES = ("swap", "smooth", "mix")


def corrected_target(
    logits: Tensor,
    y: Tensor,
    fix: Tensor,
    wrong: Tensor,
    *,
    label_fix: str,
    smoothing: float,
    mix: float,
) -> Tensor:
    """The teacher distribution with the samples in ``fix`` corrected towards ``y``."""
    if label_fix == "swap":
        return F.softmax(swap_logits(logits, y, wrong, fix), 1)
    probs = F.softmax(logits, 1)
    onehot = F.one_hot(y, logits.shape[1]).to(probs.dtype)
    if label_fix == "smooth":
        fixed = (1 - smoothing) * onehot + smoothing / logits.shape[1]
    else:
        fixed = mix * probs + (1 - mix) * onehot
    return torch.where(fix[:, None], fixed, probs)


@full_precision
def dgad_loss(
    clean_logits: Tensor,
    adv_logits: Tensor,
    teacher_clean_logits: Tensor,
    teacher_adv_logits: Tensor,
    y: Tensor,
    *,
    gamma: float = 5.0,
    map: bool = True,
    els_clean: bool = True,
    els_adv: bool = True,
    pcr: bool = True,
    label_fix: str = "swap",
    smoothing: float = 0.1,
    mix: float = 0.5,
    weighting: str = "standard",
) -> tuple[Tensor, dict[str, Tensor]]:
    """DGAD's outer loss; ``weighting``: ``standard``, or MobileNetV2's ``literal``/``intended``,
    which (as in the official code) apply only with PCR on."""
    B = len(y)
    z, z_adv = teacher_clean_logits.detach(), teacher_adv_logits.detach()
    st = z.argmax(1) != y if map else torch.zeros(B, dtype=torch.bool, device=y.device)
    n_st = st.sum().to(clean_logits.dtype)
    fix_clean = st if els_clean else torch.zeros_like(st)
    fix_adv = margin(z_adv, y) < 0 if els_adv else torch.zeros_like(st)
    opts = {"label_fix": label_fix, "smoothing": smoothing, "mix": mix}
    target_clean = corrected_target(z, y, fix_clean, z.argmax(1), **opts)
    target_adv = corrected_target(z_adv, y, fix_adv, top_wrong_class(z_adv, y), **opts)

    kl_clean = kl(target_clean, F.log_softmax(clean_logits, 1), "none")
    kl_adv = kl(target_adv, F.log_softmax(adv_logits, 1), "none")
    stf = st.to(kl_clean.dtype)
    l_st = (stf * kl_clean).sum() / (n_st + 1e-10)
    n_at = B - n_st
    l_at = ((1 - stf) * kl_adv).sum() / n_at.clamp(min=1.0)
    l_pcr = (F.softmax(adv_logits, 1) - F.softmax(clean_logits, 1)).pow(2).mean()

    if not pcr:  # the official ``--alp off`` branch: no MobileNetV2 weighting at all
        loss = (n_st / B) * l_st + (n_at / B) * l_at
    elif weighting == "literal":
        loss = 0.5 * ((n_st / B) * l_st + n_at / B) * l_at + gamma * l_pcr
    elif weighting == "intended":
        loss = 0.5 * ((n_st / B) * l_st + (n_at / B) * l_at) + gamma * l_pcr
    else:
        loss = (n_st / B) * l_st + (n_at / B) * l_at + gamma * l_pcr
    logs = {"st_fraction": n_st / B, "l_st": l_st, "l_at": l_at, "l_pcr": l_pcr}
    return loss, {k: v.detach() for k, v in logs.items()}


def is_mobilenet_v2(model: nn.Module) -> bool:
    return type(model).__name__.lower().replace("_", "") == "mobilenetv2"


@register_method("dgad")
class DGAD(Method):
    defaults = {
        "gamma": 5.0,
        "map": True,
        "els_clean": True,
        "els_adv": True,
        "pcr": True,
        "label_fix": "swap",
        "smoothing": 0.1,
        "mix": 0.5,
        "mobilenet_weighting": "literal",
    }
    choices = {"label_fix": LABEL_FIXES, "mobilenet_weighting": ("literal", "intended", "off")}
    nonnegative = ("gamma",)
    unit = ("smoothing", "mix")

    def perturb(
        self, student: nn.Module, teacher: nn.Module | None, x: Tensor, y: Tensor
    ) -> Tensor:
        return adaptive_attack(self, student, teacher, x)

    def loss(self, student, teacher, x, x_adv, y, epoch: int = 0) -> tuple[Tensor, dict[str, Any]]:
        clean_logits, adv_logits, t_clean, t_adv = forward_both(student, teacher, x, x_adv)
        weighting = "standard"
        if self.mobilenet_weighting != "off" and is_mobilenet_v2(student):
            weighting = self.mobilenet_weighting
        return dgad_loss(
            clean_logits,
            adv_logits,
            t_clean,
            t_adv,
            y,
            gamma=self.gamma,
            map=self.map,
            els_clean=self.els_clean,
            els_adv=self.els_adv,
            pcr=self.pcr,
            label_fix=self.label_fix,
            smoothing=self.smoothing,
            mix=self.mix,
            weighting=weighting,
        )
