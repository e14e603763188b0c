"""The fast path: how a training run uses the GPU, switch by switch; the results stay the method's.

Adversarial distillation spends ~11 student and ~10 teacher forward/backward passes per image,
so the way a step runs decides whether a grid costs tens or hundreds of GPU-hours. Each switch
is independent and recorded with the run:

- ``resident``: the training (and selection) set copied to the device once, as uint8; batches
  are gathered and augmented (crop with padding, flip) there, with the epoch's random draws
  made up front, so no step waits on the host.
- ``amp``: bf16 autocast for the student's forwards in the training step and its inner
  maximisation. Every method's outer loss runs in fp32 with autocast off, and teacher outputs
  used as targets or decisions are computed in fp32 (``methods.common.full_precision``,
  ``constants``); evaluation attacks never run under autocast.
- ``channels_last``: NHWC weights and inputs, the layout tensor cores want for convolutions.
- ``compile``: ``torch.compile`` of student and teacher, in place (checkpoints keep their keys),
  each model's entry points with caches of their own and the batch dimension dynamic, so every
  run of a grid is compiled (:mod:`harness.training.compiling`); a graph that fails to
  compile runs eager instead of stopping the run, and the run's record says so.
- ``fused``: the fused SGD kernel (one launch for every parameter) instead of a per-tensor
  loop.

``auto`` turns every switch on for CUDA and off elsewhere; on CPU the same code runs with the
switches off unless asked for.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import torch
from torch import nn

from harness.training.compiling import RunCompiler
from harness.utils.errors import UserError

SWITCHES = ("resident", "amp", "channels_last", "compile", "fused")


@dataclass(frozen=True)
class FastPath:
    """Which parts of the fast path a run uses (all off: the plain fp32 loop)."""

    resident: bool = False
    amp: bool = False
    channels_last: bool = False
    compile: bool = False
    fused: bool = False

    @classmethod
    def auto(cls, device: torch.device | str) -> FastPath:
        """Every switch on CUDA, none elsewhere."""
        on = torch.device(device).type == "cuda"
        return cls(**dict.fromkeys(SWITCHES, on))

    @classmethod
    def parse(cls, spec: str, device: torch.device | str) -> FastPath:
        """``auto``, ``off``, ``all``, or switches applied left to right, e.g. ``auto,-compile``
        or ``amp,channels_last`` (a bare or ``+`` name turns a switch on, ``-`` off)."""
        fast = cls()
        for token in (t.strip() for t in str(spec).split(",")):
            if token == "auto":
                fast = cls.auto(device)
            elif token in ("off", "none"):
                fast = cls()
            elif token == "all":
                fast = cls(**dict.fromkeys(SWITCHES, True))
            elif token.lstrip("+-") in SWITCHES:
                fast = replace(fast, **{token.lstrip("+-"): not token.startswith("-")})
            else:
                raise UserError(
                    f"unknown fast-path switch {token!r} in {spec!r}; valid: auto, off, all, "
                    f"{', '.join(SWITCHES)} (prefix - to turn one off)"
                )
        return fast

    def as_dict(self) -> dict[str, bool]:
        return asdict(self)

    def __str__(self) -> str:
        on = [f.name for f in fields(self) if getattr(self, f.name)]
        return ",".join(on) or "off"

    # -- applying it ------------------------------------------------------------------------
    def prepare(
        self, model: nn.Module | None, compiler: RunCompiler | None = None, role: str = "model"
    ) -> nn.Module | None:
        """Put ``model`` in the fast path's memory format and compile it (in place) with the
        run's ``compiler`` (a fresh one when not given)."""
        if model is None:
            return None
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        if self.compile:
            (compiler or RunCompiler()).compile(model, role)
        return model

    def inputs(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    @contextlib.contextmanager
    def autocast(self, device: torch.device | str) -> Iterator[None]:
        """bf16 autocast for a training step when ``amp`` is on; nothing otherwise."""
        device_type = torch.device(device).type
        with torch.autocast(device_type, dtype=torch.bfloat16, enabled=self.amp):
            yield

    def optimizer_options(self, device: torch.device | str) -> dict[str, Any]:
        """Keyword arguments for ``torch.optim.SGD``: fused on CUDA when asked for."""
        if self.fused and torch.device(device).type == "cuda":
            return {"fused": True}
        return {}
