"""scikit-learn's handwritten digits as a tiny 32x32 RGB data set that needs no download.

It is the embedded default: every machine with scikit-learn can run a smoke grid on it. The
data set has no official train/test split, so one is drawn here, stratified and seeded.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from harness.data.base import (
    ArraySet,
    DatasetSplits,
    check_fraction,
    make_splits,
    stratified_split,
)
from harness.registry import DATASETS
from harness.utils.errors import UserError

SIZE = 32


def digits_images() -> tuple[torch.Tensor, torch.Tensor]:
    """All 1,797 images as uint8 (N, 3, 32, 32) with their int64 labels."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    raw = torch.as_tensor(bunch.images, dtype=torch.float32)  # (N, 8, 8), values 0..16
    scaled = (raw * (255.0 / 16.0))[:, None]
    big = F.interpolate(scaled, size=(SIZE, SIZE), mode="bilinear", align_corners=False)
    x = big.round().clamp_(0, 255).to(torch.uint8).expand(-1, 3, -1, -1).contiguous()
    y = torch.as_tensor(bunch.target, dtype=torch.int64)
    return x, y


@DATASETS.register("digits")
def digits(
    val_fraction: float = 0.1,
    val_seed: int = 0,
    split_seed: int = 0,
    test_fraction: float = 0.2,
) -> DatasetSplits:
    """Digits 0-9, 8x8 upsampled to 32x32 and grey replicated to RGB.

    ``test_fraction`` of the images (stratified, drawn with ``split_seed``) form the test
    split; ``val_fraction`` of the rest (drawn with ``val_seed``) the validation split.
    """
    check_fraction("test_fraction", test_fraction)
    if test_fraction == 0:
        raise UserError("test_fraction must be > 0 for digits: it has no official test split")
    full = ArraySet(*digits_images())
    train_idx, test_idx = stratified_split(full.y, test_fraction, split_seed)
    return make_splits(
        "digits", full.subset(train_idx), full.subset(test_idx), 10, val_fraction, val_seed
    )
