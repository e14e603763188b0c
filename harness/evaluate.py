"""Accuracy of a model under an attack, batch by batch, in eval mode and fp32."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from harness.data import ArraySet, batches
from harness.modes import eval_mode

Attack = Callable[[nn.Module, Tensor, Tensor], Tensor]


def correct_mask(
    model: nn.Module,
    data: ArraySet,
    attack: Attack | None,
    *,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
    progress: bool = False,
    desc: str = "",
) -> Tensor:
    """Per-sample correctness (bool, CPU) on ``attack(model, x, y)``, or clean if None."""
    out = []
    with (
        eval_mode(model),
        tqdm(
            total=len(data),
            desc=desc,
            unit="img",
            unit_scale=True,
            disable=None if progress else True,  # None: only on a terminal
            leave=False,
        ) as bar,
    ):
        for x, y in batches(data, batch_size, device=device):
            x_in = attack(model, x, y) if attack is not None else x
            with torch.no_grad():
                out.append((model(x_in).argmax(1) == y).cpu())
            bar.update(len(y))
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.bool)


def accuracy(
    model: nn.Module,
    data: ArraySet,
    attack: Attack | None,
    *,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
) -> float:
    mask = correct_mask(model, data, attack, batch_size=batch_size, device=device)
    return float(mask.float().mean()) if len(mask) else float("nan")


def evaluate_suite(
    model: nn.Module,
    data: ArraySet,
    attacks: dict[str, dict[str, Any] | None],
    *,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
    seed: int = 0,
    progress: bool = False,
) -> dict[str, dict[str, Any]]:
    """Accuracy under each named attack config (``None`` = clean), with the attack's params."""
    from harness.registry import ATTACKS

    out: dict[str, dict[str, Any]] = {}
    for name, params in attacks.items():
        if params is None:
            attack, full = None, {"name": "clean"}
        else:
            params = dict(params)
            kind = params.pop("attack")
            if "seed" in inspect.signature(ATTACKS.get(kind)).parameters:
                params.setdefault("seed", seed)
            attack = ATTACKS.create(kind, **params)
            full = attack.params() if hasattr(attack, "params") else {"name": kind, **params}
        mask = correct_mask(
            model, data, attack, batch_size=batch_size, device=device, progress=progress, desc=name
        )
        out[name] = {"accuracy": float(mask.float().mean()), "n": len(mask), "params": full}
    return out
