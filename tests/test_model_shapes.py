"""Every model the paper's grids build has the official definition's parameter names and shapes.

``golden/official_shapes.json`` writes out ``state_dict()`` of each official constructor call
(DGAD's ``networks/``: ResNet-18/34, MobileNetV2, PreActResNet-18, VGG-16; its
``Yao_WideResNet`` for WRN-34-10/20, RobustBench's layout), so an official checkpoint loads into
ours with ``strict=True``. The official code is not imported here.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import harness
from harness.grid.load import load_grid

GOLDEN = json.loads((Path(__file__).parent / "golden" / "official_shapes.json").read_text())
OFFICIAL = GOLDEN["models"]
PAPER_GRIDS = ("cifar10", "cifar100", "tinyimagenet", "transfer", "selfdistill", "ablation")
#: (image size, classes) of each paper data set
GEOMETRY = {"cifar10": (32, 10), "cifar100": (32, 100), "tinyimagenet": (64, 200)}


def paper_models() -> list[tuple[str, int, int]]:
    """(model, image size, classes) of every student, teacher and surrogate the grids build."""
    found = set()
    for name in PAPER_GRIDS:
        grid = load_grid(name)
        for run in [*grid.runs, *grid.teacher_runs.values()]:
            cfg = run.config
            size, classes = GEOMETRY[cfg["dataset"]["name"]]
            models = [cfg["model"]]
            models += [cfg["teacher"]["model"]] if cfg["teacher"] else []
            models += cfg["eval"].get("transfer", {}).get("surrogates", [])
            found.update((m, size, classes) for m in models)
    return sorted(found)


def official_shapes(model: str, classes: int) -> dict[str, list[int]]:
    """The official definition's shapes, its classifier sized for ``classes``."""
    spec = OFFICIAL[model]
    head = spec["classifier"]
    out = {}
    for key, shape in spec["state_dict"]:
        if key in (f"{head}.weight", f"{head}.bias"):
            shape = [classes, *shape[1:]]
        out[key] = shape
    return out


def our_shapes(model: str, size: int, classes: int) -> dict[str, list[int]]:
    with torch.device("meta"):
        net = harness.create_model(model, num_classes=classes, image_size=size)
    return {k: list(v.shape) for k, v in net.state_dict().items()}


def test_the_paper_grids_use_the_expected_models():
    assert paper_models() == [
        ("mobilenet_v2", 32, 10),
        ("mobilenet_v2", 32, 100),
        ("preact_resnet18", 64, 200),
        ("resnet18", 32, 10),
        ("resnet18", 32, 100),
        ("resnet18", 64, 200),
        ("resnet34", 32, 10),
        ("vgg16_bn", 32, 10),
        ("wrn34_10", 32, 10),
        ("wrn34_10", 32, 100),
        ("wrn34_20", 32, 10),
    ]


@pytest.mark.parametrize(("model", "size", "classes"), paper_models())
def test_parameter_names_and_shapes_are_the_official_ones(model, size, classes):
    assert our_shapes(model, size, classes) == official_shapes(model, classes)


@pytest.mark.parametrize("size", [32, 64])
def test_mobilenet_v2_is_the_same_network_at_both_sizes(size):
    assert our_shapes("mobilenet_v2", size, 200) == official_shapes("mobilenet_v2", 200)


def test_preact_resnet18_at_64px_classifies_the_2x2_pooled_map():
    """DGAD's Tiny ImageNet teacher: ``avg_pool2d(4)`` of the 8x8 map, ``Linear(2048, 200)``."""
    net = harness.create_model("preact_resnet18", num_classes=200, image_size=64).eval()
    assert net.num_features == 2048 and tuple(net.linear.weight.shape) == (200, 2048)
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        grid = net.layer4(net.layer3(net.layer2(net.layer1(net.conv1(x)))))
        assert grid.shape[-2:] == (8, 8)
        official = F.avg_pool2d(grid, 4).view(2, -1)  # the official forward, line for line
        torch.testing.assert_close(net.forward_features(x), official, rtol=0, atol=0)
        torch.testing.assert_close(net(x), net.linear(official), rtol=0, atol=0)


@pytest.mark.parametrize(("size", "features"), [(32, 512), (96, 4608), (48, 512)])
def test_preact_resnet18_geometry_at_other_sizes_is_explicit(size, features):
    """32x32: one cell (512 features); any multiple of 32 keeps the official 4x4 pooling window;
    other sizes pool adaptively to ``image_size // 32`` cells a side."""
    net = harness.create_model("preact_resnet18", num_classes=10, image_size=size).eval()
    assert net.num_features == features and net.linear.in_features == features
    with torch.no_grad():
        assert net(torch.rand(1, 3, size, size)).shape == (1, 10)
