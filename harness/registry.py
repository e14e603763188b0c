"""One registry per concern (methods, models, datasets, attacks), filled two ways.

Built-ins register through the same decorator third-party code uses; installed plugins declare
an entry point in the group ``bench.<kind>`` whose value is a module (imported for its
decorators) or an object (registered under the entry point's name). Both are loaded lazily, on
the first lookup, and a plugin that fails to import is skipped with a warning naming it.
"""

from __future__ import annotations

import fnmatch
import importlib
import inspect
import warnings
from collections.abc import Callable, Iterable
from importlib.metadata import entry_points
from typing import Any

from harness.utils.errors import UserError


class Registry:
    """Names → factories (functions or classes) for one concern."""

    def __init__(self, kind: str, group: str, builtin_modules: Iterable[str]) -> None:
        self.kind = kind
        self.group = group
        self._builtin_modules = tuple(builtin_modules)
        self._entries: dict[str, Callable[..., Any]] = {}
        self._loaded = False
        self._loading = False
        # "prefix:name" -> factory, for names of another package's catalogue (timm:resnet18)
        self._prefixes: dict[str, Callable[[str], Callable[..., Any]]] = {}

    def add_prefix(self, prefix: str, resolve: Callable[[str], Callable[..., Any]]) -> None:
        """Names ``prefix:NAME`` resolve to ``resolve(NAME)`` (a factory; a user error when
        ``NAME`` is unknown or its package missing) instead of the registered names."""
        self._prefixes[prefix] = resolve

    def register(self, name: str | None = None, *, override: bool = False) -> Callable:
        """Decorator: ``@METHODS.register("dgad")``; the default name is the object's name."""

        def deco(obj: Callable[..., Any]) -> Callable[..., Any]:
            key = name or obj.__name__
            existing = self._entries.get(key)
            if existing is not None and existing is not obj and not override:
                raise ValueError(f"{self.kind} {key!r} is already registered by {existing!r}")
            self._entries[key] = obj
            if isinstance(obj, type) and hasattr(obj, "registry_name"):
                obj.registry_name = key  # classes that declare it learn the name they answer to
            return obj

        return deco

    def _load(self) -> None:
        if self._loaded or self._loading:
            return
        self._loading = True
        try:
            for module in self._builtin_modules:
                importlib.import_module(module)
            for ep in entry_points(group=self.group):
                try:
                    obj = ep.load()
                except Exception as exc:  # a broken plugin must not take the harness down
                    warnings.warn(
                        f"skipping {self.kind} plugin {ep.name!r} ({ep.value}): "
                        f"{type(exc).__name__}: {exc}",
                        stacklevel=2,
                    )
                    continue
                if not inspect.ismodule(obj) and ep.name not in self._entries:
                    self.register(ep.name)(obj)
            self._loaded = True
        finally:
            self._loading = False

    def names(self, pattern: str | None = None) -> list[str]:
        """Registered names, sorted; ``pattern`` is a shell-style wildcard (``"resnet*"``) or a
        part of the name (``"res"``): see :func:`match_names`."""
        self._load()
        return match_names(sorted(self._entries), pattern)

    def __contains__(self, name: object) -> bool:
        self._load()
        if isinstance(name, str) and name.partition(":")[0] in self._prefixes:
            try:
                self.get(name)
            except UserError:
                return False
            return True
        return isinstance(name, str) and name in self._entries

    def get(self, name: str) -> Callable[..., Any]:
        self._load()
        if isinstance(name, str) and ":" in name and name not in self._entries:
            prefix, _, rest = name.partition(":")
            if prefix in self._prefixes:
                return self._prefixes[prefix](rest)
        try:
            return self._entries[name]
        except (KeyError, TypeError):  # TypeError: a list or table from a grid file
            valid = ", ".join(self.names()) or "(none)"
            raise UserError(f"unknown {self.kind} {name!r}; valid {self.kind}s: {valid}") from None

    def create(self, name: str, /, **kwargs: Any) -> Any:
        """Build ``name`` with ``kwargs`` (any names, ``name`` too); unknown ones list the valid."""
        factory = self.get(name)
        check_kwargs(f"{self.kind} {name!r}", factory, kwargs)
        return factory(**kwargs)


def match_names(names: Iterable[str], pattern: str | None) -> list[str]:
    """``names`` that ``pattern`` selects: with a wildcard (``*``, ``?``, ``[``) those it
    matches as a whole, else those that contain it (``res`` finds ``resnet18`` and
    ``preact_resnet18``); case-insensitive. No pattern: all of them."""
    names = list(names)
    if not pattern:
        return names
    if any(c in pattern for c in "*?["):
        return [n for n in names if fnmatch.fnmatch(n.lower(), pattern.lower())]
    return [n for n in names if pattern.lower() in n.lower()]


def check_kwargs(what: str, factory: Callable[..., Any], kwargs: dict[str, Any]) -> None:
    """Reject keyword arguments ``factory`` does not take, naming the ones it does, and missing
    required ones (``--dataset npz`` without a file), which the call would make a TypeError."""
    try:
        params = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):  # builtins without a signature: let the call itself decide
        return
    named = [p for p in params if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)]
    valid = [p.name for p in named]
    unknown = sorted(set(kwargs) - set(valid))
    if unknown and not any(p.kind is p.VAR_KEYWORD for p in params):
        raise UserError(
            f"unknown parameter(s) {', '.join(unknown)} for {what}; valid: {', '.join(valid)}"
        )
    missing = [p.name for p in named if p.default is p.empty and p.name not in kwargs]
    if missing:
        raise UserError(f"missing parameter(s) {', '.join(missing)} for {what}")


METHODS = Registry("method", "bench.methods", ["methods"])
MODELS = Registry("model", "bench.models", ["harness.models"])
DATASETS = Registry("dataset", "bench.datasets", ["harness.data"])
ATTACKS = Registry("attack", "bench.attacks", ["harness.attacks"])
