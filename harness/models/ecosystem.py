"""Students from the ecosystem: any timm or torchvision classifier by name, no plugin needed.

``timm:resnet18`` or ``torchvision:resnet18`` wherever a model name goes (a grid's students, a
teacher's ``model``, ``--student``, ``bench eval --model``). The network is built with freshly
initialised weights (no download), ``num_classes`` outputs and, where it takes one, the data
set's image size; like the harness's own networks it takes inputs in [0,1] with no
normalisation (the normalisation of pretrained ImageNet weights has no meaning for a network
trained from scratch here). Its ``forward_features`` is the input of its last ``nn.Linear``
(:func:`harness.models.robustbench.with_feature_api`), as for RobustBench's models.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from functools import partial
from typing import Any

import torch
from torch import nn

from harness.models.base import check_dims
from harness.models.robustbench import with_feature_api
from harness.utils.errors import UserError

PREFIXES = ("timm", "torchvision")


def resolve(prefix: str, name: str) -> Callable[..., nn.Module]:
    """The factory of ``prefix:name`` (``num_classes``, ``image_size``), checked to exist."""
    if not name:
        raise UserError(f"model {prefix}:NAME needs a name, e.g. {prefix}:resnet18")
    if prefix == "timm":
        timm = _import("timm", "pip install timm")
        if not timm.is_model(name):
            raise UserError(f"unknown timm model {name!r} (timm.list_models() lists them)")
    else:
        models = _import("torchvision.models", "pip install torchvision")
        if name not in models.list_models(module=models):
            raise UserError(
                f"unknown torchvision classifier {name!r} "
                "(torchvision.models.list_models(module=torchvision.models) lists them)"
            )
    return partial(build, prefix, name)


def build(prefix: str, name: str, num_classes: int = 10, image_size: int = 32) -> nn.Module:
    """A fresh ``prefix:name`` network for ``num_classes`` classes and ``image_size`` inputs."""
    arch = f"{prefix}:{name}"
    check_dims(arch, num_classes, image_size, min_size=1)
    if prefix == "timm":
        create = _import("timm", "pip install timm").create_model
        make = partial(create, name, pretrained=False, num_classes=num_classes)
        model = _with_size(make, "img_size", image_size, arch)
    else:
        models = _import("torchvision.models", "pip install torchvision")
        make = partial(models.get_model, name, weights=None, num_classes=num_classes)
        model = _with_size(make, "image_size", image_size, arch)
    model.arch = arch
    _check_output(model, arch, num_classes, image_size)
    return with_feature_api(model)


def _import(module: str, hint: str) -> Any:
    try:
        if module.startswith("torchvision"):
            from harness.utils.compat import import_torchvision

            import_torchvision()  # the CPU fix-up of harness.utils.compat first
        return importlib.import_module(module)
    except ImportError:
        package = module.split(".")[0]
        raise UserError(f"{package} is not installed: {hint}") from None


def _with_size(make: Callable[..., nn.Module], key: str, size: int, arch: str) -> nn.Module:
    """``make(key=size)`` for networks whose size is fixed when built (ViTs), else ``make()``."""
    try:
        return make(**{key: size})
    except TypeError:
        pass
    try:
        return make()
    except Exception as exc:  # a family that needs arguments this harness does not give
        first = (str(exc).strip().splitlines() or [""])[0]
        raise UserError(f"cannot build model {arch!r}: {type(exc).__name__}: {first}") from None


def _check_output(model: nn.Module, arch: str, num_classes: int, image_size: int) -> None:
    """One forward of two black images: logits of shape (2, num_classes), else one line."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            out = model(torch.zeros(2, 3, image_size, image_size))
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [""])[0]
        raise UserError(
            f"model {arch!r} cannot classify {image_size}x{image_size} images: "
            f"{type(exc).__name__}: {first}"
        ) from None
    finally:
        model.train(was_training)
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (2, num_classes):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise UserError(
            f"model {arch!r} returns {shape} for 2 images, not logits of {num_classes} classes"
        )
