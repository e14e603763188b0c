"""What every harness network shares: the features/head split methods rely on, and the checks
on what it is built for."""

from __future__ import annotations

import torch
from torch import nn

from harness.utils.errors import UserError


class Classifier(nn.Module):
    """``forward(x) = forward_head(forward_features(x))``.

    Subclasses define ``forward_features`` (penultimate features, (B, num_features)) and
    ``forward_head`` (logits); feature-based methods such as GACD use the two halves.
    """

    num_features: int

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward_head(self, f: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def check_dims(arch: str, num_classes: int, image_size: int, min_size: int = 8) -> None:
    """Reject class counts and image sizes a network cannot be built for, as a user error."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise UserError(
            f"model {arch!r}: num_classes must be a positive integer, not {num_classes!r}"
        )
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < min_size:
        raise UserError(
            f"model {arch!r}: image_size must be an integer >= {min_size}, not {image_size!r}"
        )
