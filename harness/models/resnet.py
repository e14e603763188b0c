"""CIFAR-style ResNet-18/34 (3x3 stem, no max-pool), as in kuangliu/pytorch-cifar and AdaAD/DGAD.

Parameter names (``conv1``, ``bn1``, ``layer1..4``, ``shortcut``, ``linear``) match those
repositories, so their checkpoints load as they are.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from harness.models.base import Classifier, check_dims
from harness.registry import MODELS


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet(Classifier):
    def __init__(
        self, num_blocks: list[int], num_classes: int = 10, image_size: int = 32, arch: str = ""
    ) -> None:
        super().__init__()
        self.arch = arch
        self.image_size = image_size
        self.in_planes = 64
        self.conv1 = nn.Conv2d(3, 64, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.layer1 = self._make_layer(64, num_blocks[0], stride=1)
        self.layer2 = self._make_layer(128, num_blocks[1], stride=2)
        self.layer3 = self._make_layer(256, num_blocks[2], stride=2)
        self.layer4 = self._make_layer(512, num_blocks[3], stride=2)
        self.num_features = 512 * BasicBlock.expansion
        self.linear = nn.Linear(self.num_features, num_classes)

    def _make_layer(self, planes: int, n: int, stride: int) -> nn.Sequential:
        layers = []
        for s in [stride] + [1] * (n - 1):
            layers.append(BasicBlock(self.in_planes, planes, s))
            self.in_planes = planes * BasicBlock.expansion
        return nn.Sequential(*layers)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        return torch.flatten(F.adaptive_avg_pool2d(out, 1), 1)

    def forward_head(self, f: torch.Tensor) -> torch.Tensor:
        return self.linear(f)


@MODELS.register("resnet18")
def resnet18(num_classes: int = 10, image_size: int = 32) -> ResNet:
    """ResNet-18 for 32x32 / 64x64 inputs: 11.17M parameters with 10 classes."""
    check_dims("resnet18", num_classes, image_size)
    return ResNet([2, 2, 2, 2], num_classes, image_size, arch="resnet18")


@MODELS.register("resnet34")
def resnet34(num_classes: int = 10, image_size: int = 32) -> ResNet:
    """ResNet-34 for 32x32 / 64x64 inputs: 21.28M parameters with 10 classes."""
    check_dims("resnet34", num_classes, image_size)
    return ResNet([3, 4, 6, 3], num_classes, image_size, arch="resnet34")
