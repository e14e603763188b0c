"""Model zoo: shapes at 32/64 px, the feature API, parameter counts, checkpoint loading."""

from __future__ import annotations

import os
import sys
import types

import pytest
import torch
from torch import nn

import harness
from harness.models import clean_state_dict, features, load_robustbench, load_weights
from harness.models.robustbench import _alias_autoattack, with_feature_api
from harness.utils.errors import UserError
from tests.helpers import robustbench_utils

NAMES = [
    "resnet18",
    "resnet34",
    "preact_resnet18",
    "mobilenet_v2",
    "wrn34_10",
    "wrn34_20",
    "vgg16_bn",
    "small_cnn",
    "tiny_cnn",
]

# Parameter counts with 10 classes, computed here and matching the literature's rounded values
# (ResNet-18 CIFAR 11.17M, PreActResNet-18 11.17M, MobileNetV2 CIFAR 2.30M, VGG-16-BN CIFAR
# 14.7M, ResNet-34 21.28M, WRN-34-10 46.16M, WRN-34-20 184.5M).
PARAMS = {
    "resnet18": (11_173_962, 11.17e6),
    "resnet34": (21_282_122, 21.28e6),
    "preact_resnet18": (11_171_146, 11.17e6),
    "mobilenet_v2": (2_296_922, 2.30e6),
    "vgg16_bn": (14_728_266, 14.73e6),
    "wrn34_10": (46_160_474, 46.16e6),
    "wrn34_20": (184_531_674, 184.5e6),
}


def _rand(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed))


