"""Carlini–Wagner L2 as an attack object, with the semantics of advertorch's
``CarliniWagnerL2Attack`` (advertorch 0.2.3), the paper's white-box L2 evaluation.

The model is put in eval mode for the attack and left in the mode it was found in; gradients are
taken with respect to the perturbation only, so no parameter ``.grad`` is touched; nothing is
random.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from harness.attacks.base import Attack
from harness.registry import ATTACKS
from harness.utils.errors import UserError
from harness.utils.modes import eval_mode

# advertorch's constants, same names and values
CARLINI_L2DIST_UPPER = 1e10
CARLINI_COEFF_UPPER = 1e10
INVALID_LABEL = -1
REPEAT_STEP = 10
ONE_MINUS_EPS = 0.999999
UPPER_CHECK = 1e9
PREV_LOSS_INIT = 1e6
TARGET_MULT = 10000.0
NUM_CHECKS = 10


def cw_hinge(logits: Tensor, y_onehot: Tensor, confidence: float) -> Tensor:
    """Per-sample untargeted CW term ``max(Z_y − max_{j≠y} Z_j + confidence, 0)``.

    The true class is kept out of the max by subtracting ``TARGET_MULT`` from its (zeroed)
    entry, not by zeroing alone: when every other logit is negative a zero would win the max.
    """
    real = (y_onehot * logits).sum(1)
    other = ((1.0 - y_onehot) * logits - y_onehot * TARGET_MULT).max(1).values
    return torch.clamp(real - other + confidence, min=0.0)


def cw_success(logits: Tensor, y: Tensor, confidence: float) -> Tensor:
    """Untargeted success with confidence: the argmax of the logits with ``confidence`` added to
    the true class is not the true class."""
    adjusted = logits.detach().clone()
    adjusted[torch.arange(len(y), device=y.device), y] += confidence
    return adjusted.argmax(1) != y


def tanh_space(x: Tensor, clip_min: float, clip_max: float) -> Tensor:
    """``arctanh((clamp((x − min)/(max − min), 0, 1)·2 − 1) · ONE_MINUS_EPS)``."""
    s = torch.clamp((x - clip_min) / (clip_max - clip_min), 0.0, 1.0) * 2 - 1
    s = s * ONE_MINUS_EPS
    return 0.5 * torch.log((1 + s) / (1 - s))


def from_tanh_space(w: Tensor, clip_min: float, clip_max: float) -> Tensor:
    """``tanh(w)·(max − min)/2 + (max + min)/2``: always strictly inside (min, max)."""
    return torch.tanh(w) * 0.5 * (clip_max - clip_min) + 0.5 * (clip_max + clip_min)


def carlini_wagner_l2(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    c: float = 0.1,
    confidence: float = 0.0,
    steps: int = 1000,
    lr: float = 0.01,
    binary_search_steps: int = 1,
    abort_early: bool = True,
    clip_min: float = 0.0,
    clip_max: float = 1.0,
) -> tuple[Tensor, Tensor]:
    """Untargeted CW-L2 on one batch; returns ``(x_adv, fooled)``, both detached.

    Runs ``model`` as given (the caller decides its mode). Computation is in ``x.dtype``.
    ``x_adv[i]`` is the smallest-L2 successful iterate found for sample i, else the clean
    ``x[i]``; ``fooled[i]`` says which. The batch matters: early abort watches the batch's summed
    loss, as in advertorch.
    """
    x = x.detach()
    y = y.detach().to(device=x.device, dtype=torch.long)
    n, dev, dt = len(x), x.device, x.dtype
    x_atanh = tanh_space(x, clip_min, clip_max)
    x_ref = from_tanh_space(x_atanh, clip_min, clip_max)  # distances are measured from here
    flat = (n, *([1] * (x.dim() - 1)))

    const = torch.full((n,), float(c), device=dev, dtype=dt)
    lower = torch.zeros(n, device=dev, dtype=dt)
    upper = torch.full((n,), CARLINI_COEFF_UPPER, device=dev, dtype=dt)
    final_l2 = torch.full((n,), CARLINI_L2DIST_UPPER, device=dev, dtype=dt)
    final_adv = x.clone()
    y_onehot: Tensor | None = None
    check_every = steps // NUM_CHECKS or 1

    for outer in range(binary_search_steps):
        if binary_search_steps >= REPEAT_STEP and outer == binary_search_steps - 1:
            const = upper.clone()  # the last of many searches reruns at the best known const
        delta = torch.zeros_like(x, requires_grad=True)
        optimizer = torch.optim.Adam([delta], lr=lr)
        cur_l2 = torch.full((n,), CARLINI_L2DIST_UPPER, device=dev, dtype=dt)
        cur_label = torch.full((n,), INVALID_LABEL, device=dev, dtype=torch.long)
        prev_loss = PREV_LOSS_INIT

        for step in range(steps):
            adv = from_tanh_space(delta + x_atanh, clip_min, clip_max)
            logits = model(adv)
            if y_onehot is None:
                y_onehot = torch.zeros_like(logits).scatter_(1, y[:, None], 1.0)
            l2 = (adv - x_ref).pow(2).flatten(1).sum(1)
            loss = l2.sum() + (const * cw_hinge(logits, y_onehot, confidence)).sum()
            (delta.grad,) = torch.autograd.grad(loss, [delta])
            optimizer.step()

            # the check sees the loss before this step's update; on abort, this iterate is
            # not considered as a candidate (advertorch breaks before its bookkeeping)
            if abort_early and step % check_every == 0:
                loss_value = loss.item()
                if loss_value > prev_loss * ONE_MINUS_EPS:
                    break
                prev_loss = loss_value

            logits, l2, adv = logits.detach(), l2.detach(), adv.detach()
            ok = cw_success(logits, y, confidence)
            better = ok & (l2 < cur_l2)
            cur_l2 = torch.where(better, l2, cur_l2)
            cur_label = torch.where(better, logits.argmax(1), cur_label)
            better = ok & (l2 < final_l2)
            final_l2 = torch.where(better, l2, final_l2)
            final_adv = torch.where(better.view(flat), adv, final_adv)

        # binary search on const: success lowers the upper bound, failure raises the lower one;
        # bisect once an upper bound is known, else grow const tenfold
        succeeded = (cur_label != INVALID_LABEL) & (cur_label != y)
        upper = torch.where(succeeded, torch.minimum(upper, const), upper)
        lower = torch.where(succeeded, lower, torch.maximum(lower, const))
        known = upper < UPPER_CHECK
        const = torch.where(known, (lower + upper) / 2, torch.where(succeeded, const, const * 10))

    return final_adv.detach(), final_l2 < CARLINI_L2DIST_UPPER


@ATTACKS.register("cw2")
class CW2(Attack):
    """Carlini–Wagner L2, untargeted, as advertorch's ``CarliniWagnerL2Attack`` (0.2.3).

    Parameters map to advertorch's: ``c`` = ``initial_const``, ``steps`` = ``max_iterations``,
    ``lr`` = ``learning_rate``; defaults are the paper's protocol (c 0.1, confidence 0, 1000
    Adam steps at lr 0.01, one binary-search step, early abort, box [0,1]). No eps bound.

    Semantics, as in advertorch:

    - Variable: a ``modifier`` δ (zeros at the start of each binary-search step, a fresh Adam
      with torch defaults) added in tanh space: ``x_adv = tanh_rescale(δ + arctanh(s))`` with
      ``s = (clamp((x − min)/(max − min), 0, 1)·2 − 1)·ONE_MINUS_EPS`` and
      ``tanh_rescale(w) = tanh(w)·(max − min)/2 + (max + min)/2``. The L2 distance is measured
      to ``tanh_rescale(arctanh(s))`` (x shrunk by 1e-6 towards the box centre), not to x.
    - Loss: ``Σ_i ‖x_adv_i − x_i‖² + Σ_i c_i · max(Z_y − max_{j≠y} Z_j + confidence, 0)``
      (sums over the batch). The true class is excluded from the max by subtracting
      ``TARGET_MULT = 1e4`` from its masked entry, so negative logits are handled.
    - Success: ``argmax(Z + confidence·onehot(y)) ≠ y``.
    - Each step first evaluates the current iterate, then takes the Adam step. Early abort:
      every ``max(steps // 10, 1)`` steps (from step 0) stop if that pre-step summed loss is
      ``> prev · 0.999999`` (prev starts at 1e6), else remember it. The iterate of the aborting
      step is not a candidate; every other evaluated iterate that succeeds with a smaller L2
      than the best so far replaces it.
    - Binary search (``binary_search_steps > 1``): per sample, success in the step (any
      successful iterate) sets ``upper = min(upper, c)``, failure ``lower = max(lower, c)``;
      then ``c = (lower + upper)/2`` if ``upper < 1e9``, else ``c`` is kept on success and
      multiplied by 10 on failure. With ``binary_search_steps >= 10`` the last step runs at
      ``c = upper``.
    - Result: per sample the smallest-L2 successful iterate over all steps, else the clean x.
      Early abort watches the whole batch's loss, so results depend on the batch, as there.

    Computation is in the input's dtype (fp32 in evaluation), on the input's device.
    """

    def __init__(
        self,
        c: float = 0.1,
        confidence: float = 0.0,
        steps: int = 1000,
        lr: float = 0.01,
        binary_search_steps: int = 1,
        abort_early: bool = True,
        clip_min: float = 0.0,
        clip_max: float = 1.0,
        seed: int = 0,
    ) -> None:
        super().__init__(seed)
        if float(c) < 0 or float(lr) <= 0:
            raise UserError(f"CW2 needs c >= 0 and lr > 0, got c = {c}, lr = {lr}")
        if int(steps) < 0 or int(binary_search_steps) < 1:
            raise UserError(
                f"CW2 needs steps >= 0 and binary_search_steps >= 1, "
                f"got {steps}, {binary_search_steps}"
            )
        if not float(clip_min) < float(clip_max):
            raise UserError(f"CW2 needs clip_min < clip_max, got {clip_min}, {clip_max}")
        self.c = float(c)
        self.confidence = float(confidence)
        self.steps = int(steps)
        self.lr = float(lr)
        self.binary_search_steps = int(binary_search_steps)
        self.abort_early = bool(abort_early)
        self.clip_min = float(clip_min)
        self.clip_max = float(clip_max)

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        with eval_mode(model):
            x_adv, _ = carlini_wagner_l2(
                model,
                x,
                y,
                c=self.c,
                confidence=self.confidence,
                steps=self.steps,
                lr=self.lr,
                binary_search_steps=self.binary_search_steps,
                abort_early=self.abort_early,
                clip_min=self.clip_min,
                clip_max=self.clip_max,
            )
        return x_adv
