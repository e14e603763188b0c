"""What a run is built from: its data set (loaded once per process and options) and a freshly,
reproducibly initialised model."""

from __future__ import annotations

import inspect
import json
from functools import lru_cache
from typing import Any

import torch

import harness
from harness.registry import DATASETS
from harness.schema import Dataset
from harness.utils.values import canonical_json, derive_seed


@lru_cache(maxsize=4)
def _dataset(key: str, data_root: str | None) -> Any:
    spec = json.loads(key)
    options = dict(spec["options"])
    if data_root and "root" in inspect.signature(DATASETS.get(spec["name"])).parameters:
        options.setdefault("root", data_root)
    return harness.create_dataset(spec["name"], **options)


def load_dataset(spec: Dataset | dict[str, Any], data_root: str | None = None) -> Any:
    return _dataset(canonical_json(spec), data_root)


def data_sizes(data: Any) -> dict[str, int]:
    """Images per split: ``train`` is what the run trains on (held-out ``val`` excluded)."""
    return {
        "train": len(data.train),
        "val": 0 if data.val is None else len(data.val),
        "test": len(data.test),
    }


def build_model(name: str, num_classes: int, image_size: int, seed: int) -> torch.nn.Module:
    """A freshly initialised model; the init is seeded without touching the global RNG state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(seed, "init", name))
        return harness.create_model(name, num_classes=num_classes, image_size=image_size)
