"""Loading weights saved by other code (DataParallel, torch.compile, RobustBench, AdaAD/DGAD).

Checkpoints in this field come wrapped in many ways; :func:`clean_state_dict` reduces them to a
plain ``name -> tensor`` dict, and :func:`load_weights` refuses one that does not fit the model
with a single line saying what differs, instead of PyTorch's multi-line ``RuntimeError``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from harness.utils.compat import load_checkpoint
from harness.utils.errors import UserError

# Keys under which training scripts store the weights (RobustBench, torch examples, AdaAD/DGAD,
# and this harness's own best.pt / last.pt).
_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "net", "student")
# Prefixes added by DataParallel/DDP, torch.compile and RobustBench's wrappers.
_PREFIXES = ("module.", "_orig_mod.", "model.")
_SHOWN = 3  # how many key names one error line lists


def clean_state_dict(obj: Any) -> dict[str, torch.Tensor]:
    """A plain state dict from a checkpoint object, whatever wrapped it.

    Unwraps ``{'state_dict': ...}``, ``{'model_state_dict': ...}``, ``{'model': ...}``,
    ``{'net': ...}`` and the harness's own ``{'student': ...}`` (possibly nested), strips the
    ``module.`` / ``_orig_mod.`` / ``model.`` prefixes when every key carries them (a prefix on
    only some keys is a real submodule name), and drops non-tensor entries (epoch counters,
    accuracies).
    """
    for _ in range(4):
        if not isinstance(obj, Mapping):
            raise UserError(f"checkpoint holds a {type(obj).__name__}, not a state dict")
        if any(isinstance(v, torch.Tensor) for v in obj.values()):
            break
        inner = next((obj[k] for k in _WRAPPER_KEYS if isinstance(obj.get(k), Mapping)), None)
        if inner is None:
            break
        obj = inner
    sd = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not sd:
        raise UserError("checkpoint holds no tensors")
    stripped = True
    while stripped:
        stripped = False
        for prefix in _PREFIXES:
            if all(k.startswith(prefix) for k in sd):
                sd = {k[len(prefix) :]: v for k, v in sd.items()}
                stripped = True
    return sd


def load_weights(model: nn.Module, source: Any, *, what: str = "checkpoint") -> nn.Module:
    """Load ``source`` (a path or a state dict, wrapped or not) into ``model`` strictly.

    Paths go through :func:`harness.utils.compat.load_checkpoint` (``weights_only=True``), so a
    checkpoint can never run code. Returns ``model``; raises :class:`UserError` with one line
    listing missing keys, unexpected keys and shape mismatches when the weights do not fit.
    """
    if isinstance(source, (str, os.PathLike)):
        label = f"{what} {os.fspath(source)}"
        obj = load_checkpoint(source)
    else:
        label = what
        obj = source
    sd = clean_state_dict(obj)
    problems = mismatch(model, sd)
    if problems:
        raise UserError(f"{label} does not fit model {model_name(model)!r}: {problems}")
    model.load_state_dict(sd, strict=True)
    return model


def model_name(model: nn.Module) -> str:
    """The registry name the factory recorded (``arch``), else the class name."""
    return str(getattr(model, "arch", None) or type(model).__name__)


def mismatch(model: nn.Module, sd: Mapping[str, torch.Tensor]) -> str:
    """'' when ``sd`` fits ``model`` exactly, else a one-line summary of the differences."""
    own = model.state_dict()
    # BatchNorm fills a missing counter itself (checkpoints from PyTorch < 0.4.1 lack it).
    missing = [k for k in own if k not in sd and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in sd if k not in own]
    shapes = [
        f"{k}: checkpoint {_shape(sd[k])} vs model {_shape(own[k])}"
        for k in own
        if k in sd and sd[k].shape != own[k].shape
    ]
    parts = []
    if missing:
        parts.append(_count(missing, "missing key"))
    if unexpected:
        parts.append(_count(unexpected, "unexpected key"))
    if shapes:
        parts.append(_count(shapes, "shape mismatch", "shape mismatches"))
    return ", ".join(parts)


def _shape(t: torch.Tensor) -> str:
    return "(" + ", ".join(str(d) for d in t.shape) + ")"


def _count(items: list[str], noun: str, plural: str | None = None) -> str:
    shown = ", ".join(items[:_SHOWN]) + (", ..." if len(items) > _SHOWN else "")
    name = noun if len(items) == 1 else (plural or noun + "s")
    return f"{len(items)} {name} ({shown})"
