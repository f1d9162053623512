"""MNIST-style image datasets: ``MNISTDataset`` over any IDX pair, ``MNIST``, ``FashionMNIST``.

Images are stored once as a read-only float32 array of shape ``(N, H*W)`` with values
in [0, 1]; labels as read-only uint8 ``(N,)``. Transforms act on a private H×W×1 copy
of each image, so they can never change the stored data.

Where ``MNIST`` and ``FashionMNIST`` look for their files (the first folder holding
both files of the split, each either ``.gz`` or raw, wins):

* ``FashionMNIST``: ``root`` (if given), ``/usr/share/datasets/fashion-mnist`` (the
  Debian package ``dataset-fashion-mnist``), then the cache folder.
* ``MNIST``: ``root`` (if given), then the cache folder.

The cache folder is ``$NEEDLE_DATA/<name>`` if ``NEEDLE_DATA`` is set, else
``~/.cache/needle/<name>``, with ``<name>`` ``mnist`` or ``fashion-mnist``. With
``download=True`` missing files are downloaded (verified) into ``root`` if given, else
into the cache folder.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..data_basic import Dataset, TransformLike, normalize_index
from ..idx import PathLike, load_mnist_arrays
from . import download as _download

__all__ = [
    "MNISTDataset",
    "MNIST",
    "FashionMNIST",
    "DatasetNotFoundError",
    "default_data_dir",
    "SYSTEM_FASHION_MNIST_DIR",
]

#: Where Debian's ``dataset-fashion-mnist`` package installs the four ``.gz`` files.
SYSTEM_FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"


class DatasetNotFoundError(FileNotFoundError):
    """A dataset's files are not in any searched folder; the message says how to get them."""


