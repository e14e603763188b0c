"""What produced a run's numbers: the code's version, the packages, the machine."""

from __future__ import annotations

import os
import platform
from typing import Any

import torch

import harness


def provenance(device: torch.device) -> dict[str, Any]:
    """What produced a run's numbers: code version, package versions, machine."""
    from importlib.metadata import PackageNotFoundError, version

    packages = {}
    for name in ("torch", "torchvision", "numpy", "pyautoattack"):
        try:
            packages[name] = version(name)
        except PackageNotFoundError:
            packages[name] = None
    info = {
        "harness": harness.__version__,
        "code": _git_commit(),
        "python": platform.python_version(),
        "packages": packages,
        "host": platform.node(),
        "device": str(device),
        "threads": torch.get_num_threads(),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda_visible_devices"] = os.environ.get("CUDA_VISIBLE_DEVICES")
    return info


def _git_commit() -> str | None:
    """The source tree's commit (with ``+dirty`` for local changes), when run from a checkout."""
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    if not (root / ".git").exists():
        return None
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--", "harness", "methods"],
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return (commit + ("+dirty" if dirty.strip() else "")) or None
