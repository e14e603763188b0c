"""WideResNet-34-10/-34-20 with RobustBench's module and parameter names.

The layout (TRADES' WideResNet, as in ``robustbench/model_zoo/architectures/wide_resnet.py``)
is copied name for name, so RobustBench checkpoints such as Zhang2019Theoretically
(``sub_block1=True``) or Chen2021LTD_WRN34_10 (``sub_block1=False``) load with
``strict=True``. ``sub_block1`` only adds parameters that ``forward`` never uses; it exists so
those checkpoints fit. Global pooling is adaptive (RobustBench hard-codes ``avg_pool2d(8)``), so
64x64 inputs work and 32x32 results are unchanged.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from harness.models.base import Classifier, check_dims
from harness.registry import MODELS
from harness.utils.errors import UserError


class BasicBlock(nn.Module):
    def __init__(
        self, in_planes: int, out_planes: int, stride: int, drop_rate: float = 0.0
    ) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_planes, out_planes, 3, stride=1, padding=1, bias=False)
        self.droprate = drop_rate
        self.equalInOut = in_planes == out_planes
        self.convShortcut = (
            None
            if self.equalInOut
            else nn.Conv2d(in_planes, out_planes, 1, stride=stride, padding=0, bias=False)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # When the width changes, the shortcut also sees the pre-activated input (TRADES).
        if self.equalInOut:
            out = self.relu1(self.bn1(x))
        else:
            x = self.relu1(self.bn1(x))
            out = x
        out = self.relu2(self.bn2(self.conv1(out)))
        if self.droprate > 0:
            out = F.dropout(out, p=self.droprate, training=self.training)
        out = self.conv2(out)
        return out + (x if self.convShortcut is None else self.convShortcut(x))


class NetworkBlock(nn.Module):
    def __init__(
        self, n: int, in_planes: int, out_planes: int, stride: int, drop_rate: float = 0.0
    ) -> None:
        super().__init__()
        self.layer = nn.Sequential(
            *[
                BasicBlock(
                    in_planes if i == 0 else out_planes,
                    out_planes,
                    stride if i == 0 else 1,
                    drop_rate,
                )
                for i in range(n)
            ]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


class WideResNet(Classifier):
    def __init__(
        self,
        depth: int = 34,
        widen_factor: int = 10,
        num_classes: int = 10,
        image_size: int = 32,
        sub_block1: bool = False,
        drop_rate: float = 0.0,
        arch: str = "",
    ) -> None:
        super().__init__()
        if (depth - 4) % 6:
            raise ValueError(f"WideResNet depth must be 6n+4, got {depth}")
        self.arch = arch
        self.image_size = image_size
        n = (depth - 4) // 6
        widths = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        self.conv1 = nn.Conv2d(3, widths[0], 3, stride=1, padding=1, bias=False)
        self.block1 = NetworkBlock(n, widths[0], widths[1], 1, drop_rate)
        if sub_block1:
            self.sub_block1 = NetworkBlock(n, widths[0], widths[1], 1, drop_rate)
        self.block2 = NetworkBlock(n, widths[1], widths[2], 2, drop_rate)
        self.block3 = NetworkBlock(n, widths[2], widths[3], 2, drop_rate)
        self.bn1 = nn.BatchNorm2d(widths[3])
        self.relu = nn.ReLU(inplace=True)
        self.fc = nn.Linear(widths[3], num_classes)
        self.nChannels = widths[3]
        self.num_features = widths[3]
        self._init_weights()

    def _init_weights(self) -> None:
        # RobustBench/TRADES initialisation, so fresh models match theirs in distribution.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(x)
        out = self.block3(self.block2(self.block1(out)))
        out = self.relu(self.bn1(out))
        return torch.flatten(F.adaptive_avg_pool2d(out, 1), 1)

    def forward_head(self, f: torch.Tensor) -> torch.Tensor:
        return self.fc(f)


def _check_flag(arch: str, sub_block1: object) -> None:
    if not isinstance(sub_block1, bool):
        raise UserError(f"model {arch!r}: sub_block1 must be true or false, not {sub_block1!r}")


@MODELS.register("wrn34_10")
def wrn34_10(num_classes: int = 10, image_size: int = 32, sub_block1: bool = False) -> WideResNet:
    """WideResNet-34-10: 46.16M parameters with 10 classes (more with ``sub_block1``)."""
    check_dims("wrn34_10", num_classes, image_size)
    _check_flag("wrn34_10", sub_block1)
    return WideResNet(34, 10, num_classes, image_size, sub_block1=sub_block1, arch="wrn34_10")


@MODELS.register("wrn34_20")
def wrn34_20(num_classes: int = 10, image_size: int = 32, sub_block1: bool = False) -> WideResNet:
    """WideResNet-34-20: 184.5M parameters with 10 classes (more with ``sub_block1``)."""
    check_dims("wrn34_20", num_classes, image_size)
    _check_flag("wrn34_20", sub_block1)
    return WideResNet(34, 20, num_classes, image_size, sub_block1=sub_block1, arch="wrn34_20")
