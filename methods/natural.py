"""Natural (``natural``): standard training on clean inputs, no attack.

    inner:  x' = x
    outer:  L = mean_i CE(S(x_i), y_i)

Used for the naturally trained surrogates of the transfer evaluation (the DGAD paper's Table 7),
and as the non-robust reference point of a leaderboard.
"""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from methods.base import Method, register_method
from methods.common import full_precision


@full_precision
def natural_loss(logits: Tensor, y: Tensor) -> Tensor:
    return F.cross_entropy(logits, y)


@register_method("natural")
class Natural(Method):
    needs_teacher = False

    def perturb(
        self, student: nn.Module, teacher: nn.Module | None, x: Tensor, y: Tensor
    ) -> Tensor:
        return x.detach()

    def loss(self, student, teacher, x, x_adv, y, epoch: int = 0) -> tuple[Tensor, dict[str, Any]]:
        loss = natural_loss(student(x), y)
        return loss, {"ce_clean": loss.detach()}
