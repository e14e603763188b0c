"""PreActResNet-18 as DGAD's ``networks/preresnet.py`` defines it (kuangliu/pytorch-cifar's).

Like those, there is no BatchNorm/ReLU after the last block, and the names match, so their
checkpoints load as they are. The head is the official one: ``avg_pool2d(4)`` on ``layer4``'s
map, flattened, into ``linear``. The pooled grid is therefore (image_size / 32)² cells: 1x1
and 512 features at 32x32; 2x2 and 2,048 features at 64x64, DGAD's Tiny ImageNet teacher
(``Linear(2048, 200)``; the official definition is built only for that size). Sizes that are not
a multiple of 32 pool adaptively to the same grid, ``max(1, image_size // 32)`` cells a side,
where ``avg_pool2d(4)`` would drop the map's last rows and columns or fail.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from harness.models.base import Classifier, check_dims
from harness.registry import MODELS


class PreActBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(x))
        shortcut = self.shortcut(out) if hasattr(self, "shortcut") else x
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + shortcut


class PreActResNet(Classifier):
    def __init__(
        self, num_blocks: list[int], num_classes: int = 10, image_size: int = 32, arch: str = ""
    ) -> None:
        super().__init__()
        self.arch = arch
        self.image_size = image_size
        self.in_planes = 64
        self.conv1 = nn.Conv2d(3, 64, 3, stride=1, padding=1, bias=False)
        self.layer1 = self._make_layer(64, num_blocks[0], stride=1)
        self.layer2 = self._make_layer(128, num_blocks[1], stride=2)
        self.layer3 = self._make_layer(256, num_blocks[2], stride=2)
        self.layer4 = self._make_layer(512, num_blocks[3], stride=2)
        self.pool_grid = max(1, image_size // 32)  # cells a side after the official pooling
        self.num_features = 512 * self.pool_grid**2
        self.linear = nn.Linear(self.num_features, num_classes)

    def _make_layer(self, planes: int, n: int, stride: int) -> nn.Sequential:
        layers = []
        for s in [stride] + [1] * (n - 1):
            layers.append(PreActBlock(self.in_planes, planes, s))
            self.in_planes = planes
        return nn.Sequential(*layers)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(x)
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        if out.shape[-1] == 4 * self.pool_grid and out.shape[-2] == 4 * self.pool_grid:
            out = F.avg_pool2d(out, 4)  # the official head, exactly
        else:
            out = F.adaptive_avg_pool2d(out, self.pool_grid)
        return torch.flatten(out, 1)

    def forward_head(self, f: torch.Tensor) -> torch.Tensor:
        return self.linear(f)


@MODELS.register("preact_resnet18")
def preact_resnet18(num_classes: int = 10, image_size: int = 32) -> PreActResNet:
    """PreActResNet-18: 11.17M parameters with 10 classes at 32x32; at 64x64 its classifier
    reads the 2x2-pooled map (2,048 features), as DGAD's Tiny ImageNet teacher does."""
    check_dims("preact_resnet18", num_classes, image_size)
    return PreActResNet([2, 2, 2, 2], num_classes, image_size, arch="preact_resnet18")
