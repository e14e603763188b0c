"""Networks for 32x32 (CIFAR) and 64x64 (Tiny ImageNet) inputs in [0,1], no normalisation inside.

Importing this package registers every built-in model with ``harness.registry.MODELS``. Each
model has ``forward_features(x) -> (B, num_features)`` (after global pooling), ``forward_head``
and ``num_features``; :func:`features` extends that to foreign models (RobustBench's).
"""

from __future__ import annotations

import torch
from torch import nn

from harness.models import ecosystem, mobilenetv2, preact_resnet, resnet, small_cnn, vgg, wideresnet
from harness.models.checkpoint import clean_state_dict, load_weights
from harness.models.robustbench import last_linear, linear_input, load_robustbench, with_feature_api
from harness.registry import MODELS

for _prefix in ecosystem.PREFIXES:  # timm:NAME, torchvision:NAME
    MODELS.add_prefix(_prefix, lambda name, prefix=_prefix: ecosystem.resolve(prefix, name))

__all__ = [
    "clean_state_dict",
    "ecosystem",
    "features",
    "last_linear",
    "load_robustbench",
    "load_weights",
    "mobilenetv2",
    "preact_resnet",
    "resnet",
    "small_cnn",
    "vgg",
    "wideresnet",
    "with_feature_api",
]


def features(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Penultimate features of ``model`` on ``x``: shape (B, D), the input of the classifier.

    Uses ``model.forward_features`` when the model has one. Otherwise (a foreign model) it runs
    the model and returns what its last ``nn.Linear`` (in registration order) received, which is
    the penultimate layer for the usual ``... -> pool -> flatten -> fc`` networks. Only the
    features are returned, never the logits, so both paths behave the same; gradients flow.
    """
    if hasattr(model, "forward_features"):
        return model.forward_features(x)
    return linear_input(model, last_linear(model), x)
