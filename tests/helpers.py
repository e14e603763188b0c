"""Small shared fixtures for tests: a synthetic data set, tiny networks, robustbench offline."""

from __future__ import annotations

import importlib.util
import json
import sys
from enum import Enum
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import nn

from harness.data import ArraySet, DatasetSplits


def synthetic_splits(
    n_train: int = 96,
    n_val: int = 32,
    n_test: int = 32,
    size: int = 8,
    classes: int = 3,
    seed: int = 0,
) -> DatasetSplits:
    """Class-dependent colour blobs: learnable in a few steps, so tests can assert progress."""
    g = torch.Generator().manual_seed(seed)

    def make(n: int) -> ArraySet:
        y = torch.randint(0, classes, (n,), generator=g)
        base = torch.linspace(40, 215, classes)[y][:, None, None, None]
        noise = torch.randint(-30, 31, (n, 3, size, size), generator=g)
        x = (base + noise).clamp(0, 255).to(torch.uint8)
        return ArraySet(x.contiguous(), y)

    return DatasetSplits("synthetic", make(n_train), make(n_val), make(n_test), classes, size)


class TinyNet(nn.Module):
    """Conv + BN + linear, with ``forward_features``/``forward_head`` like the harness models."""

    def __init__(self, classes: int = 3, width: int = 6) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU()
        )
        self.fc = nn.Linear(width, classes)
        self.num_features = width

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x).mean((2, 3))

    def forward_head(self, f: torch.Tensor) -> torch.Tensor:
        return self.fc(f)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def fit(net: nn.Module, data: ArraySet, steps: int, lr: float = 0.2) -> nn.Module:
    """Full-batch SGD on clean cross-entropy: a model with accuracy to attack, in a second."""
    opt = torch.optim.SGD(net.parameters(), lr=lr)
    x = data.x.float() / 255
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.cross_entropy(net(x), data.y).backward()
        opt.step()
    return net


def tiny_net(seed: int = 0, classes: int = 3) -> TinyNet:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return TinyNet(classes)


def throughput_json(
    path: Path, rows: list[tuple[str, str, str, float]], gpu: str = "NVIDIA H100 80GB HBM3"
) -> Path:
    """A ``benchmarks/throughput.py`` report at ``path``: training images/s per (method,
    student, teacher), as ``bench plan --throughput`` reads it."""
    report = {
        "environment": {"device": "cuda", "gpu": gpu},
        "training": [
            {"method": m, "student": s, "teacher": t, "harness": {"images_per_s": ips}}
            for m, s, t, ips in rows
        ],
    }
    path.write_text(json.dumps(report))
    return path


def bench(capsys, *args: str, stdin: str | None = None, monkeypatch=None) -> tuple[int, str, str]:
    """``bench ARGS`` in this process: (exit code, stdout, stderr); ``stdin`` (with
    ``monkeypatch``) is what the command reads, for its confirmation prompts."""
    from harness.cli import main

    if stdin is not None:
        import io

        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    try:
        main(list(args))
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    out = capsys.readouterr()
    return code, out.out, out.err


class BNNet(nn.Module):
    """flatten -> fc1 -> [BatchNorm1d] -> tanh -> fc2, float64: small enough to transcribe a
    method's official loop by hand, with the BatchNorm whose statistics its passes move."""

    def __init__(
        self,
        seed: int,
        scale: float = 1.0,
        bn: bool = True,
        in_dim: int = 48,
        hidden: int = 12,
        classes: int = 4,
    ) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.fc1 = nn.Linear(in_dim, hidden)
        self.bn = nn.BatchNorm1d(hidden) if bn else nn.Identity()
        self.fc2 = nn.Linear(hidden, classes)
        with torch.no_grad():
            for p in (*self.fc1.parameters(), *self.fc2.parameters()):
                p.copy_(torch.randn(p.shape, generator=g) * scale)
        self.double()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.bn(self.fc1(x.flatten(1))))

    def forward_head(self, f: torch.Tensor) -> torch.Tensor:
        return self.fc2(f)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


