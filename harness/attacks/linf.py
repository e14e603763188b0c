"""FGSM and PGD as attack objects: ``attack(model, x, y) -> x_adv``, model in eval mode.

They serve training-time selection (PGD-10 per epoch) and the white-box evaluation. The model
is put in eval mode for the attack and left in the mode it was found in.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from harness.attacks.base import Attack
from harness.attacks.pgd import INITS, LOSSES, pgd_maximize
from harness.registry import ATTACKS
from harness.utils.errors import UserError
from harness.utils.modes import eval_mode


def check_eps(name: str, value: float) -> float:
    """Threat-model sizes live in [0,1] pixel units: 8 where 8/255 was meant is refused."""
    value = float(value)
    if not 0.0 <= value <= 1.0:
        raise UserError(
            f"{name} = {value:g} is outside [0, 1]; inputs are in [0,1], "
            f'so write {name} = {value:g}/255 (e.g. "8/255")'
        )
    return value


class LinfAttack(Attack):
    """An L∞ attack with a loss (``"ce"``, ``"cw"`` or a callable ``(logits, y) -> scalar``)."""

    def __init__(
        self, eps: float, loss: str | Callable[[Tensor, Tensor], Tensor], seed: int
    ) -> None:
        super().__init__(seed)
        self.eps = check_eps("eps", eps)
        if isinstance(loss, str) and loss not in LOSSES:
            raise UserError(f"unknown attack loss {loss!r}; valid: {', '.join(LOSSES)}")
        self.loss = loss

    def _loss_fn(self) -> Callable[[Tensor, Tensor], Tensor]:
        return LOSSES[self.loss] if isinstance(self.loss, str) else self.loss


@ATTACKS.register("fgsm")
class FGSM(LinfAttack):
    """Goodfellow et al.: one signed-gradient step of size eps, no random start."""

    def __init__(self, eps: float = 8 / 255, loss: str = "ce", seed: int = 0) -> None:
        super().__init__(eps, loss, seed)

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        loss_fn = self._loss_fn()
        with eval_mode(model):
            return pgd_maximize(
                lambda xa: loss_fn(model(xa), y),
                x,
                eps=self.eps,
                step_size=self.eps,
                steps=1,
                init="none",
            )


@ATTACKS.register("pgd")
class PGD(LinfAttack):
    """Madry et al. PGD under L∞; ``loss="cw"`` gives CW∞. With restarts, a sample counts as
    broken if any restart breaks it (the first successful restart's input is kept)."""

    def __init__(
        self,
        eps: float = 8 / 255,
        step_size: float = 2 / 255,
        steps: int = 10,
        init: str = "uniform",
        restarts: int = 1,
        loss: str = "ce",
        seed: int = 0,
    ) -> None:
        super().__init__(eps, loss, seed)
        self.step_size = check_eps("step_size", step_size)
        if init not in INITS:
            raise UserError(f"unknown init {init!r}; valid: {', '.join(INITS)}")
        if int(steps) < 0 or int(restarts) < 1:
            raise UserError(f"PGD needs steps >= 0 and restarts >= 1, got {steps}, {restarts}")
        self.steps = int(steps)
        self.init = init
        self.restarts = int(restarts)

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        loss_fn = self._loss_fn()
        gen = self.generator(x.device)
        with eval_mode(model):
            best = x.detach().clone()
            fooled = torch.zeros(len(x), dtype=torch.bool, device=x.device)
            for _ in range(self.restarts):
                x_adv = pgd_maximize(
                    lambda xa: loss_fn(model(xa), y),
                    x,
                    eps=self.eps,
                    step_size=self.step_size,
                    steps=self.steps,
                    init=self.init,
                    generator=gen,
                    clamp_start=True,
                )
                if self.restarts == 1:
                    return x_adv
                with torch.no_grad():
                    new = (model(x_adv).argmax(1) != y) & ~fooled
                best[new] = x_adv[new]
                fooled |= new
                if bool(fooled.all()):
                    break
            last = ~fooled
            best[last] = x_adv[last]
            return best
