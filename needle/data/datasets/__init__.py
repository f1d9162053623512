"""Ready datasets: MNIST-style IDX data, CIFAR-10, in-memory arrays, and the verified downloader."""

from .cifar10 import CIFAR10Dataset, CIFAR10FormatError, download_cifar10
from .download import ChecksumMismatchError, DownloadError, content_sha256, download_file
from .mnist_dataset import (
    MNIST,
    DatasetNotFoundError,
    FashionMNIST,
    MNISTDataset,
    default_data_dir,
)
from .ndarray_dataset import NDArrayDataset
from .ptb import Corpus, CorpusFormatError, Dictionary, batchify, get_batch

__all__ = [
    "MNISTDataset",
    "MNIST",
    "FashionMNIST",
    "NDArrayDataset",
    "DatasetNotFoundError",
    "default_data_dir",
    "DownloadError",
    "ChecksumMismatchError",
    "content_sha256",
    "download_file",
    "CIFAR10Dataset",
    "CIFAR10FormatError",
    "download_cifar10",
    "Dictionary",
    "Corpus",
    "CorpusFormatError",
    "batchify",
    "get_batch",
]
