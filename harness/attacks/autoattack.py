"""AutoAttack (Croce & Hein, 2020) through the reference code, as an attack object.

Nothing of APGD, FAB or Square is re-implemented here: the adapter builds the library's own
``AutoAttack`` and runs its ``run_standard_evaluation`` on the batch. Two backends share the
attack code and differ in their wrapper API:

- ``pyautoattack`` (PyPI): ``AutoAttack(model, *, attacks, device="cpu", eps=0.3, norm, seed,
  version)``; ``run_standard_evaluation(x, y, /, *, batch_size, state_path)`` returns
  ``(x_adv, y_adv)``; it logs to the ``"auto-attack"`` logger.
- ``autoattack`` (fra31/auto-attack, from git): ``AutoAttack(model, norm, eps, seed, verbose,
  attacks_to_run, version, is_tf_model, device="cuda", log_path)``;
  ``run_standard_evaluation(x, y, bs, return_labels=False)`` returns ``x_adv``; it prints.

The adapter evens out their quirks: it passes ``device=`` (the model's) instead of their
defaults, keeps them quiet (the checks' flags become ``self.flags`` and Python warnings), puts
back the caller's RNG states (every sub-attack calls ``torch.manual_seed``), the trace function
(``check_dynamic`` ends with ``sys.settrace(None)``, which would stop coverage or a debugger)
and the parameters' gradients (FAB calls ``backward()``, which would fill the model's
``.grad``), and caps the number of target classes at ``classes - 1`` (the library indexes out
of range on models with fewer than 10 classes).
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import io
import itertools
import logging
import random
import sys
import warnings
from collections.abc import Iterator, Sequence
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as dist_version
from types import ModuleType
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from harness.attacks.base import Attack
from harness.attacks.linf import check_eps
from harness.registry import ATTACKS
from harness.utils.errors import UserError
from harness.utils.modes import eval_mode

NORMS = ("Linf", "L2", "L1")
VERSIONS = ("standard", "plus", "rand", "custom")
BACKENDS = ("auto", "pyautoattack", "autoattack")
SUBATTACKS = ("apgd-ce", "apgd-dlr", "fab", "square", "apgd-t", "fab-t")
#: The fewest classes each DLR-based attack can work with (its loss reads the 3rd/4th logit).
MIN_CLASSES = {"apgd-dlr": 3, "apgd-t": 4}
MISSING = "AutoAttack needs the package pyautoattack (pip install pyautoattack) or autoattack"
INSTALL = {
    "pyautoattack": "pip install pyautoattack",
    "autoattack": "pip install git+https://github.com/fra31/auto-attack",
}
LOGGER = "auto-attack"  # pyautoattack's logger


def import_backend(backend: str) -> tuple[str, ModuleType]:
    """The first importable AutoAttack package: ``(name of the real package, module)``.

    The name is the module's own, so an ``autoattack`` that is an alias of ``pyautoattack``
    (robustbench needs one) reports ``"pyautoattack"``.
    """
    candidates = ("pyautoattack", "autoattack") if backend == "auto" else (backend,)
    for name in candidates:
        try:
            module = importlib.import_module(name)
            module.AutoAttack  # noqa: B018 (a package of that name without the class is no use)
        except (ImportError, AttributeError):
            continue
        return module.__name__.split(".")[0], module
    if backend == "auto":
        raise UserError(MISSING)
    raise UserError(f"AutoAttack backend {backend!r} is not installed ({INSTALL[backend]})")


def original_api(cls: type) -> bool:
    """fra31's wrapper takes ``attacks_to_run``; pyautoattack's takes ``attacks``."""
    try:
        return "attacks_to_run" in inspect.signature(cls).parameters
    except (TypeError, ValueError):
        return False


def library_version(module: ModuleType, name: str) -> str:
    found = getattr(module, "__version__", None)
    if found:
        return str(found)
    try:
        return dist_version(name)
    except PackageNotFoundError:
        return "unknown"


@ATTACKS.register("autoattack")
class AutoAttack(Attack):
    """AutoAttack's ``run_standard_evaluation`` on the batch; robust points come back unchanged.

    ``version`` is the library's ("standard": APGD-CE, APGD-T, FAB-T, Square); ``attacks`` is
    the subset run by ``version="custom"``. ``n_iter`` (APGD, APGD-T, FAB), ``n_restarts``
    (all four), ``n_target_classes`` (APGD-T, FAB-T) and ``n_queries`` (Square) override the
    version's settings, for quick tests; ``None`` keeps the library's. ``seed`` goes to the
    library, which seeds the global RNG with it before each sub-attack; the caller's RNG states
    are restored afterwards.
    """

    def __init__(
        self,
        eps: float = 8 / 255,
        norm: str = "Linf",
        version: str = "standard",
        attacks: Sequence[str] | None = None,
        seed: int = 0,
        backend: str = "auto",
        n_iter: int | None = None,
        n_restarts: int | None = None,
        n_target_classes: int | None = None,
        n_queries: int | None = None,
    ) -> None:
        super().__init__(seed)
        if norm not in NORMS:
            raise UserError(f"unknown AutoAttack norm {norm!r}; valid: {', '.join(NORMS)}")
        if norm == "Linf":
            self.eps = check_eps("eps", eps)
        else:  # L2 and L1 radii are sums over pixels: 0.5 (L2) and 12 (L1) are usual
            self.eps = float(eps)
            if not np.isfinite(self.eps) or self.eps < 0:
                raise UserError(f"eps = {eps} must be a finite number >= 0")
        if version not in VERSIONS:
            raise UserError(f"unknown AutoAttack version {version!r}; valid: {', '.join(VERSIONS)}")
        if version == "custom":
            if not attacks:
                raise UserError(
                    'AutoAttack version="custom" needs attacks, a list from: '
                    + ", ".join(SUBATTACKS)
                )
            if isinstance(attacks, str):
                attacks = [attacks]
            unknown = [a for a in attacks if a not in SUBATTACKS]
            if unknown:
                raise UserError(
                    f"unknown AutoAttack attack(s) {', '.join(map(repr, unknown))}; "
                    f"valid: {', '.join(SUBATTACKS)}"
                )
            if len(set(attacks)) != len(attacks):
                raise UserError(f"AutoAttack attacks repeat a name: {list(attacks)}")
        elif attacks is not None:
            raise UserError(
                f"AutoAttack attacks are chosen by version={version!r}; pass attacks only with "
                f'version="custom"'
            )
        if backend not in BACKENDS:
            raise UserError(f"unknown AutoAttack backend {backend!r}; valid: {', '.join(BACKENDS)}")
        for name, value in (
            ("n_iter", n_iter),
            ("n_restarts", n_restarts),
            ("n_target_classes", n_target_classes),
            ("n_queries", n_queries),
        ):
            if value is not None and int(value) < 1:
                raise UserError(f"AutoAttack {name} must be >= 1, got {value}")
        self.norm = norm
        self.version = version
        self.attacks = list(attacks) if attacks is not None else None
        self.n_iter = None if n_iter is None else int(n_iter)
        self.n_restarts = None if n_restarts is None else int(n_restarts)
        self.n_target_classes = None if n_target_classes is None else int(n_target_classes)
        self.n_queries = None if n_queries is None else int(n_queries)
        self.backend, self._module = import_backend(backend)
        self._original_api = original_api(self._module.AutoAttack)
        self.library_version = library_version(self._module, self.backend)
        #: The library's check messages from the last call (randomised or dynamic defence,
        #: probabilities instead of logits, zero gradients, ...).
        self.flags: list[str] = []

    # -- the library object ---------------------------------------------------------------

    def build(self, model: nn.Module, device: torch.device | str) -> Any:
        """The library's ``AutoAttack`` for ``model`` on ``device``, with the overrides set."""
        cls = self._module.AutoAttack
        attacks = list(self.attacks) if self.version == "custom" else None
        common = {"eps": self.eps, "norm": self.norm, "seed": self.seed, "version": self.version}
        if self._original_api:
            aa = cls(model, verbose=False, attacks_to_run=attacks or [], device=device, **common)
        else:
            aa = cls(model, attacks=attacks, device=device, **common)
        aa.verbose = False  # pyautoattack's constructor sets True whatever it is given
        self._override(aa)
        return aa

    def _override(self, aa: Any) -> None:
        if self.n_iter is not None:
            for apgd in (aa.apgd, aa.apgd_targeted):
                set_apgd_iterations(apgd, self.n_iter)
            aa.fab.n_iter = self.n_iter
        if self.n_restarts is not None:
            for sub in (aa.apgd, aa.apgd_targeted, aa.fab, aa.square):
                sub.n_restarts = self.n_restarts
        if self.n_target_classes is not None:
            aa.apgd_targeted.n_target_classes = self.n_target_classes
            aa.fab.n_target_classes = self.n_target_classes
        if self.n_queries is not None:
            aa.square.n_queries = self.n_queries

    def attacks_run(self) -> list[str]:
        """The sub-attacks this configuration runs, in order (the version's list)."""
        if self.version == "custom":
            return list(self.attacks or [])
        with _quiet([]):
            return list(self.build(nn.Identity(), "cpu").attacks_to_run)

    def params(self) -> dict[str, Any]:
        return {
            "name": type(self).registry_name or "autoattack",
            "eps": self.eps,
            "norm": self.norm,
            "version": self.version,
            "attacks": self.attacks_run(),
            "seed": self.seed,
            "n_iter": self.n_iter,
            "n_restarts": self.n_restarts,
            "n_target_classes": self.n_target_classes,
            "n_queries": self.n_queries,
            "backend": self.backend,
            "library_version": self.library_version,
        }

    # -- the attack -----------------------------------------------------------------------

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        x = x.detach()
        if len(x) == 0:
            return x.clone()
        y = y.detach().to(device=x.device, dtype=torch.long)
        device = model_device(model, x)
        flags: list[str] = []
        with (
            eval_mode(model),
            frozen_parameters(model),
            preserved_rng(),
            kept_trace(),
            _quiet(flags),
            _no_autocast(device),
        ):
            self._reset_dynamic_check()
            with torch.no_grad():
                n_classes = int(model(x[:1].to(device)).shape[-1])
            aa = self.build(model, device)
            self._fit_classes(aa, n_classes)
            if self._original_api:
                x_adv = aa.run_standard_evaluation(x, y, bs=len(x))
            else:
                x_adv, _ = aa.run_standard_evaluation(x, y, batch_size=len(x))
        self.flags = list(dict.fromkeys(flags))
        for msg in self.flags:
            warnings.warn(f"AutoAttack: {msg}", stacklevel=2)
        return x_adv.detach().to(x.device)

    def _fit_classes(self, aa: Any, n_classes: int) -> None:
        """Refuse DLR attacks the model has too few classes for; cap the target classes."""
        for attack in aa.attacks_to_run:
            need = MIN_CLASSES.get(attack, 0)
            if n_classes < need:
                raise UserError(
                    f"AutoAttack's {attack} needs at least {need} classes and the model has "
                    f'{n_classes}; use version="custom" with other attacks'
                )
        for sub in (aa.apgd_targeted, aa.fab):
            sub.n_target_classes = max(1, min(sub.n_target_classes, n_classes - 1))

    def _reset_dynamic_check(self) -> None:
        """``checks.check_dynamic`` counts calls in a module-level dict it never resets."""
        funcs = getattr(getattr(self._module, "checks", None), "funcs", None)
        if isinstance(funcs, dict):
            for key in funcs:
                funcs[key] = 0


