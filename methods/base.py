"""The method contract: hyperparameters, the inner maximisation and the outer loss.

A method is a thin class around pure loss functions (see ``methods/trades.py``)::

    @register_method("trades")
    class TRADES(Method):
        needs_teacher = False
        defaults = {"beta": 6.0, "init": "normal"}

        def perturb(self, student, teacher, x, y): ...
        def loss(self, student, teacher, x, x_adv, y, epoch=0): ...

Hyperparameters are the keys of ``defaults`` plus the shared threat model (``eps``,
``step_size``, ``steps``); they become attributes, are type-checked against their defaults, and
unknown names are refused with the list of valid ones. Randomness (attack starts) comes from a
private generator the trainer reseeds each epoch, never from the global RNG.

Each method's docstring names the official file and commit its defaults follow; a method
reproduces that code's random start (kind, scale, clipping) and its sequence of train-mode
student forwards (they decide the BN running statistics), and computes its loss in fp32
(``methods.common.full_precision``) whatever the step's autocast.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from harness.attacks.linf import check_eps
from harness.attacks.pgd import pgd_maximize
from harness.registry import METHODS
from harness.schema import THREAT_DEFAULTS
from harness.utils.errors import UserError
from harness.utils.values import coerce


def register_method(name: str) -> Callable[[type], type]:
    """Register a method class under ``name`` (what ``create_method`` and grids use)."""
    return METHODS.register(name)


class Method:
    """Base class; subclasses set ``defaults`` and implement ``perturb`` and ``loss``."""

    registry_name: ClassVar[str] = ""
    needs_teacher: ClassVar[bool] = True
    defaults: ClassVar[dict[str, Any]] = {}
    choices: ClassVar[dict[str, tuple[Any, ...]]] = {}
    positive: ClassVar[tuple[str, ...]] = ()  # hyperparameters that must be > 0
    nonnegative: ClassVar[tuple[str, ...]] = ("steps",)  # ... >= 0
    unit: ClassVar[tuple[str, ...]] = ()  # ... in [0, 1]

    def __init__(self, /, **hparams: Any) -> None:
        allowed = {**THREAT_DEFAULTS, **self.defaults}
        unknown = sorted(set(hparams) - set(allowed))
        if unknown:
            raise UserError(
                f"unknown hyperparameter(s) {', '.join(unknown)} for method "
                f"{self.registry_name!r}; valid: {', '.join(sorted(allowed))}"
            )
        for key, default in allowed.items():
            what = f"{self.registry_name}.{key}"
            value = coerce(hparams.get(key, default), default, what, self.choices.get(key))
            setattr(self, key, value)
        self.eps = check_eps("eps", self.eps)
        self.step_size = check_eps("step_size", self.step_size)
        rules = [
            (Method.nonnegative + self.nonnegative, lambda v: v >= 0, ">= 0"),
            (self.positive, lambda v: v > 0, "> 0"),
            (self.unit, lambda v: 0 <= v <= 1, "in [0, 1]"),
        ]
        for keys, ok, text in rules:
            for key in keys:
                if not ok(getattr(self, key)):
                    raise UserError(
                        f"{self.registry_name}.{key} must be {text}, got {getattr(self, key)!r}"
                    )
        self._seed = 0
        self._generators: dict[torch.device, torch.Generator] = {}

    # -- hyperparameters and randomness -------------------------------------------------------
    @property
    def hparams(self) -> dict[str, Any]:
        """Every hyperparameter with its resolved value (what a run's config records)."""
        return {key: getattr(self, key) for key in {**THREAT_DEFAULTS, **self.defaults}}

    def reseed(self, seed: int) -> None:
        self._seed = int(seed)
        self._generators.clear()

    def generator(self, device: torch.device) -> torch.Generator:
        device = torch.device(device)
        if device not in self._generators:
            self._generators[device] = torch.Generator(device=device).manual_seed(self._seed)
        return self._generators[device]

    def pgd(
        self,
        objective: Callable[[Tensor], Tensor],
        x: Tensor,
        init: str,
        *,
        clamp_start: bool = False,
    ) -> Tensor:
        """The shared PGD loop under this method's threat model and RNG. ``init`` and
        ``clamp_start`` (the start clipped to [0,1] before the first gradient) are the
        method's official start: each method passes what its authors' code does."""
        return pgd_maximize(
            objective,
            x,
            eps=self.eps,
            step_size=self.step_size,
            steps=self.steps,
            init=init,
            generator=self.generator(x.device),
            clamp_start=clamp_start,
        )

    # -- the contract ---------------------------------------------------------------------------
    def perturb(
        self, student: nn.Module, teacher: nn.Module | None, x: Tensor, y: Tensor
    ) -> Tensor:
        """Inner maximisation: a detached x_adv in the eps-ball ∩ [0,1]; models' modes kept."""
        raise NotImplementedError

    def loss(
        self,
        student: nn.Module,
        teacher: nn.Module | None,
        x: Tensor,
        x_adv: Tensor,
        y: Tensor,
        epoch: int = 0,
    ) -> tuple[Tensor, dict[str, Any]]:
        """Outer objective (scalar, backpropagates into the student) and values to log.

        Logged values are floats or detached 0-d tensors; tensors let the trainer average them
        on the device without a host synchronisation every step.
        """
        raise NotImplementedError

    # -- methods with trainable modules of their own (GACD's heads) ------------------------------
    def setup(self, student: nn.Module, teacher: nn.Module | None, x: Tensor) -> None:
        """Called once with a first batch before the optimiser is built (to size own modules)."""

    def modules(self) -> Iterator[nn.Module]:
        return iter(())

    def parameters(self) -> list[nn.Parameter]:
        return [p for module in self.modules() for p in module.parameters()]

    def to(self, device: torch.device | str) -> Method:
        for module in self.modules():
            module.to(device)
        return self

    def train(self, mode: bool = True) -> Method:
        for module in self.modules():
            module.train(mode)
        return self

    def state_dict(self) -> dict[str, Any]:
        return {str(i): m.state_dict() for i, m in enumerate(self.modules())}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for i, module in enumerate(self.modules()):
            module.load_state_dict(state[str(i)])

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in sorted(self.hparams.items()))
        return f"{type(self).__name__}({args})"
