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

Beyond one teacher and one step (MTARD, the Fair-* variants, ABSLD, PeerAiD):

- ``teacher_roles``: a method distilling from several teachers names their roles, e.g.
  ``("natural", "robust")``; its ``teacher`` argument (``perturb``, ``loss``, ``setup``) is then
  a mapping role → frozen network. Single-teacher methods keep ``()`` and get a network or None.
- ``start_epoch(epoch, lr_scale)`` / ``end_epoch(epoch, lr_scale)``: the trainer calls them
  around each epoch's steps (``end_epoch`` after the LR scheduler's step, before the checkpoint).
  ``lr_scale`` is the schedule's current factor (lr / initial lr), for rates the official code
  decays together with the LR.
- ``register_state(name, tensor)``: method state that lives across steps and epochs (adaptive
  weights, class counts, temperatures), kept on the device, updated there without host reads,
  saved by ``state_dict`` and restored by ``load_state_dict`` so a resumed run is exact.
- ``sample_weights(y)``: per-sample weights of the loss (None: every sample weighs 1); the
  methods with a Fair-* variant pass them to their loss.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Iterator, Mapping
from typing import Any, ClassVar, TypeAlias

import torch
from torch import Tensor, nn

from harness.attacks.linf import check_eps
from harness.attacks.pgd import pgd_maximize
from harness.registry import METHODS
from harness.schema import THREAT_DEFAULTS
from harness.utils.errors import UserError
from harness.utils.values import coerce

# What a method's ``teacher`` argument is: a frozen network, none (``needs_teacher = False``), or,
# for a method with ``teacher_roles``, one network per role.
Teachers: TypeAlias = nn.Module | Mapping[str, nn.Module] | None


def register_method(name: str) -> Callable[[type], type]:
    """Register a method class under ``name`` (what ``create_method`` and grids use)."""
    return METHODS.register(name)


class Method:
    """Base class; subclasses set ``defaults`` and implement ``perturb`` and ``loss``."""

    registry_name: ClassVar[str] = ""
    needs_teacher: ClassVar[bool] = True
    teacher_roles: ClassVar[tuple[str, ...]] = ()  # non-empty: ``teacher`` is a role → net map
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
        self._state_names: list[str] = []

    @classmethod
    def citation(cls) -> str:
        """One line naming the paper (what ``bench list methods`` shows): the first paragraph of
        the class's own docstring, else of its module's, less the pointer to the official code."""
        module = sys.modules.get(cls.__module__)
        doc = cls.__dict__.get("__doc__") or (module.__doc__ if module else None) or ""
        first = " ".join(doc.strip().split("\n\n")[0].split()).replace("``", "")
        return re.sub(r"\s*\(official code[^)]*\)", "", first)

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
    def perturb(self, student: nn.Module, teacher: Teachers, x: Tensor, y: Tensor) -> Tensor:
        """Inner maximisation: a detached x_adv in the eps-ball ∩ [0,1]; models' modes kept."""
        raise NotImplementedError

    def loss(
        self,
        student: nn.Module,
        teacher: Teachers,
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
    def setup(self, student: nn.Module, teacher: Teachers, x: Tensor) -> None:
        """Called once with a first batch before the optimiser is built (to size own modules)."""

    def modules(self) -> Iterator[nn.Module]:
        return iter(())

    def parameters(self) -> list[nn.Parameter]:
        return [p for module in self.modules() for p in module.parameters()]

    def to(self, device: torch.device | str) -> Method:
        for module in self.modules():
            module.to(device)
        for name in self._state_names:
            setattr(self, name, getattr(self, name).to(device))
        return self

    def train(self, mode: bool = True) -> Method:
        for module in self.modules():
            module.train(mode)
        return self

    # -- state across steps and epochs ------------------------------------------------------------
    def register_state(self, name: str, value: Tensor) -> None:
        """Make ``self.<name>`` a tensor of method state: ``to`` moves it, ``state_dict`` saves it,
        ``load_state_dict`` restores it. Update it on the device (reassign or in place)."""
        if name not in self._state_names:
            self._state_names.append(name)
        setattr(self, name, value)

    def start_epoch(self, epoch: int, lr_scale: float = 1.0) -> None:
        """Before the epoch's first step. ``lr_scale``: the LR schedule's factor in this epoch."""

    def end_epoch(self, epoch: int, lr_scale: float = 1.0) -> None:
        """After the epoch's last step and the scheduler's step (``lr_scale`` is the factor from
        the next epoch on), before the checkpoint: per-epoch updates of the method's state."""

    def sample_weights(self, y: Tensor) -> Tensor | None:
        """Per-sample weights of the loss (Fair-*'s class weights); None: all samples weigh 1."""
        return None

    def state_dict(self) -> dict[str, Any]:
        """The modules' state dicts under "0", "1", ... and the registered state under "state"."""
        state: dict[str, Any] = {str(i): m.state_dict() for i, m in enumerate(self.modules())}
        if self._state_names:
            state["state"] = {n: getattr(self, n).detach().clone() for n in self._state_names}
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for i, module in enumerate(self.modules()):
            module.load_state_dict(state[str(i)])
        saved = state.get("state", {})
        missing = [n for n in self._state_names if n not in saved]
        if missing:
            raise UserError(
                f"the checkpoint lacks {self.registry_name}'s state {', '.join(missing)}"
            )
        for name, value in saved.items():
            current = getattr(self, name, None) if name in self._state_names else None
            if current is not None:  # where setup put it: the run's device, the state's dtype
                value = value.to(device=current.device, dtype=current.dtype)
            self.register_state(name, value.clone())

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in sorted(self.hparams.items()))
        return f"{type(self).__name__}({args})"
