"""Benchmark harness for adversarial distillation: the public API other code builds on.

m = harness.create_method("dgad", gamma=5.0)
student = harness.create_model("resnet18", num_classes=10, image_size=32)
data = harness.create_dataset("digits")
pgd = harness.create_attack("pgd", eps=8 / 255, step_size=2 / 255, steps=10)
"""

from __future__ import annotations

from typing import Any

from harness.registry import ATTACKS, DATASETS, METHODS, MODELS
from harness.utils.errors import TrainingDiverged, UserError

__version__ = "0.1.0"


def create_method(name: str, /, **hparams: Any) -> Any:
    """A distillation / adversarial-training method by name, with its hyperparameters."""
    return METHODS.create(name, **hparams)


def list_methods(pattern: str | None = None) -> list[str]:
    return METHODS.names(pattern)


def create_model(name: str, /, num_classes: int = 10, image_size: int = 32, **kwargs: Any) -> Any:
    """A freshly initialised network taking inputs in [0,1] of shape (B, 3, size, size)."""
    return MODELS.create(name, num_classes=num_classes, image_size=image_size, **kwargs)


def list_models(pattern: str | None = None) -> list[str]:
    return MODELS.names(pattern)


def create_dataset(name: str, /, **options: Any) -> Any:
    """A :class:`harness.data.DatasetSplits` (train / val / test as uint8 tensors)."""
    return DATASETS.create(name, **options)


def list_datasets(pattern: str | None = None) -> list[str]:
    return DATASETS.names(pattern)


def create_attack(name: str, /, **params: Any) -> Any:
    """An attack object: ``attack(model, x, y) -> x_adv``."""
    return ATTACKS.create(name, **params)


def list_attacks(pattern: str | None = None) -> list[str]:
    return ATTACKS.names(pattern)


__all__ = [
    "TrainingDiverged",
    "UserError",
    "create_attack",
    "create_dataset",
    "create_method",
    "create_model",
    "list_attacks",
    "list_datasets",
    "list_methods",
    "list_models",
]
