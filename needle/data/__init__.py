"""needle.data: datasets, transforms and the batching ``DataLoader``.

Data flows file → :mod:`~needle.data.idx` (validated uint8 arrays) → a
:class:`Dataset` (float32 samples, optional random transforms) → a
:class:`DataLoader` (shuffled batches of ``needle.Tensor``). See docs/data.md.
"""

from .data_basic import DataLoader, Dataset, stack_items
from .data_transforms import RandomCrop, RandomFlipHorizontal, Transform
from .datasets import (
    MNIST,
    CIFAR10Dataset,
    CIFAR10FormatError,
    Corpus,
    Dictionary,
    batchify,
    get_batch,
    ChecksumMismatchError,
    DatasetNotFoundError,
    DownloadError,
    FashionMNIST,
    MNISTDataset,
    NDArrayDataset,
    content_sha256,
    default_data_dir,
    download_cifar10,
    download_file,
)
from .idx import IDXFormatError, load_mnist_arrays, read_idx, write_idx
from .samplers import DistributedSampler

__all__ = [
    "Dataset",
    "DataLoader",
    "stack_items",
    "DistributedSampler",
    "Transform",
    "RandomFlipHorizontal",
    "RandomCrop",
    "MNISTDataset",
    "MNIST",
    "FashionMNIST",
    "NDArrayDataset",
    "DatasetNotFoundError",
    "default_data_dir",
    "IDXFormatError",
    "read_idx",
    "write_idx",
    "load_mnist_arrays",
    "DownloadError",
    "ChecksumMismatchError",
    "content_sha256",
    "download_file",
    "CIFAR10Dataset",
    "CIFAR10FormatError",
    "download_cifar10",
    "Dictionary",
    "Corpus",
    "batchify",
    "get_batch",
]