def set_apgd_iterations(apgd: Any, n_iter: int) -> None:
    """``n_iter`` and what APGD derives from it: pyautoattack derives the checkpoints in the
    constructor only (fra31's also in ``init_hyperparam``), with the same formulas."""
    apgd.n_iter = n_iter
    apgd.n_iter_orig = n_iter
    apgd.n_iter_2 = max(int(0.22 * n_iter), 1)
    apgd.n_iter_min = max(int(0.06 * n_iter), 1)
    apgd.size_decr = max(int(0.03 * n_iter), 1)


def model_device(model: nn.Module, x: Tensor) -> torch.device:
    """Where the model lives (the library moves each batch there), else where ``x`` is."""
    tensor = next(itertools.chain(model.parameters(), model.buffers()), None)
    return tensor.device if tensor is not None else x.device


@contextlib.contextmanager
def frozen_parameters(model: nn.Module) -> Iterator[None]:
    """No gradient into the parameters for the block (FAB backpropagates to the input with
    ``backward()``, which would also fill every parameter's ``.grad``)."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    for p in trainable:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in trainable:
            p.requires_grad_(True)


@contextlib.contextmanager
def preserved_rng() -> Iterator[None]:
    """The caller's RNG states back after the block: torch (CPU and every initialised CUDA
    device, plus a CUDA seed queued before initialisation), numpy and ``random``."""
    cuda = torch.cuda.is_available() and torch.cuda.is_initialized()
    devices = list(range(torch.cuda.device_count())) if cuda else []
    tracker = getattr(torch.cuda, "_lazy_seed_tracker", None)
    queued = vars(tracker).copy() if tracker is not None else None
    if queued is not None and "call_order" in queued:
        queued["call_order"] = list(queued["call_order"])
    np_state = np.random.get_state()
    py_state = random.getstate()
    try:
        with torch.random.fork_rng(devices=devices):
            yield
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
        if queued is not None:
            vars(tracker).update(queued)


@contextlib.contextmanager
def kept_trace() -> Iterator[None]:
    """``check_dynamic`` installs its own ``sys.settrace`` hook and then clears it."""
    previous = sys.gettrace()
    try:
        yield
    finally:
        sys.settrace(previous)


class _Collect(logging.Handler):
    def __init__(self, sink: list[str]) -> None:
        super().__init__(logging.WARNING)
        self.sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        self.sink.append(record.getMessage())


@contextlib.contextmanager
def _quiet(flags: list[str]) -> Iterator[None]:
    """Swallow the library's prints and log records; its warnings go to ``flags``."""
    logger = logging.getLogger(LOGGER)
    handler = _Collect(flags)
    propagate = logger.propagate
    logger.addHandler(handler)
    logger.propagate = False
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            yield
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate
        # fra31's checks print their flags as "Warning: ..." through its Logger
        flags.extend(
            line.removeprefix("Warning: ").strip()
            for line in out.getvalue().splitlines()
            if line.startswith("Warning: ")
        )


def _no_autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """Evaluation is fp32 even when the caller is inside an autocast region."""
    if device.type in ("cpu", "cuda"):
        return torch.autocast(device.type, enabled=False)
    return contextlib.nullcontext()
