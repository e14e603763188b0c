"""Students from the ecosystem (``timm:NAME``, ``torchvision:NAME``) and RobustBench models on
any data set the harness has, npz included. No downloads: timm is stood in for when it is not
installed, and RobustBench's zoo gets a tiny entry whose "download" writes real weights."""

from __future__ import annotations

import sys
from types import ModuleType

import numpy as np
import pytest
import torch
from torch import nn

import harness
from harness.cli import main
from harness.grid.load import load_grid
from harness.registry import MODELS
from harness.store.store import Store
from harness.utils.errors import UserError
from tests.test_downloads import NAME, zoo  # noqa: F401  (the fixture)


def test_torchvision_classifier_by_name():
    model = harness.create_model("torchvision:resnet18", num_classes=7, image_size=8)
    x = torch.rand(3, 3, 8, 8)
    assert model.arch == "torchvision:resnet18"
    assert model(x).shape == (3, 7)
    feats = model.forward_features(x)
    assert feats.shape == (3, 512) and model.num_features == 512
    torch.testing.assert_close(model.forward_head(feats), model(x))
    assert "torchvision:resnet18" in MODELS and "torchvision:no_such_net" not in MODELS


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("torchvision:no_such_net", "unknown torchvision classifier 'no_such_net'"),
        ("torchvision:", "model torchvision:NAME needs a name, e.g. torchvision:resnet18"),
    ],
)
def test_unknown_names_are_one_line(name, message):
    with pytest.raises(UserError) as info:
        harness.create_model(name)
    assert str(info.value).startswith(message) and "\n" not in str(info.value)


def test_timm_missing_is_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # import timm -> ImportError
    with pytest.raises(UserError) as info:
        harness.create_model("timm:resnet18")
    assert str(info.value) == "timm is not installed: pip install timm"


class _TimmNet(nn.Module):
    def __init__(self, num_classes: int, img_size: int) -> None:
        super().__init__()
        self.img_size = img_size
        self.body = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.AdaptiveAvgPool2d(1))
        self.head = nn.Linear(4, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x).flatten(1))


@pytest.fixture
def fake_timm(monkeypatch):
    """timm's two calls the harness makes, as timm 1.0 answers them."""
    calls = []
    timm = ModuleType("timm")
    timm.is_model = lambda name: name == "tinynet_x"

    def create_model(name, pretrained=False, num_classes=1000, **kwargs):
        calls.append({"name": name, "pretrained": pretrained, "num_classes": num_classes, **kwargs})
        return _TimmNet(num_classes, kwargs.get("img_size", 224))

    timm.create_model = create_model
    monkeypatch.setitem(sys.modules, "timm", timm)
    return calls


def test_timm_student_by_name(fake_timm):
    model = harness.create_model("timm:tinynet_x", num_classes=10, image_size=8)
    assert fake_timm == [
        {"name": "tinynet_x", "pretrained": False, "num_classes": 10, "img_size": 8}
    ]
    assert model.arch == "timm:tinynet_x" and model.img_size == 8
    assert model(torch.rand(2, 3, 8, 8)).shape == (2, 10)
    assert model.forward_features(torch.rand(2, 3, 8, 8)).shape == (2, 4)
    with pytest.raises(UserError, match="unknown timm model 'resnet9000'"):
        harness.create_model("timm:resnet9000")


def test_grid_takes_an_ecosystem_student(tmp_path, fake_timm):
    """``--student timm:NAME``: a run like any other; its id names the model without ':'."""
    grid = load_grid("smoke", student="timm:tinynet_x", method="pgd-at")
    (run,) = grid.runs
    assert run.config["model"] == "timm:tinynet_x"
    assert run.run_id.startswith("pgd-at-digits-timm-tinynet_x-none-s0-")
    from harness.execution.inputs import build_model

    student = build_model("timm:tinynet_x", 10, 8, seed=0)
    again = build_model("timm:tinynet_x", 10, 8, seed=0)
    for a, b in zip(student.state_dict().values(), again.state_dict().values(), strict=True):
        assert torch.equal(a, b)  # the seeded init holds for foreign networks too


