"""What every attack object shares: ``attack(model, x, y) -> x_adv``, its parameters, its RNG."""

from __future__ import annotations

import inspect
from typing import Any, ClassVar

import torch
from torch import Tensor, nn


class Attack:
    """Base class of registered attacks.

    ``__call__`` runs the model in eval mode and leaves it in the mode it was found in.
    ``params()`` is the attack's full configuration, stored beside every accuracy it produces.
    Randomness comes from a private generator seeded with ``seed``; the global RNG is never
    touched.
    """

    registry_name: ClassVar[str] = ""

    def __init__(self, seed: int = 0) -> None:
        self.seed = int(seed)
        self._generators: dict[torch.device, torch.Generator] = {}

    def generator(self, device: torch.device) -> torch.Generator:
        device = torch.device(device)
        if device not in self._generators:
            self._generators[device] = torch.Generator(device=device).manual_seed(self.seed)
        return self._generators[device]

    def params(self) -> dict[str, Any]:
        out = {k: v for k, v in vars(self).items() if not k.startswith("_")}
        for key, value in out.items():
            if callable(value):
                out[key] = getattr(value, "__name__", "custom")
        return {"name": type(self).registry_name, **out}

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        raise NotImplementedError


def build_attack(config: dict[str, Any], seed: int) -> Any:
    """The registered attack an attack config names (``{"attack": "pgd", "steps": 10}``), with
    ``seed`` for the attacks that take one."""
    from harness.registry import ATTACKS

    params = dict(config)
    kind = params.pop("attack")
    if "seed" in inspect.signature(ATTACKS.get(kind)).parameters:
        params["seed"] = seed
    return ATTACKS.create(kind, **params)
