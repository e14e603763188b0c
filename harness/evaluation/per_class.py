"""Per-class accuracy from per-sample results: the numbers robust fairness is judged on.

Fair-ARD (Yue et al., NeurIPS 2023; NISP-official/Fair-ARD ``eval.py``) and ABSLD (Zhao et al.,
NeurIPS 2024) report beside each attack's average accuracy the accuracy of the worst class:
per class, the share of that class's test images the model classifies correctly under the
attack (correct / images of the class), and the lowest of these. Every result row of an
evaluation carries its per-class accuracies (``per_class``, a fraction per class, ``None`` for a
class without test images, e.g. in a small ``--eval-subset``) and the images behind each
(``class_n``); the store's index derives the worst class from them.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


def per_class_accuracy(
    mask: Tensor, labels: Tensor, num_classes: int
) -> tuple[list[float | None], list[int]]:
    """(accuracy per class, images per class) of a per-sample correctness ``mask``.

    Class ``c``'s accuracy is ``mask[labels == c].mean()``; ``None`` where the class has no image.
    """
    mask, labels = mask.detach().cpu().bool(), labels.detach().cpu().long()
    if mask.shape != labels.shape:
        raise ValueError(f"mask {tuple(mask.shape)} and labels {tuple(labels.shape)} differ")
    size = max(int(num_classes), int(labels.max()) + 1 if len(labels) else 0)
    counts = torch.bincount(labels, minlength=size)
    hits = torch.bincount(labels[mask], minlength=size)
    acc = [int(h) / int(n) if n else None for h, n in zip(hits.tolist(), counts.tolist())]
    return acc, counts.tolist()


def with_per_class(
    row: dict[str, Any], mask: Tensor, labels: Tensor, num_classes: int
) -> dict[str, Any]:
    """``row`` (a result row of ``mask``) with its ``per_class`` accuracies and ``class_n``."""
    row["per_class"], row["class_n"] = per_class_accuracy(mask, labels, num_classes)
    return row