class MNISTDataset(Dataset):
    """Images and labels from an IDX image file and an IDX label file (gzip or raw).

    ``ds[i]`` (int, negative counts from the end) is ``(image, label)`` with image
    float32 ``(H*W,)`` in [0, 1] (``(784,)`` for MNIST) and label a uint8 scalar.
    ``ds[slice]`` and ``ds[index_array]`` give ``(images (k, H*W), labels (k,))``.
    Transforms see each image as an ``(H, W, 1)`` array (a copy) and the result is
    flattened back. Without transforms ``ds[i]`` is a read-only view of the stored data.

    Args:
        image_filename: IDX image file, magic 0x00000803.
        label_filename: IDX label file, magic 0x00000801, same count as the images.
        transforms: callables applied in order to each ``(H, W, 1)`` image, or None.
        image_size: required ``(H, W)``; None (default) accepts any size.
        num_classes: labels must be below it; None (default) skips the check.

    Raises:
        FileNotFoundError, IDXFormatError: a file is missing or malformed.

    Example:
        >>> import tempfile
        >>> from needle.data import write_idx
        >>> d = Path(tempfile.mkdtemp())
        >>> write_idx(d / "img.gz", np.zeros((6, 28, 28), np.uint8))
        >>> write_idx(d / "lbl.gz", np.arange(6, dtype=np.uint8))
        >>> ds = MNISTDataset(d / "img.gz", d / "lbl.gz")
        >>> len(ds), ds[0][0].shape, ds[-1][1], ds[1:4][0].shape
        (6, (784,), np.uint8(5), (3, 784))
    """

    def __init__(
        self,
        image_filename: PathLike,
        label_filename: PathLike,
        transforms: Sequence[TransformLike] | None = None,
        *,
        image_size: tuple[int, int] | None = None,
        num_classes: int | None = None,
    ) -> None:
        super().__init__(transforms)
        images, labels = load_mnist_arrays(
            image_filename,
            label_filename,
            image_size=image_size,
            num_classes=num_classes,
            flatten=False,
        )
        self.image_shape = (images.shape[1], images.shape[2], 1)
        self.images = images.reshape(images.shape[0], -1)
        self.labels = labels
        self.images.flags.writeable = False  # ds[i] returns views: protect the store
        self.labels.flags.writeable = False

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: Any) -> tuple[Any, Any]:
        index = normalize_index(index, len(self), type(self).__name__)
        if isinstance(index, int):
            return self._image(index), self.labels[index]
        return self.get_batch(index)

    def get_batch(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Return ``(images (k, H*W), labels (k,))`` for a 1-D int array of k indices.

        Without transforms this is one fancy index per array; with transforms each
        image is transformed in the order of ``indices``, as item-by-item fetching does.
        """
        if self.transforms is None or len(indices) == 0:
            return self.images[indices], self.labels[indices]
        return np.stack([self._image(int(i)) for i in indices]), self.labels[indices]

    def _image(self, i: int) -> np.ndarray:
        """Return image ``i`` flattened, transformed (on a copy) if there are transforms."""
        image = self.images[i]
        if self.transforms is None:
            return image
        out = self.apply_transforms(image.reshape(self.image_shape).copy())
        if not isinstance(out, np.ndarray):
            raise TypeError(
                f"{type(self).__name__}: transforms must return a NumPy array, got "
                f"{type(out).__name__} from {self.transforms}"
            )
        return out.reshape(-1)

    def __repr__(self) -> str:
        h, w, _ = self.image_shape
        return (
            f"{type(self).__name__}(len={len(self)}, image={h}x{w}, transforms={self.transforms})"
        )


def default_data_dir(name: str) -> Path:
    """Return the cache folder of a dataset: ``$NEEDLE_DATA/name`` or ``~/.cache/needle/name``.

    Example:
        >>> default_data_dir("mnist").name
        'mnist'
    """
    base = os.environ.get("NEEDLE_DATA")
    return Path(base) / name if base else Path.home() / ".cache" / "needle" / name


def _split_names(train: bool) -> tuple[str, str]:
    """Return the base names (no ``.gz``) of a split's image and label files."""
    prefix = "train" if train else "t10k"
    return f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte"


def _find(directory: Path, base: str) -> Path | None:
    """Return ``directory/base.gz`` or ``directory/base``, whichever exists first, or None."""
    for name in (base + ".gz", base):
        if (directory / name).is_file():
            return directory / name
    return None


@dataclass(frozen=True)
class _Source:
    """Where a named dataset lives and how to fetch it."""

    cls_name: str
    cache_name: str
    system_dirs: tuple[str, ...]
    mirrors: tuple[str, ...]
    hashes: dict[str, str | None]
    hashes_name: str
    apt_package: str | None
    content_hash: bool  # the table hashes the decompressed IDX data, not the .gz bytes

    def search_dirs(self, root: PathLike | None) -> list[Path]:
        """The folders searched, in order."""
        dirs = [Path(root)] if root is not None else []
        return dirs + [Path(d) for d in self.system_dirs] + [default_data_dir(self.cache_name)]


def _locate(
    source: _Source, root: PathLike | None, train: bool, download: bool, verify: bool
) -> tuple[Path, Path]:
    """Return the (image, label) paths of a split, downloading them if asked."""
    bases = _split_names(train)
    dirs = source.search_dirs(root)
    for d in dirs:
        found = [_find(d, b) for b in bases]
        if all(found):
            return found[0], found[1]
    if not download:
        raise DatasetNotFoundError(_not_found_message(source, dirs, bases, train))
    target = Path(root) if root is not None else default_data_dir(source.cache_name)
    return tuple(_find(target, b) or _fetch(source, target, b, verify) for b in bases)


def _fetch(source: _Source, target: Path, base: str, verify: bool) -> Path:
    """Download ``base.gz`` into ``target`` from the source's mirrors, verified."""
    sha256 = source.hashes.get(base)
    if verify and sha256 is None:
        raise ValueError(
            f"{source.cls_name}: no known SHA-256 for {base}, so the download is refused. "
            f"Pass verify=False to download it unchecked, or fill in "
            f"needle.data.datasets.download.{source.hashes_name} (see docs/data.md)"
        )
    return _download.download_from_mirrors(
        source.mirrors,
        base + ".gz",
        target / (base + ".gz"),
        sha256,
        verify=verify,
        content_hash=source.content_hash,
    )


def _not_found_message(
    source: _Source, dirs: list[Path], bases: tuple[str, str], train: bool
) -> str:
    """Explain where the files were looked for and how to get them."""
    lines = [
        f"{source.cls_name}(train={train}): could not find {bases[0]}[.gz] and "
        f"{bases[1]}[.gz] together in any of:"
    ]
    for d in dirs:
        missing = [b + "[.gz]" for b in bases if _find(d, b) is None]
        state = "folder does not exist" if not d.is_dir() else "missing " + ", ".join(missing)
        lines.append(f"  {d}  ({state})")
    lines.append("To get the data, either:")
    if source.apt_package:
        lines.append(f"  - install the Debian package: apt-get install {source.apt_package}")
    lines.append(
        f"  - download it: {source.cls_name}(..., download=True) (command line: --download)"
    )
    lines.append(
        f"  - point to a folder holding the files: {source.cls_name}(root=...) "
        "(command line: --data-dir)"
    )
    return "\n".join(lines)


def _mnist_source() -> _Source:
    """The MNIST source, built per call so that changes to the module tables apply."""
    return _Source(
        "MNIST",
        "mnist",
        (),
        _download.MNIST_MIRRORS,
        _download.MNIST_SHA256,
        "MNIST_SHA256",
        None,
        content_hash=False,
    )


def _fashion_source() -> _Source:
    """The Fashion-MNIST source, built per call so that changes to the module tables apply."""
    return _Source(
        "FashionMNIST",
        "fashion-mnist",
        (SYSTEM_FASHION_MNIST_DIR,),
        _download.FASHION_MNIST_MIRRORS,
        _download.FASHION_MNIST_SHA256,
        "FASHION_MNIST_SHA256",
        "dataset-fashion-mnist",
        content_hash=True,
    )


class MNIST(MNISTDataset):
    """The MNIST handwritten digits: 60000 train / 10000 test 28×28 images, 10 classes.

    Args:
        root: a folder to search first (and to download into), or None.
        train: the training split (``train-*``) if True, else the test split (``t10k-*``).
        transforms: applied to each 28×28×1 image, as in :class:`MNISTDataset`.
        download: download missing files from ``MNIST_MIRRORS``.
        verify: check downloads against ``MNIST_SHA256``; a file whose hash is not
            known is refused unless ``verify=False``.

    Raises:
        DatasetNotFoundError: the files are nowhere and ``download`` is False.

    Example:
        >>> ds = MNIST(train=False, download=True, verify=False)  # doctest: +SKIP
        >>> len(ds)  # doctest: +SKIP
        10000
    """

    def __init__(
        self,
        root: PathLike | None = None,
        train: bool = True,
        transforms: Sequence[TransformLike] | None = None,
        download: bool = False,
        *,
        verify: bool = True,
    ) -> None:
        image_path, label_path = _locate(_mnist_source(), root, train, download, verify)
        super().__init__(image_path, label_path, transforms, image_size=(28, 28), num_classes=10)
        self.train = train


class FashionMNIST(MNISTDataset):
    """Zalando's Fashion-MNIST: 60000 train / 10000 test 28×28 clothing images, 10 classes.

    Found in ``root``, ``/usr/share/datasets/fashion-mnist`` (``apt-get install
    dataset-fashion-mnist``) or the cache folder; see the module docstring.

    Args:
        root: a folder to search first (and to download into), or None.
        train: the training split (``train-*``) if True, else the test split (``t10k-*``).
        transforms: applied to each 28×28×1 image, as in :class:`MNISTDataset`.
        download: download missing files from ``FASHION_MNIST_MIRRORS``.
        verify: check downloads against ``FASHION_MNIST_SHA256``.

    Raises:
        DatasetNotFoundError: the files are nowhere and ``download`` is False.

    Example:
        >>> ds = FashionMNIST(train=True)  # doctest: +SKIP
        >>> len(ds), int(ds[0][1])  # doctest: +SKIP
        (60000, 9)
    """

    def __init__(
        self,
        root: PathLike | None = None,
        train: bool = True,
        transforms: Sequence[TransformLike] | None = None,
        download: bool = False,
        *,
        verify: bool = True,
    ) -> None:
        image_path, label_path = _locate(_fashion_source(), root, train, download, verify)
        super().__init__(image_path, label_path, transforms, image_size=(28, 28), num_classes=10)
        self.train = train
