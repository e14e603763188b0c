"""CIFAR VGG-16 with BatchNorm (kuangliu/pytorch-cifar): conv features, one linear classifier.

``features`` keeps kuangliu's layer indices (conv, bn, relu, ..., max-pool) so its checkpoints
load; a global average pool replaces the ``AvgPool2d(1)`` there, which makes 64x64 inputs work
and is the identity at 32x32 (the feature map is already 1x1).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from harness.models.base import Classifier, check_dims
from harness.registry import MODELS

CFG16 = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]


class VGG(Classifier):
    def __init__(
        self, cfg: list[int | str], num_classes: int = 10, image_size: int = 32, arch: str = ""
    ) -> None:
        super().__init__()
        self.arch = arch
        self.image_size = image_size
        layers: list[nn.Module] = []
        in_channels = 3
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                assert isinstance(v, int)
                layers += [
                    nn.Conv2d(in_channels, v, kernel_size=3, padding=1),
                    nn.BatchNorm2d(v),
                    nn.ReLU(inplace=True),
                ]
                in_channels = v
        self.features = nn.Sequential(*layers)
        self.num_features = in_channels
        self.classifier = nn.Linear(self.num_features, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(F.adaptive_avg_pool2d(self.features(x), 1), 1)

    def forward_head(self, f: torch.Tensor) -> torch.Tensor:
        return self.classifier(f)


@MODELS.register("vgg16_bn")
def vgg16_bn(num_classes: int = 10, image_size: int = 32) -> VGG:
    """CIFAR VGG-16-BN: 14.73M parameters with 10 classes."""
    check_dims("vgg16_bn", num_classes, image_size, min_size=32)
    return VGG(CFG16, num_classes, image_size, arch="vgg16_bn")
