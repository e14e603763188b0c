"""Pretrained teachers from the RobustBench model zoo (an optional extra), and foreign models.

``robustbench==1.1.1`` imports the original ``autoattack`` package at import time; here
AutoAttack comes as ``pyautoattack`` (same attack code, same submodule names), so it is aliased
under the old name first. RobustBench's ``benchmark()`` does not work with pyautoattack, and its
``load_model`` downloads and unpickles in one call; so this module takes the architecture and
the download from RobustBench's zoo, checks the file's sha256 in between
(:mod:`harness.utils.downloads`), and loads the weights itself with ``weights_only=True``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from types import MethodType, ModuleType
from typing import Any

import torch
from torch import nn

from harness.utils.errors import UserError

INSTALL_HINT = "pip install 'adv-distill-bench[robustbench]'"
DATASETS = ("cifar10", "cifar100", "imagenet")
THREAT_MODELS = ("Linf", "L2", "corruptions", "corruptions_3d")


def load_robustbench(
    name: str,
    dataset: str = "cifar10",
    threat_model: str = "Linf",
    model_dir: str | Path = "models",
    sha256: str | None = None,
) -> nn.Module:
    """RobustBench model ``name`` in eval mode, with ``forward_features``/``forward_head``.

    Weights are read from ``model_dir/<dataset>/<threat_model>/<name>.pt`` (RobustBench's own
    layout, so its earlier downloads are reused) and downloaded there when missing. The file's
    sha256 must be ``sha256`` when given, else the one recorded at its first use; the hashes end
    up in ``model.weights_sha256`` (file name -> hash). RobustBench models take inputs in [0,1];
    those that normalise do it inside.
    """
    if dataset not in DATASETS:
        raise UserError(f"unknown RobustBench dataset {dataset!r}; valid: {', '.join(DATASETS)}")
    if threat_model not in THREAT_MODELS:
        raise UserError(
            f"unknown RobustBench threat model {threat_model!r}; valid: {', '.join(THREAT_MODELS)}"
        )
    rb_utils = _import_robustbench()
    try:
        entry = rb_utils.all_models[rb_utils.BenchmarkDataset(dataset)][
            rb_utils.ThreatModel(threat_model)
        ][name]
    except (KeyError, ValueError):
        raise UserError(
            f"unknown RobustBench model {name!r} for {dataset}/{threat_model} "
            "(see robustbench.model_zoo for the names)"
        ) from None
    what = f"RobustBench model {name} ({dataset}/{threat_model})"
    folder = Path(model_dir) / dataset / threat_model
    try:
        model, hashes = _build(rb_utils, entry, name, dataset, folder, sha256, what)
    except UserError:
        raise
    except Exception as exc:  # an architecture that does not take the weights, ...
        first = (str(exc).strip().splitlines() or [""])[0]
        raise UserError(f"cannot load {what}: {type(exc).__name__}: {first}") from None
    if sha256 is None and hashes:
        from harness.utils.downloads import warn_once

        digest, *more = hashes.values()
        pin = "ensembles cannot be pinned" if more else f'pin it with sha256 = "{digest}"'
        warn_once(f"{what} is trusted on first use, not pinned ({pin})")
    model.arch = f"robustbench:{name}"
    model.weights_sha256 = hashes
    return with_feature_api(model.eval())


#: The RobustBench leaderboard a data set of this many classes is evaluated against by default.
ZOO_BY_CLASSES = {10: "cifar10", 100: "cifar100", 1000: "imagenet"}


def zoo_dataset(dataset: str, num_classes: int, zoo: str | None = None) -> str:
    """The RobustBench leaderboard (``cifar10``, ``cifar100``, ``imagenet``) to take a model
    from when it is evaluated on, or teaches on, ``dataset``: ``zoo`` when given, the data set
    itself when it is one of them, else the one with ``num_classes`` classes (an npz subset of
    CIFAR-10 takes CIFAR-10's models)."""
    if zoo is not None:
        if zoo not in DATASETS:
            raise UserError(f"unknown RobustBench dataset {zoo!r}; valid: {', '.join(DATASETS)}")
        return zoo
    if dataset in DATASETS:
        return dataset
    if num_classes in ZOO_BY_CLASSES:
        return ZOO_BY_CLASSES[num_classes]
    raise UserError(
        f"data set {dataset!r} has {num_classes} classes, like no RobustBench leaderboard: "
        f"name the model's with --zoo (a grid teacher: zoo = ...), one of {', '.join(DATASETS)}"
    )


def check_classes(model: nn.Module, num_classes: int, what: str, dataset: str) -> nn.Module:
    """``model`` if its classifier has ``num_classes`` outputs, else a one-line error."""
    out = last_linear(model).out_features
    if out != num_classes:
        raise UserError(
            f"{what} has {out} outputs and data set {dataset!r} {num_classes} classes: "
            "evaluate it on a data set of its own classes"
        )
    return model


def _build(
    rb_utils: ModuleType,
    entry: dict[str, Any],
    name: str,
    dataset: str,
    folder: Path,
    sha256: str | None,
    what: str,
) -> tuple[nn.Module, dict[str, str]]:
    """What robustbench 1.1.1's ``load_model`` does, with the hash check before the load."""
    from harness.utils.compat import load_checkpoint
    from harness.utils.downloads import verified

    ds = rb_utils.BenchmarkDataset(dataset)
    if dataset == "imagenet" and "Standard" in name:  # torchvision's pretrained weights
        if sha256:
            raise UserError(f"{what} has no weight file of its own to check sha256 against")
        return entry["model"](), {}
    ids = entry["gdrive_id"]
    if not isinstance(ids, list):  # one file
        path = folder / f"{name}.pt"
        fetch = lambda tmp: rb_utils.download_gdrive(ids, tmp)  # noqa: E731
        hashes = {path.name: verified(path, fetch, sha256, what=what)}
        model = entry["model"]()
        checkpoint = load_checkpoint(path)
        if "Kireev2021Effectiveness" in name or name == "Andriushchenko2020Understanding":
            checkpoint = checkpoint["last"]  # RobustBench's choice of its 'last' and 'best'
        state = _state_dict(rb_utils, checkpoint, ("module.", "model."))
        if dataset == "imagenet":  # the zoo's input normalisation is an outer layer
            state = rb_utils.add_substr_to_state_dict(state, "model.")
        return rb_utils._safe_load_state_dict(model, name, state, ds), hashes
    if sha256:
        raise UserError(f"{what} is an ensemble of {len(ids)} files; sha256 pins a single file")
    model = entry["model"]()
    hashes = {}
    for i, gid in enumerate(ids):
        path = folder / f"{name}.pt_m{i}.pt"
        fetch = lambda tmp, gid=gid: rb_utils.download_gdrive(gid, tmp)  # noqa: E731
        hashes[path.name] = verified(path, fetch, None, what=f"{what} member {i}")
        state = _state_dict(rb_utils, load_checkpoint(path), ("module.",))
        model.models[i] = rb_utils._safe_load_state_dict(model.models[i], name, state, ds)
        model.models[i].eval()
    return model, hashes


def _state_dict(rb_utils: ModuleType, checkpoint: Any, prefixes: tuple[str, ...]) -> Any:
    """The checkpoint's state dict with RobustBench's prefix fix-ups (``module.``, ...)."""
    if isinstance(checkpoint, dict) and "state_dict" in checkpoint:
        checkpoint = checkpoint["state_dict"]
    for prefix in prefixes:
        checkpoint = rb_utils.rm_substr_from_state_dict(checkpoint, prefix)
    return checkpoint


def _import_robustbench():
    """``robustbench.utils``, importable with pyautoattack standing in for autoattack."""
    from harness.utils.compat import import_torchvision

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
