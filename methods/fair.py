"""Fair-ARD, Fair-IAD, Fair-RSLAD, Fair-MTARD: Yue et al., "Revisiting Adversarial Robustness
Distillation from the Perspective of Robust Fairness", NeurIPS 2023 (official code:
NISP-official/Fair-ARD ``Fair-ARD.py``, ``Fair-IAD.py``, ``Fair-RSLAD.py``, ``Fair-MTARD.py``,
commit 910c8cd17b16457615ac507f36e31bc44e8fb6fa; every default follows it).

One re-weighting, added to four distillation methods by inheritance (``FairARD(FairReweighting,
ARD)``): the base method's loss, each sample's terms multiplied by its class's weight.

    κ_i    = how many of the attack's forwards (x_0 … x_{steps−1}, before each gradient step, in
             the base attack's BN mode) classify sample i correctly: its ``Kappa``
    κ̄_c    = Σ_{i: y_i = c} κ_i / (N / C)  over the epoch's N images (its ``Kappa_total``)
    v_c    = (1 / (κ̄_c + fair_eps)) ** fair_beta
    w_c    = clamp(C · v_c / Σ_k v_k, 5/6, 5/2)     (``weight_assign``)
    the weights start at 1, are recomputed after every epoch (``end_epoch``) and apply from the
    first epoch on; each term of the base loss is Σ_i w_{y_i} (…)_i with the base reduction.

The counts accumulate on the device during the steps (no host read) and, with the weights, are
saved with the run's checkpoint (``register_state``), so a resumed run is exact.

Per script, where it differs from its base method:

- ``fair-ard`` (Fair-ARD.py): ARD as ``methods/ard.py`` (τ 30, alpha 1, elementwise KL; CE on
  S(x)), weighted. fair_eps 1e-5.
- ``fair-iad`` (Fair-IAD.py): its loop differs from IAD-I.py: train-mode forwards S(x'), S(x),
  then ``basicop`` S(x') (13 per step in both phases, against IAD-I's 13 then 14), and the
  (1 − alpha) CE term is on S(x') from ``warmup_epochs`` on and absent before (zero at the
  official alpha = 1 either way). The introspection term is weighted by (1 − p_T(x')_y^β)·w.
  fair_eps 1e-5.
- ``fair-rslad`` (Fair-RSLAD.py): RSLAD, weighted; its ``weight_assign`` has no 1e-5
  (fair_eps 0: a class never classified correctly makes every weight NaN, as there).
- ``fair-mtard`` (Fair-MTARD.py): MTARD with both terms weighted (the adaptive weights read the
  weighted losses). Its code distils S(x) towards the ROBUST teacher on x' (``kl_Loss2`` uses
  ``teacher_adv_logits``; the natural teacher's output is computed and never used), unlike the
  paper's MTARD: the code is followed, ``nat_target = "robust_adv"``; ``"natural"`` gives the
  paper's. It still takes both teachers, as the script loads both. fair_eps 1e-5.

Official CIFAR-10 schedules (all: batch 128, SGD momentum 0.9, weight decay 2e-4, NESTEROV):

- Fair-ARD, Fair-IAD: 200 epochs, lr 0.1, ``--lr_schedule 100 150``; but ``adjust_learning_rate``
  multiplies the INITIAL lr by 0.1 at each listed epoch, so the lr is 0.1 until epoch 99 and
  0.01 from 100 on (epoch 150 sets 0.01 again), as in ARD's own main.py: in effect
  ``milestones = [100]``.
- Fair-RSLAD, Fair-MTARD: 300 epochs, lr 0.1, ÷10 after epochs 215, 260, 285
  (``milestones = [215, 260, 285]``); Fair-MTARD's weight_lr decays with it, as MTARD's.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from harness.utils.modes import eval_mode
from methods.ard import ARD
from methods.base import Teachers, register_method
from methods.common import bn_passes, teacher_outputs
from methods.iad import IAD, iad_loss
from methods.mtard import MTARD
from methods.rslad import RSLAD

FAIR_DEFAULTS: dict[str, Any] = {"fair_beta": 2.0, "fair_eps": 1e-5}
FAIR_NONNEGATIVE = ("fair_beta", "fair_eps")
CLAMP = (5 / 6, 5 / 2)


def class_weights(kappa: Tensor, beta: float, eps: float) -> Tensor:
    """Fair-ARD's ``weight_assign``: (1/(κ̄ + eps))**beta scaled to sum to C, clamped."""
    reweight = (1 / (kappa + eps)) ** beta
    reweight = reweight * (len(kappa) / torch.sum(reweight))
    return torch.clamp(reweight, min=CLAMP[0], max=CLAMP[1])


