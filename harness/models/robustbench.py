"""Pretrained teachers from the RobustBench model zoo (an optional extra), and foreign models.

``robustbench==1.1.1`` imports the original ``autoattack`` package at import time; here
AutoAttack comes as ``pyautoattack`` (same attack code, same submodule names), so it is aliased
under the old name first. Only ``load_model`` is used: RobustBench's ``benchmark()`` does not
work with pyautoattack.
"""

from __future__ import annotations

import sys
from types import MethodType

import torch
from torch import nn

from harness.errors import UserError

INSTALL_HINT = "pip install 'adv-distill-bench[robustbench]'"
DATASETS = ("cifar10", "cifar100", "imagenet")
THREAT_MODELS = ("Linf", "L2", "corruptions", "corruptions_3d")


def load_robustbench(
    name: str, dataset: str = "cifar10", threat_model: str = "Linf", model_dir: str = "models"
) -> nn.Module:
    """RobustBench model ``name`` in eval mode, with ``forward_features``/``forward_head``.

    Weights are read from ``model_dir/<dataset>/<threat_model>/<name>.pt`` and downloaded there
    when missing. RobustBench models take inputs in [0,1]; those that normalise do it inside.
    """
    if dataset not in DATASETS:
        raise UserError(f"unknown RobustBench dataset {dataset!r}; valid: {', '.join(DATASETS)}")
    if threat_model not in THREAT_MODELS:
        raise UserError(
            f"unknown RobustBench threat model {threat_model!r}; valid: {', '.join(THREAT_MODELS)}"
        )
    rb_utils = _import_robustbench()
    try:
        model = rb_utils.load_model(
            model_name=name, model_dir=model_dir, dataset=dataset, threat_model=threat_model
        )
    except KeyError:
        raise UserError(
            f"unknown RobustBench model {name!r} for {dataset}/{threat_model} "
            "(see robustbench.model_zoo for the names)"
        ) from None
    except Exception as exc:  # network, gdrive quota, truncated file, ...
        first = (str(exc).strip().splitlines() or [""])[0]
        raise UserError(
            f"cannot load RobustBench model {name!r} ({dataset}/{threat_model}) from "
            f"{model_dir}: {type(exc).__name__}: {first}"
        ) from None
    model.arch = f"robustbench:{name}"
    return with_feature_api(model)


def _import_robustbench():
    """``robustbench.utils``, importable with pyautoattack standing in for autoattack."""
    from harness.compat import import_torchvision

    import_torchvision()  # robustbench imports torchvision directly; apply the CPU fix-up first
    _alias_autoattack()
    try:
        import robustbench.utils as rb_utils
    except ModuleNotFoundError as exc:
        if exc.name in ("robustbench", "robustbench.utils"):
            raise UserError(f"robustbench is not installed: {INSTALL_HINT}") from None
        raise UserError(f"robustbench cannot be imported ({exc}): {INSTALL_HINT}") from None
    except ImportError as exc:
        raise UserError(f"robustbench cannot be imported ({exc}): {INSTALL_HINT}") from None
    return rb_utils


def _alias_autoattack() -> None:
    """Make ``import autoattack`` (and ``autoattack.state``) resolve to ``pyautoattack``."""
    try:
        import autoattack  # noqa: F401  (the original package wins when installed)

        return
    except ImportError:
        pass
    try:
        import pyautoattack
        import pyautoattack.state  # noqa: F401  (robustbench.eval imports EvaluationState)
    except ImportError:
        return
    sys.modules["autoattack"] = pyautoattack
    for mod_name, module in list(sys.modules.items()):
        if mod_name.startswith("pyautoattack."):
            sys.modules["autoattack." + mod_name.removeprefix("pyautoattack.")] = module


def with_feature_api(model: nn.Module) -> nn.Module:
    """Give a foreign model ``forward_features``, ``forward_head`` and ``num_features``.

    The model is changed in place rather than wrapped, so its state-dict keys stay those of
    RobustBench's checkpoints. The head is the last ``nn.Linear``; this assumes, as for every
    RobustBench classifier built as ``... -> pool -> fc``, that nothing follows it.
    """
    head = last_linear(model)
    model.head_name = next(n for n, m in model.named_modules() if m is head)
    model.num_features = head.in_features
    model.forward_features = MethodType(_forward_features, model)
    model.forward_head = MethodType(_forward_head, model)
    return model


def last_linear(model: nn.Module) -> nn.Linear:
    """The last ``nn.Linear`` registered in ``model``: the classifier of a foreign network."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise UserError(f"{type(model).__name__} has no nn.Linear layer to take features from")
    return linears[-1]


def linear_input(model: nn.Module, head: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """Run ``model(x)`` and return what ``head`` received (the last call's input)."""
    captured: list[torch.Tensor] = []
    handle = head.register_forward_hook(lambda _m, inputs, _out: captured.append(inputs[0]))
    try:
        model(x)
    finally:
        handle.remove()
    if not captured:
        raise UserError(f"{type(model).__name__}: its last nn.Linear is not called in forward")
    return captured[-1]


def _forward_features(self: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return linear_input(self, self.get_submodule(self.head_name), x)


def _forward_head(self: nn.Module, f: torch.Tensor) -> torch.Tensor:
    return self.get_submodule(self.head_name)(f)
