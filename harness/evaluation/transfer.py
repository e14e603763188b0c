"""Transfer evaluation: adversarial examples made on naturally trained surrogates (ResNet-34,
VGG-16 by default), then fed to each student.

The surrogates are ordinary runs of the ``natural`` method, trained by the harness once per data
set and reused by every grid. Their adversarial examples are cached under
``<store>/transfer_cache/<key>.pt`` with ``key`` = hash(surrogate checkpoint sha256, attack
config, test images, seed): a grid of 30 students attacks each surrogate once.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from harness.attacks.base import build_attack
from harness.data import ArraySet, batches
from harness.utils.atomic import save_atomic
from harness.utils.compat import load_checkpoint
from harness.utils.modes import eval_mode
from harness.utils.values import config_hash, derive_seed


def data_fingerprint(data: ArraySet) -> str:
    h = hashlib.sha256()
    h.update(data.x.contiguous().numpy().tobytes())
    h.update(data.y.contiguous().numpy().tobytes())
    return h.hexdigest()


def cache_key(surrogate_sha: str, config: dict[str, Any], data: ArraySet, seed: int) -> str:
    return config_hash(
        {
            "surrogate": surrogate_sha,
            "attack": config,
            "data": data_fingerprint(data),
            "seed": seed,
        },
        length=20,
    )


def surrogate_examples(
    surrogate: nn.Module,
    surrogate_sha: str,
    data: ArraySet,
    config: dict[str, Any],
    *,
    cache_dir: Path,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
    seed: int = 0,
) -> Tensor:
    """Adversarial versions of ``data`` (float32, CPU) made on the surrogate; cached."""
    path = Path(cache_dir) / f"{cache_key(surrogate_sha, config, data, seed)}.pt"
    if path.exists():
        return load_checkpoint(path)["x_adv"]
    out = []
    with eval_mode(surrogate):
        for b, (x, y) in enumerate(batches(data, batch_size, device=device)):
            attack = build_attack(config, derive_seed(seed, "transfer", b))
            out.append(attack(surrogate, x, y).detach().cpu())
    x_adv = torch.cat(out)
    save_atomic({"x_adv": x_adv, "config": config, "surrogate": surrogate_sha}, path)
    return x_adv


def transfer_accuracy(
    student: nn.Module,
    x_adv: Tensor,
    y: Tensor,
    *,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
) -> Tensor:
    """Per-sample correctness of ``student`` on precomputed adversarial inputs."""
    masks = []
    with eval_mode(student), torch.no_grad():
        for start in range(0, len(y), batch_size):
            xb = x_adv[start : start + batch_size].to(device)
            yb = y[start : start + batch_size].to(device)
            masks.append((student(xb).argmax(1) == yb).cpu())
    return torch.cat(masks)
