"""CIFAR-10, CIFAR-100 and STL-10 through ``torchvision.datasets``, as uint8 tensors.

torchvision knows the official file layouts, URLs and checksums; this module adds what a
benchmark needs around it: one clear error when the files are missing and cannot be fetched
(instead of a traceback or a long hang), and nothing half-downloaded left behind.
"""

from __future__ import annotations

import functools
import pathlib
import socket
import urllib.parse
import urllib.request
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from harness.data.base import ArraySet, DatasetSplits, data_root, make_splits, not_found
from harness.registry import DATASETS
from harness.utils.errors import UserError

# urllib has no timeout by default: where packets are silently dropped, a download would hang.
PROBE_TIMEOUT_S = 10.0


def probe(url: str, timeout: float = PROBE_TIMEOUT_S) -> None:
    """Raise OSError quickly if ``url``'s host (or the proxy urllib would use) is unreachable."""
    parts = urllib.parse.urlsplit(url)
    target = parts
    proxy = urllib.request.getproxies().get(parts.scheme)
    if proxy and not urllib.request.proxy_bypass(parts.hostname or ""):
        target = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
    port = target.port or (443 if target.scheme == "https" else 80)
    with socket.create_connection((target.hostname, port), timeout=timeout):
        pass


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}".rstrip(": ")


def _expected_files(cls: type, root: pathlib.Path) -> list[pathlib.Path]:
    folder = root / cls.base_folder
    names = [name for name, _ in cls.train_list + cls.test_list]
    meta = getattr(cls, "meta", None)
    if isinstance(meta, dict):
        names.append(meta["filename"])
    return [folder / name for name in names]


class _Unreachable(OSError):
    pass


def _download(name: str, cls: type, root: pathlib.Path, kwargs: dict[str, Any]) -> None:
    """torchvision's download, failing fast and cleaning up after itself."""
    archive = root / cls.filename
    had_root, had_archive = root.exists(), archive.exists()
    host = urllib.parse.urlsplit(cls.url).hostname
    try:
        try:
            probe(cls.url)
        except OSError as exc:
            raise _Unreachable(f"cannot reach {host}: {_first_line(exc)}") from None
        cls(str(root), download=True, **kwargs)
    except (OSError, RuntimeError) as exc:
        if archive.exists() and not had_archive:
            archive.unlink()
        if not had_root and root.is_dir() and not any(root.iterdir()):
            root.rmdir()
        reason = str(exc) if isinstance(exc, _Unreachable) else _first_line(exc)
        raise not_found(name, root, reason) from None


def load_pair(
    name: str,
    cls: type,
    root: pathlib.Path,
    download: bool,
    train_kwargs: dict[str, Any],
    test_kwargs: dict[str, Any],
) -> tuple[Any, Any]:
    """The torchvision train and test datasets, downloaded first if absent and allowed."""
    try:
        return cls(str(root), **train_kwargs), cls(str(root), **test_kwargs)
    except (RuntimeError, OSError) as exc:
        error = exc
    files = _expected_files(cls, root)
    if not download:
        if all(f.is_file() for f in files):
            raise UserError(
                f"dataset {name!r} under {(root / cls.base_folder).absolute()} is unreadable or "
                f"fails torchvision's checksum check ({_first_line(error)}); replace the files"
            )
        raise not_found(name, root, "download=False")
    _download(name, cls, root, train_kwargs)
    try:
        return cls(str(root), **train_kwargs), cls(str(root), **test_kwargs)
    except (RuntimeError, OSError) as exc:
        raise UserError(
            f"dataset {name!r} was downloaded to {root.absolute()} but cannot be loaded "
            f"({_first_line(exc)})"
        ) from None


def _cifar(
    name: str,
    cls_name: str,
    num_classes: int,
    root: str | None,
    download: bool,
    val_fraction: float,
    val_seed: int,
) -> DatasetSplits:
    from harness.utils.compat import import_torchvision

    cls = getattr(import_torchvision().datasets, cls_name)
    train, test = load_pair(name, cls, data_root(root), download, {"train": True}, {"train": False})
    sets = [
        ArraySet(
            torch.from_numpy(np.asarray(ds.data, dtype=np.uint8)).permute(0, 3, 1, 2).contiguous(),
            torch.as_tensor(ds.targets, dtype=torch.int64),
        )
        for ds in (train, test)
    ]
    return make_splits(name, sets[0], sets[1], num_classes, val_fraction, val_seed)


@DATASETS.register("cifar10")
def cifar10(
    root: str | None = None,
    download: bool = True,
    val_fraction: float = 0.1,
    val_seed: int = 0,
) -> DatasetSplits:
    """CIFAR-10 (50,000 train / 10,000 test, 32x32), from ``<root>/cifar-10-batches-py``."""
    return _cifar("cifar10", "CIFAR10", 10, root, download, val_fraction, val_seed)


@DATASETS.register("cifar100")
def cifar100(
    root: str | None = None,
    download: bool = True,
    val_fraction: float = 0.1,
    val_seed: int = 0,
) -> DatasetSplits:
    """CIFAR-100 with its 100 fine labels, from ``<root>/cifar-100-python``."""
    return _cifar("cifar100", "CIFAR100", 100, root, download, val_fraction, val_seed)


@functools.cache
def stl10_class() -> type:
    """torchvision's STL10, asking only for the labelled files.

    Stock STL10 refuses to load unless the 2.7 GB ``unlabeled_X.bin`` is present and hashes
    right, though the labelled splits never read it; this subclass checks the four files it
    uses. ``download`` still fetches the official archive.
    """
    from harness.utils.compat import import_torchvision

    base = import_torchvision().datasets.STL10

    class LabeledSTL10(base):  # type: ignore[misc, valid-type]
        train_list = [entry for entry in base.train_list if not entry[0].startswith("unlabeled")]

    return LabeledSTL10


def resize_uint8(x: torch.Tensor, size: int, chunk: int = 512) -> torch.Tensor:
    """Antialiased bilinear resize of uint8 (N, C, H, W) images, in chunks to bound memory."""
    if x.shape[-1] == size and x.shape[-2] == size:
        return x
    out = torch.empty((len(x), x.shape[1], size, size), dtype=torch.uint8)
    for start in range(0, len(x), chunk):
        part = x[start : start + chunk].float()
        part = F.interpolate(part, size=(size, size), mode="bilinear", antialias=True)
        out[start : start + chunk] = part.round_().clamp_(0, 255).to(torch.uint8)
    return out


@DATASETS.register("stl10")
def stl10(
    root: str | None = None,
    download: bool = True,
    val_fraction: float = 0.1,
    val_seed: int = 0,
    image_size: int | None = None,
) -> DatasetSplits:
    """STL-10's labelled splits (5,000 train / 8,000 test, 96x96) from ``<root>/stl10_binary``.

    ``image_size`` resizes (antialiased) e.g. to 32 for CIFAR-sized models; default native 96.
    """
    if image_size is not None and int(image_size) < 1:
        raise UserError(f"image_size must be a positive integer, got {image_size}")
    train, test = load_pair(
        "stl10", stl10_class(), data_root(root), download, {"split": "train"}, {"split": "test"}
    )
    sets = []
    for ds in (train, test):
        x = torch.from_numpy(np.ascontiguousarray(ds.data, dtype=np.uint8))
        if image_size is not None:
            x = resize_uint8(x, int(image_size))
        sets.append(ArraySet(x, torch.from_numpy(ds.labels.astype(np.int64))))
    return make_splits("stl10", sets[0], sets[1], 10, val_fraction, val_seed)
