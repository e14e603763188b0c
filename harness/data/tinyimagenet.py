"""Tiny ImageNet (200 classes, 64x64) from the standard ``tiny-imagenet-200/`` folder.

The official test split has no labels, so, as everywhere in the literature, the labelled
``val/`` folder serves as the test split and a validation split is carved from ``train/``.
Labels are indices into ``sorted(wnids)``: the order ``torchvision.datasets.ImageFolder``
gives after the usual val-folder fix-up, so checkpoints trained by ImageFolder scripts agree.
Decoding 110,000 JPEGs takes about half a minute, so the uint8 arrays are cached in an
``.npz`` beside the data and reused while the image files are unchanged.
"""

from __future__ import annotations

import hashlib
import os
import pathlib
import warnings

import numpy as np
import torch

from harness.data.base import ArraySet, DatasetSplits, data_root, make_splits, not_found
from harness.registry import DATASETS
from harness.utils.errors import UserError

FOLDER = "tiny-imagenet-200"
SIZE = 64
CACHE = "bench-uint8-cache.npz"
MARKER = ".bench-val-fixed"
NO_DOWNLOAD = (
    "it is never downloaded automatically: the official archive "
    "http://cs231n.stanford.edu/tiny-imagenet-200.zip is not reachable; unzip a copy"
)
IMAGE_SUFFIXES = {".jpeg", ".jpg", ".png"}


def find_base(root: pathlib.Path) -> pathlib.Path | None:
    """``root/tiny-imagenet-200``, or ``root`` itself if it is that folder."""
    for base in (root / FOLDER, root):
        if (base / "wnids.txt").is_file():
            return base
    return None


def read_annotations(val: pathlib.Path) -> list[tuple[str, str]]:
    """``(filename, wnid)`` pairs from ``val/val_annotations.txt`` (tab separated)."""
    path = val / "val_annotations.txt"
    if not path.is_file():
        raise UserError(f"Tiny ImageNet is incomplete: {path} is missing")
    pairs = []
    for line in path.read_text().splitlines():
        fields = line.split("\t")
        if len(fields) >= 2 and fields[0].strip():
            pairs.append((fields[0].strip(), fields[1].strip()))
    return pairs


def fix_val_folder(base: pathlib.Path) -> None:
    """Move ``val/images/<f>`` to ``val/<wnid>/images/<f>`` as ``val_annotations.txt`` says.

    The layout ImageFolder-based scripts expect. Each file is moved atomically and files
    already moved are skipped, so an interrupted run is finished by the next one; the marker
    is written last.
    """
    val = base / "val"
    if (val / MARKER).exists():
        return
    for name, wnid in read_annotations(val):
        src, dst = val / "images" / name, val / wnid / "images" / name
        if dst.exists():
            continue
        if not src.exists():
            raise UserError(f"Tiny ImageNet is incomplete: {src} (listed for {wnid}) is missing")
        dst.parent.mkdir(parents=True, exist_ok=True)
        os.replace(src, dst)
    images = val / "images"
    if images.is_dir() and not any(images.iterdir()):
        images.rmdir()
    (val / MARKER).write_text("val/images reorganised into val/<wnid>/images\n")


def list_images(base: pathlib.Path, wnids: list[str]) -> dict[str, list[tuple[pathlib.Path, int]]]:
    """``(path, label)`` for train and test, in a fixed order."""
    index = {w: i for i, w in enumerate(wnids)}
    train = []
    for wnid in wnids:
        folder = base / "train" / wnid / "images"
        if not folder.is_dir():
            raise UserError(f"Tiny ImageNet is incomplete: {folder} is missing")
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        train += [(p, index[wnid]) for p in files]
    test = []
    val = base / "val"
    for name, wnid in sorted(read_annotations(val)):
        if wnid not in index:
            raise UserError(f"{val / 'val_annotations.txt'} names {wnid!r}, not in wnids.txt")
        # Either place works, so a read-only copy that was never fixed up loads as well.
        moved = val / wnid / "images" / name
        test.append((moved if moved.exists() else val / "images" / name, index[wnid]))
    return {"train": train, "test": test}