class CorrectCounter(nn.Module):
    """The student as the attack sees it, counting per sample the forwards that classify it
    correctly (the official ``Kappa``); the student's own modes and outputs are unchanged."""

    def __init__(self, student: nn.Module, y: Tensor) -> None:
        super().__init__()
        self.student = student
        self.y = y
        self.correct = torch.zeros(len(y), dtype=torch.long, device=y.device)

    def forward(self, x: Tensor) -> Tensor:
        logits = self.student(x)
        self.correct += logits.detach().argmax(1) == self.y
        return logits


class FairReweighting:
    """The class-wise re-weighting; put it first among the bases of a method whose loss passes
    ``self.sample_weights(y)`` on (ARD, IAD, RSLAD, MTARD)."""

    fair_beta: float
    fair_eps: float

    def setup(self, student: nn.Module, teacher: Teachers, x: Tensor) -> None:
        super().setup(student, teacher, x)  # type: ignore[misc]
        self._init_counts(student, x)

    def _init_counts(self, student: nn.Module, x: Tensor) -> None:
        """The per-class state, sized by the student's output (once)."""
        if hasattr(self, "class_weight"):
            return
        with torch.no_grad(), eval_mode(student):
            classes = student(x[:2]).shape[1]
        register = self.register_state  # type: ignore[attr-defined]
        register("class_weight", torch.ones(classes, device=x.device))
        register("kappa", torch.zeros(classes, dtype=torch.long, device=x.device))
        register("seen", torch.zeros((), dtype=torch.long, device=x.device))

    def perturb(self, student: nn.Module, teacher: Teachers, x: Tensor, y: Tensor) -> Tensor:
        self._init_counts(student, x)
        counter = CorrectCounter(student, y)
        x_adv = super().perturb(counter, teacher, x, y)  # type: ignore[misc]
        self.kappa.index_add_(0, y, counter.correct)
        self.seen += len(y)
        return x_adv

    def sample_weights(self, y: Tensor) -> Tensor:
        return self.class_weight[y]

    def end_epoch(self, epoch: int, lr_scale: float = 1.0) -> None:
        super().end_epoch(epoch, lr_scale)  # type: ignore[misc]
        if not hasattr(self, "class_weight"):
            return
        per_class = self.seen.double() / len(self.kappa)
        kappa = self.kappa.float() / per_class.float()
        new = class_weights(kappa, self.fair_beta, self.fair_eps)
        self.class_weight = torch.where(self.seen > 0, new, self.class_weight)
        self.kappa.zero_()
        self.seen.zero_()


@register_method("fair-ard")
class FairARD(FairReweighting, ARD):
    """Fair-ARD (fair-ard): Yue et al., "Revisiting Adversarial Robustness Distillation from the
    Perspective of Robust Fairness", NeurIPS 2023; ARD with class-wise weights."""

    defaults = {**ARD.defaults, **FAIR_DEFAULTS}
    nonnegative = (*ARD.nonnegative, *FAIR_NONNEGATIVE)


@register_method("fair-rslad")
class FairRSLAD(FairReweighting, RSLAD):
    """Fair-RSLAD (fair-rslad): Yue et al., "Revisiting Adversarial Robustness Distillation from the
    Perspective of Robust Fairness", NeurIPS 2023; RSLAD with class-wise weights."""

    defaults = {**RSLAD.defaults, **FAIR_DEFAULTS, "fair_eps": 0.0}
    nonnegative = (*RSLAD.nonnegative, *FAIR_NONNEGATIVE)


@register_method("fair-mtard")
class FairMTARD(FairReweighting, MTARD):
    """Fair-MTARD (fair-mtard): Yue et al., "Revisiting Adversarial Robustness Distillation from the
    Perspective of Robust Fairness", NeurIPS 2023; MTARD with class-wise weights."""

    defaults = {**MTARD.defaults, **FAIR_DEFAULTS, "nat_target": "robust_adv"}
    nonnegative = (*MTARD.nonnegative, *FAIR_NONNEGATIVE)


@register_method("fair-iad")
class FairIAD(FairReweighting, IAD):
    """Fair-IAD (fair-iad): Yue et al., "Revisiting Adversarial Robustness Distillation from the
    Perspective of Robust Fairness", NeurIPS 2023; IAD with class-wise weights, in
    Fair-IAD.py's loop."""

    defaults = {**IAD.defaults, **FAIR_DEFAULTS}
    nonnegative = (*IAD.nonnegative, *FAIR_NONNEGATIVE)

    def loss(self, student, teacher, x, x_adv, y, epoch: int = 0) -> tuple[Tensor, dict[str, Any]]:
        introspect = epoch >= self.warmup_epochs
        adv_logits = student(x_adv)
        clean_logits = student(x)
        if self.extra_passes:
            bn_passes(student, x_adv)  # Fair-IAD.py's ``basicop``, after the clean forward
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
            ce_input="adv" if introspect else "none",
        )
        return loss, {}
