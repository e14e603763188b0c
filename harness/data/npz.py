"""Any data set saved as ``.npz`` with ``x_train``, ``y_train``, ``x_test``, ``y_test``.

The escape hatch for data the harness does not know: users export their arrays in whatever
layout they have (NCHW or NHWC, uint8 or float in [0,1], grey or RGB) and this normalises it.
"""

from __future__ import annotations

import pathlib
import zipfile

import numpy as np
import torch

from harness.data.base import ArraySet, DatasetSplits, make_splits
from harness.registry import DATASETS
from harness.utils.errors import UserError

KEYS = ("x_train", "y_train", "x_test", "y_test")
#: Labels are class indices below this (ImageNet-21k has 21,841 classes).
MAX_CLASSES = 100_000


def to_uint8_nchw(x: np.ndarray, what: str) -> torch.Tensor:
    """uint8 (N, 3, H, W) from (N, H, W), (N, C, H, W) or (N, H, W, C), C in {1, 3}."""
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4:
        raise UserError(f"{what} must have shape (N, H, W) or (N, C, H, W) / (N, H, W, C)")
    if x.shape[1] not in (1, 3) and x.shape[3] in (1, 3):
        x = x.transpose(0, 3, 1, 2)
    if x.shape[1] not in (1, 3):
        raise UserError(f"{what} has shape {x.shape}: found no channel axis of size 1 or 3")
    if x.dtype == np.uint8:
        out = x
    elif np.issubdtype(x.dtype, np.floating):
        if x.size and (np.nanmin(x) < 0 or np.nanmax(x) > 1 or np.isnan(x).any()):
            raise UserError(f"{what} is floating point but not in [0, 1]")
        out = np.rint(x * 255.0).astype(np.uint8)
    elif np.issubdtype(x.dtype, np.integer):
        if x.size and (x.min() < 0 or x.max() > 255):
            raise UserError(f"{what} is integer but not in [0, 255]")
        out = x.astype(np.uint8)
    else:
        raise UserError(f"{what} has unsupported dtype {x.dtype}")
    t = torch.from_numpy(np.ascontiguousarray(out))
    return t.expand(-1, 3, -1, -1).contiguous() if t.shape[1] == 1 else t


def to_labels(y: np.ndarray, n: int, what: str) -> torch.Tensor:
    """int64 labels from integer or integral float labels, each in [0, MAX_CLASSES): checked
    before the cast (1e300 would wrap silently, 2**40 would make a model of 2**40 outputs)."""
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1 or len(y) != n:
        raise UserError(f"{what} must have shape ({n},), got {y.shape}")
    if y.dtype.kind == "f":
        if not bool(np.all(np.isfinite(y))) or not bool(np.all(np.mod(y, 1) == 0)):
            raise UserError(f"{what} must hold integer class labels, got non-integral {y.dtype}")
    elif y.dtype.kind not in "iu":
        raise UserError(f"{what} must hold integer class labels, got dtype {y.dtype}")
    if n and y.min() < 0:
        raise UserError(f"{what} holds negative labels")
    if n and y.max() >= MAX_CLASSES:
        top = f"{y.max():g}" if y.dtype.kind == "f" else str(int(y.max()))
        raise UserError(f"{what} holds label {top}; labels are class indices below {MAX_CLASSES}")
    return torch.from_numpy(y.astype(np.int64))


@DATASETS.register("npz")
def npz(
    path: str,
    num_classes: int | None = None,
    val_fraction: float = 0.1,
    val_seed: int = 0,
) -> DatasetSplits:
    """Load ``path``; ``num_classes`` defaults to the largest label + 1."""
    file = pathlib.Path(path).expanduser()
    if not file.is_file():
        raise UserError(f"npz data set not found: {file.absolute()}")
    try:
        with np.load(file, allow_pickle=False) as arrays:
            missing = [k for k in KEYS if k not in arrays.files]
            if missing:
                raise UserError(
                    f"{file} lacks array(s) {', '.join(missing)} "
                    f"(needs {', '.join(KEYS)}; has {', '.join(arrays.files) or 'none'})"
                )
            loaded = {k: arrays[k] for k in KEYS}
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise UserError(f"cannot read {file} as .npz: {exc}") from None
    sets = {}
    for part in ("train", "test"):
        x = to_uint8_nchw(loaded[f"x_{part}"], f"x_{part}")
        sets[part] = ArraySet(x, to_labels(loaded[f"y_{part}"], len(x), f"y_{part}"))
    if sets["train"].x.shape[1:] != sets["test"].x.shape[1:]:
        raise UserError(
            f"x_train and x_test image shapes differ: "
            f"{tuple(sets['train'].x.shape[1:])} vs {tuple(sets['test'].x.shape[1:])}"
        )
    top = max((int(s.y.max()) for s in sets.values() if len(s)), default=-1) + 1
    if num_classes is None:
        num_classes = top
    elif top > num_classes:
        raise UserError(f"{file} has label {top - 1} but num_classes={num_classes}")
    return make_splits(
        f"npz:{file.stem}", sets["train"], sets["test"], num_classes, val_fraction, val_seed
    )