def write_npz(path, classes: int, n: int = 40) -> None:
    g = np.random.default_rng(0)
    np.savez(
        path,
        x_train=g.integers(0, 256, (n, 4, 4, 3), dtype=np.uint8),
        y_train=np.arange(n) % classes,
        x_test=g.integers(0, 256, (n, 4, 4, 3), dtype=np.uint8),
        y_test=np.arange(n) % classes,
    )


def test_robustbench_model_evaluated_on_an_npz(zoo, tmp_path, monkeypatch, capsys):  # noqa: F811
    """A CIFAR-10 RobustBench model on a 10-class npz: its leaderboard is taken from the number
    of classes, the weights are the zoo's, and the clean accuracy is theirs on that test set."""
    monkeypatch.chdir(tmp_path)  # RobustBench's layout: models/cifar10/Linf/<name>.pt
    write_npz(tmp_path / "mini.npz", 10)
    store = tmp_path / "store"
    main(["eval", NAME, "--robustbench", "--dataset", "npz:mini.npz", "--attack", "clean",
          "--store", str(store), "--no-progress", "--device", "cpu"])  # fmt: skip
    assert (tmp_path / "models" / "cifar10" / "Linf" / f"{NAME}.pt").exists()
    (run_id,) = Store(store).run_ids()
    config = Store(store).config(run_id)
    assert config["source"] == {"robustbench": NAME, "zoo": "cifar10"}
    data = harness.create_dataset("npz", path="mini.npz")
    net = nn.Sequential(nn.Flatten(), nn.Linear(48, 7), nn.ReLU(), nn.Linear(7, 10))
    net.load_state_dict(zoo.weights)
    with torch.no_grad():
        expected = (net(data.test.x.float() / 255).argmax(1) == data.test.y).float().mean()
    clean = Store(store).metrics(run_id)["results"]["clean"]["accuracy"]
    assert clean == pytest.approx(float(expected))
    # the last "clean" line is the result (the first is the suite bench eval announces)
    line = [x for x in capsys.readouterr().out.splitlines() if x.split()[:1] == ["clean"]][-1]
    assert line.split()[1] == f"{100 * float(expected):.2f}%"


def test_robustbench_model_on_a_data_set_of_other_classes_is_one_line(zoo, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.chdir(tmp_path)
    write_npz(tmp_path / "seven.npz", 7)
    with pytest.raises(SystemExit) as info:
        main(["eval", NAME, "--robustbench", "--dataset", "npz:seven.npz", "--attack", "clean",
              "--store", str(tmp_path / "s"), "--no-progress"])  # fmt: skip
    assert info.value.code == 2
    from harness.models.robustbench import zoo_dataset

    with pytest.raises(UserError, match="like no RobustBench leaderboard: name the model's"):
        zoo_dataset("npz", 7)
    assert zoo_dataset("npz", 7, "cifar10") == "cifar10"
    assert zoo_dataset("cifar100", 100) == "cifar100" and zoo_dataset("npz", 100) == "cifar100"


def test_robustbench_teacher_on_an_npz(zoo, tmp_path):  # noqa: F811
    from harness.execution.teachers import load_teacher

    ref = {"name": "t", "model": "wrn34_10", "source": "robustbench", "robustbench": NAME,
           "threat_model": "Linf"}  # fmt: skip
    teacher = load_teacher(
        ref, Store(tmp_path / "s"), num_classes=10, image_size=4, dataset="npz",
        model_dir=tmp_path,
    )  # fmt: skip
    assert (tmp_path / "cifar10" / "Linf" / f"{NAME}.pt").exists()
    assert not any(p.requires_grad for p in teacher.parameters())
    with pytest.raises(UserError, match="has 10 outputs and data set 'npz' 7 classes"):
        load_teacher({**ref, "zoo": "cifar10"}, Store(tmp_path / "s"), num_classes=7,
                     image_size=4, dataset="npz", model_dir=tmp_path)  # fmt: skip