class FeatureMLP(nn.Module):
    """Flatten -> Linear(in_dim, hidden) -> tanh -> Linear(hidden, classes), no BN: small
    enough that every method's loss can be written out by hand in the tests."""

    def __init__(
        self, seed: int, hidden: int = 6, scale: float = 1.0, in_dim: int = 48, classes: int = 4
    ) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.fc1 = nn.Linear(in_dim, hidden)
        self.fc2 = nn.Linear(hidden, classes)
        self.num_features = hidden
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * scale)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.fc1(x.flatten(1)))

    def forward_head(self, f: torch.Tensor) -> torch.Tensor:
        return self.fc2(f)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def robustbench_utils(monkeypatch) -> ModuleType:
    """``robustbench.utils`` without the network: the installed one (its network-only imports
    stubbed where missing), else a stand-in with the names ``load_robustbench`` uses. Either
    way ``download_gdrive`` fails until a test replaces it."""
    from harness.models.robustbench import _import_robustbench
    from harness.utils.errors import UserError

    for dep in ("requests", "pkg_resources"):  # robustbench imports them; nothing here calls them
        if dep not in sys.modules and importlib.util.find_spec(dep) is None:
            monkeypatch.setitem(sys.modules, dep, ModuleType(dep))
    try:
        utils = _import_robustbench()
    except UserError:
        utils = _stand_in_robustbench(monkeypatch)

    def offline(gdrive_id: str, path: Any) -> None:
        raise OSError(f"no network in tests (gdrive_id={gdrive_id})")

    monkeypatch.setattr(utils, "download_gdrive", offline)
    return utils


def _stand_in_robustbench(monkeypatch) -> ModuleType:
    class BenchmarkDataset(Enum):
        cifar_10 = "cifar10"
        cifar_100 = "cifar100"
        imagenet = "imagenet"

    class ThreatModel(Enum):
        Linf = "Linf"
        L2 = "L2"
        corruptions = "corruptions"

    def rm_substr_from_state_dict(state_dict: dict, substr: str) -> dict:
        return {k[len(substr) :] if substr in k else k: v for k, v in state_dict.items()}

    def add_substr_to_state_dict(state_dict: dict, substr: str) -> dict:
        return {substr + k: v for k, v in state_dict.items()}

    def safe_load_state_dict(model: nn.Module, name: str, state_dict: dict, dataset) -> nn.Module:
        model.load_state_dict(state_dict, strict=True)
        return model

    utils = ModuleType("robustbench.utils")
    utils.BenchmarkDataset, utils.ThreatModel = BenchmarkDataset, ThreatModel
    utils.all_models = {d: {t: {} for t in ThreatModel} for d in BenchmarkDataset}
    utils.rm_substr_from_state_dict = rm_substr_from_state_dict
    utils.add_substr_to_state_dict = add_substr_to_state_dict
    utils._safe_load_state_dict = safe_load_state_dict
    utils.download_gdrive = None  # replaced by robustbench_utils
    package = ModuleType("robustbench")
    package.utils = utils
    monkeypatch.setitem(sys.modules, "robustbench", package)
    monkeypatch.setitem(sys.modules, "robustbench.utils", utils)
    return utils


def import_advertorch() -> ModuleType:
    """advertorch 0.2.3's attacks, the library the DGAD authors evaluated with, or a skip.

    Two adapters make it importable on today's torch: torchvision through
    :func:`harness.utils.compat.import_torchvision`, and ``zero_gradients`` (removed from
    ``torch.autograd.gradcheck``; only advertorch's FAB attack, unused here, calls it).
    """
    import pytest

    from harness.utils.compat import import_torchvision

    if importlib.util.find_spec("advertorch") is None:
        pytest.skip("advertorch is not installed (make setup installs it)")
    import_torchvision()
    importlib.import_module("torch.autograd.gradcheck")
    gradcheck = sys.modules["torch.autograd.gradcheck"]
    if not hasattr(gradcheck, "zero_gradients"):
        gradcheck.zero_gradients = lambda x: None
    return importlib.import_module("advertorch.attacks")
