"""Batches straight from uint8 tensors, with the standard CIFAR augmentation vectorised.

No DataLoader, no worker processes, no PIL per image: the data sets here fit in memory, and a
gather plus one indexing op per batch keeps a GPU fed. All randomness comes from the caller's
``torch.Generator`` so a run is reproducible and the global RNG is never touched. Nothing here
makes the host wait for the GPU: host tensors bound for it travel through pinned memory with
non-blocking copies (:func:`to_device`).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F

from harness.data.base import ArraySet


def to_device(t: torch.Tensor, device: torch.device | str, copy: bool = False) -> torch.Tensor:
    """``t`` on ``device``, without the host waiting when it goes from the CPU to a GPU.

    A copy from pageable memory makes the host wait (CUDA stages it through a pinned buffer
    first); one from pinned (page-locked) memory with ``non_blocking`` is queued on the stream
    like a kernel. The pinned buffer comes from torch's caching host allocator, which keeps it
    until the copy has run. ``copy``: never return ``t`` itself or a view of it.
    """
    device = torch.device(device)
    if device.type == "cuda" and t.device.type == "cpu":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device, copy=copy)


def draw_augment_params(
    n: int, generator: torch.Generator, padding: int = 4
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The random draws of one augmented batch: ``(top, left, flip)`` on the CPU.

    ``top``/``left`` are crop offsets into the zero-padded image, in ``[0, 2 * padding]``;
    ``flip`` says which images are mirrored. Exposed so tests can replay the same draws.
    """
    offsets = torch.randint(0, 2 * padding + 1, (2, n), generator=generator)
    flip = torch.rand(n, generator=generator) < 0.5
    return offsets[0], offsets[1], flip


def apply_augment(
    x: torch.Tensor, top: torch.Tensor, left: torch.Tensor, flip: torch.Tensor, padding: int
) -> torch.Tensor:
    """Random crop from the zero-padded image, then horizontal flip, as one gather."""
    b, c, h, w = x.shape
    dev = x.device
    top, left, flip = top.to(dev), left.to(dev), flip.to(dev)
    padded = F.pad(x, (padding, padding, padding, padding))
    ar_h = torch.arange(h, device=dev)
    ar_w = torch.arange(w, device=dev)
    rows = top[:, None] + ar_h  # (B, H)
    # A mirrored crop reads the columns of the crop in reverse order.
    cols = left[:, None] + torch.where(flip[:, None], w - 1 - ar_w, ar_w)  # (B, W)
    bi = torch.arange(b, device=dev)[:, None, None, None]
    ci = torch.arange(c, device=dev)[None, :, None, None]
    return padded[bi, ci, rows[:, None, :, None], cols[:, None, None, :]]


def augment_batch(x: torch.Tensor, generator: torch.Generator, padding: int = 4) -> torch.Tensor:
    """Standard CIFAR augmentation of a batch (any dtype, any device).

    Crop with ``padding`` zero pixels on every side, then flip horizontally with p=0.5; the
    draws come from ``generator`` (a CPU generator) only.
    """
    top, left, flip = draw_augment_params(len(x), generator, padding)
    return apply_augment(x, top, left, flip, padding)


def batches(
    data: ArraySet,
    batch_size: int,
    *,
    shuffle: bool = False,
    generator: torch.Generator | None = None,
    augment: bool = False,
    device: torch.device | str = "cpu",
    drop_last: bool = False,
    padding: int = 4,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """One epoch of ``(x float32 in [0,1], y int64)`` batches on ``device``.

    ``shuffle`` draws one permutation from ``generator``, then ``augment`` draws the crop and
    flip of every image of the epoch (:func:`draw_augment_params` for ``len(data)`` images, in
    the shuffled order). All draws are made up front on the CPU and copied to the device once
    per epoch; each batch of a set kept on the host is gathered there and copied without the
    host waiting (:func:`to_device`), so no batch makes a step wait, resident set or not.
    Without a generator a fresh, randomly seeded one is used (the global RNG is left alone).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if generator is None and (shuffle or augment):
        generator = torch.Generator()
        generator.seed()
    n = len(data)
    order = to_device(torch.randperm(n, generator=generator), data.device) if shuffle else None
    if augment:
        assert generator is not None
        top, left, flip = (to_device(t, device) for t in draw_augment_params(n, generator, padding))
    stop = n - n % batch_size if drop_last else n
    for start in range(0, stop, batch_size):
        end = min(start + batch_size, n)
        idx = slice(start, end) if order is None else order[start:end]
        # Move uint8 (4x fewer bytes), augment on the device, convert last.
        x = to_device(data.x[idx], device)
        y = to_device(data.y[idx], device, copy=True)  # never a view of the data
        if augment:
            x = apply_augment(x, top[start:end], left[start:end], flip[start:end], padding)
        yield x.float().div_(255), y
