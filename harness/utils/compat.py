"""Adapters for the environment: torchvision on CPU torch, safe checkpoint loading, devices."""

from __future__ import annotations

import contextlib
import sys
import warnings
from types import ModuleType
from typing import Any

import torch

_NMS_SCHEMA = "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor"


def import_torchvision() -> ModuleType:
    """Import torchvision, also where its C++ ops do not match the installed torch.

    A CUDA build of torchvision next to a CPU build of torch fails at import with
    ``operator torchvision::nms does not exist``: its meta registrations expect the two op
    schemas its extension would have defined. Defining them first makes the pure-Python parts
    (datasets, transforms) importable; the compiled ops stay unavailable, and nothing here uses
    them.
    """
    try:
        import torchvision
    except RuntimeError as exc:
        if "torchvision::" not in str(exc):
            raise
        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]
        for op in ("nms", "qnms"):
            with contextlib.suppress(RuntimeError):  # defined by an earlier attempt
                torch.library.define(f"torchvision::{op}", _NMS_SCHEMA)
        import torchvision
    return torchvision


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def resolve_device(name: str | None) -> torch.device:
    from harness.utils.errors import UserError

    if name in (None, "auto"):
        return default_device()
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise UserError(f"bad device {name!r}: {exc}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device {name!r} requested but CUDA is not available")
    return device


def load_checkpoint(path: Any, map_location: Any = "cpu") -> Any:
    """``torch.load`` that never unpickles code: ``weights_only=True`` always."""
    from harness.utils.errors import UserError

    try:
        with warnings.catch_warnings():  # a stray line before the one-line error or the result
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise UserError(f"checkpoint not found: {path}") from None
    except Exception as exc:  # UnpicklingError, truncated zip, ...
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"cannot load checkpoint {path}: {first}") from None
