"""CIFAR MobileNetV2 (kuangliu/pytorch-cifar, AdaAD/DGAD ``networks/mobilenetv2.py``).

Adapted for 32x32 inputs like those: stride 1 in the stem conv and in the second stage (ImageNet
MobileNetV2 uses 2 in both), so only three stages downsample; global average pooling at the end.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from harness.models.base import Classifier, check_dims
from harness.registry import MODELS

# (expansion, out_planes, num_blocks, stride)
CFG = [
    (1, 16, 1, 1),
    (6, 24, 2, 1),  # 2 on ImageNet
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
]


class Block(nn.Module):
    """Expand (1x1) + depthwise (3x3) + project (1x1), residual when the stride is 1."""

    def __init__(self, in_planes: int, out_planes: int, expansion: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        planes = expansion * in_planes
        self.conv1 = nn.Conv2d(in_planes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(
            planes, planes, 3, stride=stride, padding=1, groups=planes, bias=False
        )
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_planes, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_planes)
        self.shortcut = nn.Sequential()
        if stride == 1 and in_planes != out_planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, out_planes, 1, bias=False), nn.BatchNorm2d(out_planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return out + self.shortcut(x) if self.stride == 1 else out


class MobileNetV2(Classifier):
    def __init__(self, num_classes: int = 10, image_size: int = 32, arch: str = "") -> None:
        super().__init__()
        self.arch = arch
        self.image_size = image_size
        self.conv1 = nn.Conv2d(3, 32, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(32)
        layers: list[nn.Module] = []
        in_planes = 32
        for expansion, out_planes, n, stride in CFG:
            for s in [stride] + [1] * (n - 1):
                layers.append(Block(in_planes, out_planes, expansion, s))
                in_planes = out_planes
        self.layers = nn.Sequential(*layers)
        self.conv2 = nn.Conv2d(320, 1280, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(1280)
        self.num_features = 1280
        self.linear = nn.Linear(self.num_features, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layers(out)
        out = F.relu(self.bn2(self.conv2(out)))
        return torch.flatten(F.adaptive_avg_pool2d(out, 1), 1)

    def forward_head(self, f: torch.Tensor) -> torch.Tensor:
        return self.linear(f)


@MODELS.register("mobilenet_v2")
def mobilenet_v2(num_classes: int = 10, image_size: int = 32) -> MobileNetV2:
    """CIFAR MobileNetV2: 2.30M parameters with 10 classes."""
    check_dims("mobilenet_v2", num_classes, image_size)
    return MobileNetV2(num_classes, image_size, arch="mobilenet_v2")
