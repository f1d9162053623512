"""needle.data: datasets, transforms and the batching ``DataLoader``.

Data flows file → :mod:`~needle.data.idx` (validated uint8 arrays) → a
:class:`Dataset` (float32 samples, optional random transforms) → a
:class:`DataLoader` (shuffled batches of ``needle.Tensor``). See docs/data.md.
"""

from . import datasets
from .data_basic import DataLoader, Dataset, IterableDataset
from .data_transforms import (
    ColorJitter,
    Normalize,
    RandomCrop,
    RandomFlipHorizontal,
    RandomResizedCrop,
    RandomRotation,
    Transform,
)
from .datasets import *  # noqa: F401,F403  (every dataset, the downloaders; see its __all__)
from .fetching import stack_items
from .idx import IDXFormatError, load_mnist_arrays, read_idx, write_idx
from .samplers import DistributedSampler

__all__ = [
    "Dataset",
    "IterableDataset",
    "DataLoader",
    "stack_items",
    "DistributedSampler",
    "Transform",
    "RandomFlipHorizontal",
    "RandomCrop",
    "RandomResizedCrop",
    "RandomRotation",
    "ColorJitter",
    "Normalize",
    "IDXFormatError",
    "read_idx",
    "write_idx",
    "load_mnist_arrays",
    *datasets.__all__,
]