def _randomise_bn(model: nn.Module, seed: int = 1) -> None:
    """Non-trivial running statistics, so that a load that skipped buffers would show."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)


def test_all_models_registered():
    assert set(NAMES) <= set(harness.list_models())


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize(("num_classes", "size"), [(10, 32), (200, 64)])
def test_shapes_and_feature_api(name, num_classes, size):
    batch = 2
    if name.startswith("wrn"):  # slow on a CPU: one image, and WRN-34-20 at 32x32 only
        if name == "wrn34_20" and size == 64:
            pytest.skip("WRN-34-20 at 64x64 takes too long on a CPU; WRN-34-10 covers the code")
        batch = 1
    model = harness.create_model(name, num_classes=num_classes, image_size=size).eval()
    x = _rand(batch, 3, size, size)
    with torch.no_grad():
        logits = model(x)
        feats = model.forward_features(x)
        assert logits.shape == (batch, num_classes)
        assert feats.shape == (batch, model.num_features)
        torch.testing.assert_close(model.forward_head(feats), logits)
        torch.testing.assert_close(features(model, x), feats)


@pytest.mark.parametrize("name", sorted(PARAMS))
def test_parameter_counts(name):
    exact, literature = PARAMS[name]
    with torch.device("meta"):  # no memory, no initialisation cost
        model = harness.create_model(name, num_classes=10)
    count = sum(p.numel() for p in model.parameters())
    assert count == exact
    assert abs(count - literature) / literature < 0.01


def test_small_models_are_small():
    small = sum(p.numel() for p in harness.create_model("small_cnn").parameters())
    tiny = sum(p.numel() for p in harness.create_model("tiny_cnn").parameters())
    assert tiny < small < 300_000
    for name in ("small_cnn", "tiny_cnn"):
        assert any(isinstance(m, nn.BatchNorm2d) for m in harness.create_model(name).modules())


def test_wrn_uses_robustbench_names():
    with torch.device("meta"):
        keys = set(harness.create_model("wrn34_10", sub_block1=True).state_dict())
    expected = {
        "conv1.weight",
        "block1.layer.0.bn1.weight",
        "block1.layer.0.convShortcut.weight",
        "block1.layer.4.conv2.weight",
        "sub_block1.layer.0.bn1.running_var",
        "block3.layer.0.convShortcut.weight",
        "bn1.weight",
        "bn1.num_batches_tracked",
        "fc.weight",
        "fc.bias",
    }
    assert expected <= keys
    assert "block1.layer.1.convShortcut.weight" not in keys  # equal widths: identity shortcut


@pytest.mark.parametrize("sub_block1", [False, True])
def test_robustbench_style_checkpoint_round_trip(tmp_path, sub_block1):
    source = harness.create_model("wrn34_10", sub_block1=sub_block1)
    _randomise_bn(source)
    sd = {f"module.{k}": v for k, v in source.state_dict().items()}
    if sub_block1:  # checkpoints from PyTorch < 0.4.1 (TRADES, 2019) lack the BN counters
        sd = {k: v for k, v in sd.items() if not k.endswith("num_batches_tracked")}
    path = tmp_path / "Zhang2019Theoretically.pt"
    torch.save({"state_dict": sd, "epoch": 99}, path)

    target = harness.create_model("wrn34_10", sub_block1=sub_block1)
    x = _rand(1, 3, 32, 32)
    with torch.no_grad():
        expected = source.eval()(x)
        assert not torch.allclose(target.eval()(x), expected)
        assert load_weights(target, path) is target
        torch.testing.assert_close(target(x), expected, rtol=0, atol=0)


def test_checkpoint_of_another_architecture_is_refused(tmp_path):
    path = tmp_path / "tiny.pt"
    torch.save(harness.create_model("tiny_cnn").state_dict(), path)
    with pytest.raises(UserError) as info:
        load_weights(harness.create_model("small_cnn"), path)
    msg = str(info.value)
    assert "\n" not in msg
    assert str(path) in msg and "'small_cnn'" in msg
    assert "missing key" in msg or "shape mismatch" in msg


def test_resnet18_into_wrn34_10_names_the_model(tmp_path):
    path = tmp_path / "resnet18.pt"
    torch.save({"model": harness.create_model("resnet18").state_dict()}, path)
    with pytest.raises(UserError) as info:
        load_weights(harness.create_model("wrn34_10"), path)
    msg = str(info.value)
    assert "\n" not in msg
    assert msg.startswith(f"checkpoint {path} does not fit model 'wrn34_10': ")
    assert "missing keys (" in msg and "unexpected keys (" in msg and ", ...)" in msg


def test_shape_mismatch_is_reported():
    sd = harness.create_model("resnet18", num_classes=10).state_dict()
    with pytest.raises(UserError) as info:
        load_weights(harness.create_model("resnet18", num_classes=100), sd, what="teacher")
    msg = str(info.value)
    assert msg.startswith("teacher does not fit model 'resnet18': 2 shape mismatches (")
    assert "linear.weight: checkpoint (10, 512) vs model (100, 512)" in msg
    assert "missing" not in msg and "unexpected" not in msg


class _Payload:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    sd = harness.create_model("tiny_cnn").state_dict()
    torch.save({"state_dict": sd, "extra": _Payload(str(marker))}, path)
    with pytest.raises(UserError) as info:
        load_weights(harness.create_model("tiny_cnn"), path)
    assert "\n" not in str(info.value)
    assert str(path) in str(info.value)
    assert not marker.exists()


def test_clean_state_dict_unwraps_and_strips():
    t = torch.zeros(1)
    assert clean_state_dict({"model": {"module._orig_mod.conv.weight": t}}) == {"conv.weight": t}
    assert clean_state_dict({"net": {"a": t}, "clean_acc": 0.8}) == {"a": t}
    assert clean_state_dict({"model_state_dict": {"model.a": t, "model.b": t}}) == {"a": t, "b": t}
    # a prefix on only some keys is a real submodule name, not a wrapper
    assert set(clean_state_dict({"model.a": t, "fc.weight": t})) == {"model.a", "fc.weight"}
    assert clean_state_dict({"a": t, "step": 3}) == {"a": t}
    with pytest.raises(UserError):
        clean_state_dict([t])
    with pytest.raises(UserError):
        clean_state_dict({"epoch": 3})


def test_features_of_a_foreign_model_is_the_input_of_its_last_linear():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 5), nn.ReLU(), nn.Linear(5, 3)).eval()
    x = _rand(4, 3, 2, 2)
    with torch.no_grad():
        expected = model[:3](x)
        torch.testing.assert_close(features(model, x), expected)
    assert not model[3]._forward_hooks  # the hook is removed again


def test_with_feature_api_keeps_state_dict_keys():
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 5), nn.ReLU(), nn.Linear(5, 3)).eval()
    keys = list(model.state_dict())
    with_feature_api(model)
    x = _rand(4, 3, 2, 2)
    with torch.no_grad():
        torch.testing.assert_close(model.forward_head(model.forward_features(x)), model(x))
    assert model.num_features == 5
    assert list(model.state_dict()) == keys


def test_features_of_a_model_without_linear_is_a_user_error():
    with pytest.raises(UserError, match="no nn.Linear"):
        features(nn.Sequential(nn.Flatten()), _rand(1, 3, 2, 2))


def test_bad_dimensions_are_user_errors():
    with pytest.raises(UserError, match="num_classes"):
        harness.create_model("resnet18", num_classes=0)
    with pytest.raises(UserError, match="image_size"):
        harness.create_model("vgg16_bn", image_size=16)
    with pytest.raises(UserError, match="sub_block1"):
        harness.create_model("wrn34_10", sub_block1="yes")


def test_load_robustbench_without_robustbench(monkeypatch):
    monkeypatch.setitem(sys.modules, "robustbench", None)
    monkeypatch.setitem(sys.modules, "robustbench.utils", None)
    with pytest.raises(UserError) as info:
        load_robustbench("Zhang2019Theoretically")
    assert str(info.value) == (
        "robustbench is not installed: pip install 'adv-distill-bench[robustbench]'"
    )


def _zoo_entry(monkeypatch, name: str, build) -> types.ModuleType:
    """robustbench (offline) with a cifar10/Linf entry ``name`` whose download saves ``build()``."""
    rb = robustbench_utils(monkeypatch)
    entries = rb.all_models[rb.BenchmarkDataset("cifar10")][rb.ThreatModel("Linf")]
    monkeypatch.setitem(entries, name, {"model": build, "gdrive_id": f"id-of-{name}"})
    return rb


def test_load_robustbench_adds_feature_api(monkeypatch, tmp_path):
    def build():
        return nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 7), nn.ReLU(), nn.Linear(7, 10))

    rb = _zoo_entry(monkeypatch, "Tiny2099", build)
    calls = []
    monkeypatch.setattr(
        rb,
        "download_gdrive",
        lambda gid, path: (
            calls.append((gid, path.parent)) or torch.save(build().state_dict(), path)
        ),
    )
    model = load_robustbench("Tiny2099", model_dir=str(tmp_path))
    assert calls == [("id-of-Tiny2099", tmp_path / "cifar10" / "Linf")]
    assert model.arch == "robustbench:Tiny2099" and not model.training
    x = _rand(2, 3, 4, 4)
    assert model.num_features == 7
    with torch.no_grad():
        torch.testing.assert_close(model.forward_head(features(model, x)), model(x))


def test_load_robustbench_errors_are_one_line(monkeypatch, tmp_path):
    _zoo_entry(monkeypatch, "Tiny2099", nn.Identity)
    with pytest.raises(UserError, match="unknown RobustBench model 'Nobody2099'"):
        load_robustbench("Nobody2099", model_dir=tmp_path)
    with pytest.raises(UserError, match="unknown RobustBench dataset"):
        load_robustbench("Zhang2019Theoretically", dataset="mnist")
    with pytest.raises(UserError) as info:  # robustbench_utils's download: no network
        load_robustbench("Tiny2099", model_dir=tmp_path)
    assert "\n" not in str(info.value) and "OSError: no network in tests" in str(info.value)
    assert list((tmp_path / "cifar10" / "Linf").iterdir()) == []  # no partial file left

    def wrong_architecture(gid, path):
        torch.save({"weight": torch.zeros(2)}, path)

    rb = _zoo_entry(monkeypatch, "Other2099", lambda: nn.Linear(3, 4))
    monkeypatch.setattr(rb, "download_gdrive", wrong_architecture)
    with pytest.raises(UserError) as info:
        load_robustbench("Other2099", model_dir=tmp_path)
    message = str(info.value)
    assert "\n" not in message and "cannot load RobustBench model Other2099" in message


def test_pyautoattack_is_aliased_as_autoattack(monkeypatch):
    fake = types.ModuleType("pyautoattack")
    fake_state = types.ModuleType("pyautoattack.state")
    fake.state = fake_state
    monkeypatch.setitem(sys.modules, "pyautoattack", fake)
    monkeypatch.setitem(sys.modules, "pyautoattack.state", fake_state)
    monkeypatch.setitem(sys.modules, "autoattack", None)  # not importable; restored afterwards
    monkeypatch.setitem(sys.modules, "autoattack.state", None)
    _alias_autoattack()
    assert sys.modules["autoattack"] is fake
    assert sys.modules["autoattack.state"] is fake_state
