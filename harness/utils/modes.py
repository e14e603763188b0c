"""Context managers that put models in a mode and restore exactly the modes they found.

Attacks and methods flip BN between train and eval; restoring every submodule's own flag (not
just the top-level one) keeps a model with, say, frozen BN layers as the caller had it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn


@contextmanager
def set_mode(training: bool, *models: nn.Module | None) -> Iterator[None]:
    saved = [(m, m.training) for model in models if model is not None for m in model.modules()]
    for model in models:
        if model is not None:
            model.train(training)
    try:
        yield
    finally:
        for module, flag in saved:
            module.training = flag


def eval_mode(*models: nn.Module | None):
    """Eval mode (BN running statistics, no dropout) for the block, then the previous modes."""
    return set_mode(False, *models)


def train_mode(*models: nn.Module | None):
    """Train mode for the block, then the previous modes."""
    return set_mode(True, *models)
