"""The L∞ projected-gradient loop every method and every evaluation attack shares.

One step: ``x ← Π(x + step_size · sign(∇ₓ objective))`` with ``Π`` = clip to the eps-ball
around the clean x, then to [0,1] (Madry et al.; the loop of TRADES, ARD, RSLAD, AdaAD, DGAD).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

INITS = ("uniform", "normal", "none")


def random_start(
    x: Tensor, init: str, eps: float, generator: torch.Generator | None = None
) -> Tensor:
    """``uniform``: x + U(−eps, eps); ``normal``: x + 0.001·N(0, I); ``none``: x.

    Not clipped to [0,1]: most official training loops (TRADES, MART, ARD, IAD, RSLAD, AdaAD,
    DGAD) take their first gradient at the raw start, the projection after each step bringing
    it back. Madry-style loops clip it first: ``pgd_maximize(..., clamp_start=True)``.
    """
    if init == "uniform":
        noise = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        return x + (2 * noise - 1) * eps
    if init == "normal":
        return x + 0.001 * torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    if init == "none":
        return x.clone()
    raise ValueError(f"unknown init {init!r}; valid: {', '.join(INITS)}")


def project(x_adv: Tensor, x: Tensor, eps: float) -> Tensor:
    """Clip to the L∞ ball of radius eps around x, then to the image domain [0,1]."""
    return torch.clamp(torch.min(torch.max(x_adv, x - eps), x + eps), 0.0, 1.0)


def pgd_maximize(
    objective: Callable[[Tensor], Tensor],
    x: Tensor,
    *,
    eps: float,
    step_size: float,
    steps: int,
    init: str = "uniform",
    generator: torch.Generator | None = None,
    clamp_start: bool = False,
) -> Tensor:
    """Maximise ``objective(x_adv)`` (a scalar) over the eps-ball ∩ [0,1]; returns detached x_adv.

    ``clamp_start``: clip the random start to [0,1] before the first gradient, as MadryLab's
    ``pgd_attack.py``, DGAD's and AdaAD's ``Madry_PGD``, advertorch and torchattacks do (the
    image box only: their starts lie in the eps-ball already). The caller decides the models'
    modes; gradients are taken with respect to the input only, so no parameter ``.grad`` is
    touched.
    """
    x = x.detach()
    x_adv = random_start(x, init, eps, generator)
    if clamp_start:
        x_adv = x_adv.clamp(0.0, 1.0)
    for _ in range(steps):
        x_adv.requires_grad_(True)
        with torch.enable_grad():
            (grad,) = torch.autograd.grad(objective(x_adv), x_adv)
        x_adv = project(x_adv.detach() + step_size * grad.sign(), x, eps)
    return project(x_adv, x, eps).detach()


def ce_sum(logits: Tensor, y: Tensor) -> Tensor:
    return F.cross_entropy(logits, y, reduction="sum")


def cw_margin_sum(logits: Tensor, y: Tensor) -> Tensor:
    """Σ_i (max_{c≠y} z_ic − z_iy): the CW∞ objective (maximised by the attack)."""
    true = logits.gather(1, y[:, None]).squeeze(1)
    other = logits.masked_fill(F.one_hot(y, logits.shape[1]).bool(), float("-inf")).amax(1)
    return (other - true).sum()


LOSSES: dict[str, Callable[[Tensor, Tensor], Tensor]] = {"ce": ce_sum, "cw": cw_margin_sum}
