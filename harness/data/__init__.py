"""Data sets as compact uint8 tensors, and the batching that feeds them to a model.

Importing this package registers the built-in data sets (``digits``, ``npz``, ``cifar10``,
``cifar100``, ``stl10``, ``tinyimagenet``) with :data:`harness.registry.DATASETS`.
"""

from harness.data import digits, npz, tinyimagenet, torchvision_sets  # noqa: F401  (register)
from harness.data.base import ArraySet, DatasetSplits, carve_val, data_root
from harness.data.loader import augment_batch, batches, draw_augment_params

__all__ = [
    "ArraySet",
    "DatasetSplits",
    "augment_batch",
    "batches",
    "carve_val",
    "data_root",
    "draw_augment_params",
]
