"""What a method's code is: a hash of its source files, and whether a git work tree has them
edited but not committed.

A run's id is the hash of its config, not of the code that trained it, so editing a method and
rerunning would skip the run. Each run therefore records :func:`method_code` in its provenance,
and the leaderboard marks a run *stale* when the method's code today hashes differently.

Which files count: the module that defines the method's class, and, transitively, every module
of the same top-level package that it imports or that defines one of its base classes. For a
built-in method that is ``methods/<name>.py`` with ``methods/base.py`` and
``methods/common.py`` (and ``methods/adaad.py`` for DGAD, which uses AdaAD's attack); for a
plugin package, its own modules. The harness's shared attack loop and trainer are not method
code: a change there is recorded by the run's ``code`` (git commit) instead.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import inspect
import subprocess
from pathlib import Path
from typing import Any

#: What ``dirty`` says when no git work tree holds the files (an installed wheel, a tarball).
UNKNOWN = "unknown"


def _module_file(module: str) -> Path | None:
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        return None
    return Path(spec.origin).resolve()


def _imported(path: Path, module: str) -> set[str]:
    """The modules ``path`` (module ``module``) imports, relative imports resolved."""
    package = module.rsplit(".", 1)[0] if "." in module else module
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parts = parts[: len(parts) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            out.add(base)
            out.update(f"{base}.{alias.name}" for alias in node.names)  # submodules
    return out


def source_files(cls: type) -> dict[str, Path]:
    """Module name → file of the method class ``cls`` and the modules of its package it uses."""
    top = cls.__module__.split(".")[0]
    todo = [cls.__module__] + [
        base.__module__ for base in cls.__mro__ if base.__module__.split(".")[0] == top
    ]
    files: dict[str, Path] = {}
    while todo:
        module = todo.pop()
        if module in files or module.split(".")[0] != top:
            continue
        path = _module_file(module)
        if path is None:
            continue
        files[module] = path
        todo.extend(_imported(path, module))
    return dict(sorted(files.items()))


def _dirty(paths: list[Path]) -> bool | str:
    """Whether git reports any of ``paths`` changed against HEAD (or untracked); ``"unknown"``
    when they are not in a git work tree (or git is missing)."""
    folder = paths[0].parent
    try:
        inside = subprocess.run(
            ["git", "-C", str(folder), "rev-parse", "--is-inside-work-tree"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        if inside.returncode != 0 or inside.stdout.strip() != "true":
            return UNKNOWN
        status = subprocess.run(
            ["git", "-C", str(folder), "status", "--porcelain", "--", *map(str, paths)],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return UNKNOWN
    if status.returncode != 0:
        return UNKNOWN
    return bool(status.stdout.strip())


def _hash(cls: type) -> tuple[str | None, list[str], list[Path]]:
    """(sha256, file names, paths) of the method class ``cls``'s source files; no hash when a
    file cannot be read (a process whose user may not read the install): the code is then
    unknown, and a run is neither recorded with a wrong hash nor called stale for it."""
    try:
        return _hash_files(cls)
    except (OSError, SyntaxError, UnicodeDecodeError):
        return None, [], []


def _hash_files(cls: type) -> tuple[str | None, list[str], list[Path]]:
    files = source_files(cls)
    if not files:  # defined in __main__ or a notebook: no file to hash
        return None, [], []
    root = Path(inspect.getfile(importlib.import_module(cls.__module__.split(".")[0]))).parent
    digest = hashlib.sha256()
    names = []
    for path in files.values():
        try:
            name = path.relative_to(root).as_posix()
        except ValueError:
            name = path.name
        names.append(name)
        digest.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest(), names, list(files.values())


def code_record(cls: type) -> dict[str, Any]:
    """``{"sha256", "files", "dirty"}`` for the method class ``cls`` (see the module's doc).

    ``sha256`` covers each file's name relative to its package's folder and its bytes, so the
    same code hashes the same wherever it is installed.
    """
    sha, names, paths = _hash(cls)
    return {"sha256": sha, "files": names, "dirty": _dirty(paths) if paths else UNKNOWN}


def method_code(name: str) -> dict[str, Any]:
    """:func:`code_record` of the registered method ``name`` (a one-line error if unknown)."""
    from harness.registry import METHODS

    return code_record(METHODS.get(name))


def current_sha256(name: str) -> str | None:
    """The hash of method ``name``'s code as installed now; None if it is not installed."""
    from harness.registry import METHODS
    from harness.utils.errors import UserError

    try:
        cls = METHODS.get(name)
    except (UserError, KeyError):
        return None
    return _hash(cls)[0]
