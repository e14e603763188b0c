"""Containers for image data and the seeded validation split every data set shares.

Images are kept as uint8 ``(N, 3, H, W)`` tensors (4x smaller than float; Tiny ImageNet
fits in 1.2 GB), on the CPU or, for the fast path, resident on the GPU, and converted to float
in [0,1] per batch, on the device.
"""

from __future__ import annotations

import math
import os
import pathlib
from dataclasses import dataclass

import torch

from harness.utils.errors import UserError

SPLITS = ("train", "val", "test")
#: The fewest training images a data set may have (BatchNorm trains on two or more).
MIN_TRAIN = 2


@dataclass(frozen=True, eq=False)
class ArraySet:
    """Images ``x`` (uint8, (N, 3, H, W), contiguous) with labels ``y`` (int64, (N,)), on one
    device: the CPU as loaded, or the GPU after :meth:`to`."""

    x: torch.Tensor
    y: torch.Tensor

    def __post_init__(self) -> None:
        x, y = self.x, self.y
        if x.dtype != torch.uint8 or x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"x must be uint8 (N, 3, H, W), got {x.dtype} {tuple(x.shape)}")
        if y.dtype != torch.int64 or y.dim() != 1 or len(y) != len(x):
            raise ValueError(f"y must be int64 ({len(x)},), got {y.dtype} {tuple(y.shape)}")
        if x.device != y.device:
            raise ValueError(f"x and y must share a device, got {x.device} and {y.device}")
        if not x.is_contiguous():
            object.__setattr__(self, "x", x.contiguous())

    def __len__(self) -> int:
        return len(self.y)

    @property
    def device(self) -> torch.device:
        return self.x.device

    def to(self, device: torch.device | str) -> ArraySet:
        """The same set with both tensors on ``device`` (itself if already there)."""
        if self.x.device == torch.device(device):
            return self
        return ArraySet(self.x.to(device), self.y.to(device))

    def subset(self, idx: torch.Tensor) -> ArraySet:
        """The samples at ``idx`` (integer indices or a boolean mask), as a new compact set."""
        return ArraySet(self.x[idx].contiguous(), self.y[idx])

    def float_batch(
        self, idx: torch.Tensor | slice, device: torch.device | str = "cpu"
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x in [0,1] float32, y)`` for ``idx``, on ``device``."""
        x = self.x[idx].to(device, non_blocking=True).float().div_(255)
        return x, self.y[idx].to(device, non_blocking=True, copy=True)


@dataclass(frozen=True, eq=False)
class DatasetSplits:
    """Train / held-out validation / test for one data set, plus what a model needs to know."""

    name: str
    train: ArraySet
    val: ArraySet | None
    test: ArraySet
    num_classes: int
    image_size: int

    def split(self, which: str) -> ArraySet:
        if which not in SPLITS:
            raise UserError(f"unknown split {which!r}; valid splits: {', '.join(SPLITS)}")
        if which == "val" and self.val is None:
            raise UserError(
                f"dataset {self.name!r} has no validation split (val_fraction=0); "
                "use a val_fraction > 0 or evaluate on 'test'"
            )
        return getattr(self, which)


def data_root(root: str | os.PathLike | None = None) -> pathlib.Path:
    """Where data sets live: ``root`` if given, else ``$BENCH_DATA``, else ``./data``."""
    if root is None or str(root) == "":
        root = os.environ.get("BENCH_DATA") or "data"
    path = pathlib.Path(root).expanduser()
    try:
        path.exists()
    except OSError as exc:  # a name too long for the file system: every lookup would fail
        raise UserError(f"data root {path}: {exc.strerror}") from None
    return path


def check_fraction(name: str, value: float) -> float:
    if not 0.0 <= value < 1.0:
        raise UserError(f"{name} must be in [0, 1), got {value}")
    return float(value)


def stratified_split(
    y: torch.Tensor, fraction: float, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices ``(keep, held_out)``, each sorted, with ``held_out`` about ``fraction`` of ``y``.

    Every class gives up the same share (largest-remainder rounding makes the total exact), and
    the draw comes from a private generator, so the split depends on ``seed`` only.
    """
    n = len(y)
    n_out = min(n - 1, max(1, math.floor(fraction * n + 0.5))) if fraction > 0 and n > 1 else 0
    gen = torch.Generator().manual_seed(int(seed))
    perm = torch.randperm(n, generator=gen)
    if n_out == 0:
        return torch.sort(perm).values, torch.empty(0, dtype=torch.int64)
    classes, counts = torch.unique(y, return_counts=True)
    exact = counts.double() * (n_out / n)
    quota = exact.floor().long()
    # Hand the remaining slots to the classes with the largest fractional parts (ties: lowest
    # class first, as argsort is stable).
    remaining = n_out - int(quota.sum())
    order = torch.argsort(-(exact - quota), stable=True)
    quota[order[:remaining]] += 1
    shuffled_y = y[perm]
    held = [perm[shuffled_y == c][:q] for c, q in zip(classes.tolist(), quota.tolist())]
    held_out = torch.sort(torch.cat(held)).values
    mask = torch.ones(n, dtype=torch.bool)
    mask[held_out] = False
    return torch.nonzero(mask).flatten(), held_out


def carve_val(train: ArraySet, fraction: float, seed: int) -> tuple[ArraySet, ArraySet | None]:
    """Split ``train`` into (train without val, val); val is None when ``fraction`` is 0."""
    check_fraction("val_fraction", fraction)
    if fraction == 0:
        return train, None
    keep, held = stratified_split(train.y, fraction, seed)
    return train.subset(keep), train.subset(held)


def make_splits(
    name: str,
    train: ArraySet,
    test: ArraySet,
    num_classes: int,
    val_fraction: float,
    val_seed: int,
) -> DatasetSplits:
    """Carve the validation split and assemble a :class:`DatasetSplits`.

    Refuses, before any run starts, sets too small to train on: an empty test set, or fewer
    than :data:`MIN_TRAIN` training images once the validation split is carved (BatchNorm
    cannot train on a batch of one image).
    """
    if len(test) == 0:
        raise UserError(f"dataset {name!r} has an empty test set")
    rest, val = carve_val(train, val_fraction, val_seed)
    if len(rest) < MIN_TRAIN:
        carved = (
            f" after {len(val)} went to the validation split"
            if val is not None and len(val)
            else ""
        )
        raise UserError(
            f"dataset {name!r} has {len(rest)} training image(s){carved}; at least {MIN_TRAIN} "
            "are needed"
        )
    return DatasetSplits(
        name=name,
        train=rest,
        val=val,
        test=test,
        num_classes=int(num_classes),
        image_size=int(train.x.shape[2]),
    )


def not_found(name: str, root: pathlib.Path, reason: str) -> UserError:
    """The one-line error for a data set that is neither on disk nor downloadable."""
    reason = " ".join(reason.split())[:200]
    return UserError(
        f"dataset {name!r} not found under {root.absolute()} and could not be downloaded "
        f"({reason}); put the files there or pass --data-root"
    )
