"""Two tiny CNNs for smoke runs and tests: real BatchNorm nets that train in seconds on a CPU.

They exist so the whole pipeline (PGD training, distillation, evaluation) can run anywhere; their
numbers mean nothing. ``small_cnn`` has about 53K parameters, ``tiny_cnn`` about 6K.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from harness.models.base import Classifier, check_dims
from harness.registry import MODELS


class SmallCNN(Classifier):
    """Conv + BN + ReLU stages given as (channels, kernel, stride), then global pooling.

    The first stage is a 4x4 "patchify" conv with stride 4: CPU convolutions at full 32x32
    resolution cost more than the rest of the net, and smoke runs need speed, not accuracy.
    """

    def __init__(
        self,
        stages: list[tuple[int, int, int]],
        num_classes: int = 10,
        image_size: int = 32,
        arch: str = "",
    ) -> None:
        super().__init__()
        self.arch = arch
        self.image_size = image_size
        layers: list[nn.Module] = []
        in_ch = 3
        for out_ch, k, stride in stages:
            pad = k // 2 if k % 2 else 0
            layers += [
                nn.Conv2d(in_ch, out_ch, k, stride=stride, padding=pad, bias=False),
                nn.BatchNorm2d(out_ch),
                nn.ReLU(),
            ]
            in_ch = out_ch
        self.features = nn.Sequential(*layers)
        self.num_features = in_ch
        self.classifier = nn.Linear(in_ch, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(F.adaptive_avg_pool2d(self.features(x), 1), 1)

    def forward_head(self, f: torch.Tensor) -> torch.Tensor:
        return self.classifier(f)


@MODELS.register("small_cnn")
def small_cnn(num_classes: int = 10, image_size: int = 32) -> SmallCNN:
    """Three stages (24-48-96 channels): about 53K parameters."""
    check_dims("small_cnn", num_classes, image_size)
    return SmallCNN([(24, 4, 4), (48, 3, 1), (96, 3, 2)], num_classes, image_size, "small_cnn")


@MODELS.register("tiny_cnn")
def tiny_cnn(num_classes: int = 10, image_size: int = 32) -> SmallCNN:
    """Three stages (16-32-64 channels): about 24K parameters, half of ``small_cnn``."""
    check_dims("tiny_cnn", num_classes, image_size)
    return SmallCNN([(16, 4, 4), (32, 3, 1), (64, 3, 2)], num_classes, image_size, "tiny_cnn")