def fingerprint(base: pathlib.Path, items: dict[str, list[tuple[pathlib.Path, int]]]) -> str:
    """A hash of every file's path, size and label: the cache is valid while it matches."""
    h = hashlib.sha1()
    for part, pairs in items.items():
        for path, label in pairs:
            rel = path.relative_to(base).as_posix()
            h.update(f"{part}\t{rel}\t{path.stat().st_size}\t{label}\n".encode())
    return h.hexdigest()


def decode(path: pathlib.Path) -> np.ndarray:
    """One image as uint8 (3, 64, 64); greyscale and CMYK JPEGs become RGB."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            rgb = im.convert("RGB")
    except OSError as exc:
        raise UserError(f"cannot decode {path}: {exc}") from None
    if rgb.size != (SIZE, SIZE):
        rgb = rgb.resize((SIZE, SIZE), Image.BILINEAR)
    return np.asarray(rgb).transpose(2, 0, 1)


def decode_all(pairs: list[tuple[pathlib.Path, int]], desc: str) -> ArraySet:
    """Decode serially: a 64x64 JPEG takes ~0.25 ms, and threads measured slower (GIL)."""
    from tqdm import tqdm

    x = np.empty((len(pairs), 3, SIZE, SIZE), dtype=np.uint8)
    for i, (path, _) in enumerate(tqdm(pairs, desc=desc, unit="img", disable=len(pairs) < 1000)):
        x[i] = decode(path)
    y = torch.tensor([label for _, label in pairs], dtype=torch.int64)
    return ArraySet(torch.from_numpy(x), y)


def load_cache(path: pathlib.Path, key: str) -> dict[str, ArraySet] | None:
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            if str(z["fingerprint"]) != key:
                return None
            return {
                part: ArraySet(torch.from_numpy(z[f"x_{part}"]), torch.from_numpy(z[f"y_{part}"]))
                for part in ("train", "test")
            }
    except (OSError, KeyError, ValueError) as exc:
        warnings.warn(f"ignoring unreadable cache {path}: {exc}", stacklevel=3)
        return None


def save_cache(path: pathlib.Path, key: str, sets: dict[str, ArraySet]) -> None:
    """Write atomically (temporary file, then rename): a reader never sees half a cache."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    arrays = {f"{k}_{part}": getattr(s, k).numpy() for part, s in sets.items() for k in "xy"}
    try:
        with open(tmp, "wb") as f:
            np.savez(f, fingerprint=np.array(key), **arrays)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        warnings.warn(f"could not write the Tiny ImageNet cache {path}: {exc}", stacklevel=3)


@DATASETS.register("tinyimagenet")
def tinyimagenet(
    root: str | None = None,
    download: bool = False,
    val_fraction: float = 0.1,
    val_seed: int = 0,
) -> DatasetSplits:
    """Tiny ImageNet from ``<root>/tiny-imagenet-200``; ``download`` is accepted but cannot
    be honoured (see ``NO_DOWNLOAD``)."""
    root_path = data_root(root)
    base = find_base(root_path)
    if base is None:
        raise not_found("tinyimagenet", root_path, NO_DOWNLOAD)
    wnids = sorted({w.strip() for w in (base / "wnids.txt").read_text().split() if w.strip()})
    try:
        fix_val_folder(base)
    except PermissionError as exc:
        warnings.warn(f"cannot reorganise {base / 'val'} ({exc}); reading it as is", stacklevel=2)
    items = list_images(base, wnids)
    key = fingerprint(base, items)
    cache = base / CACHE
    sets = load_cache(cache, key)
    if sets is None:
        sets = {part: decode_all(pairs, f"decoding {part}") for part, pairs in items.items()}
        save_cache(cache, key, sets)
    return make_splits(
        "tinyimagenet", sets["train"], sets["test"], len(wnids), val_fraction, val_seed
    )
