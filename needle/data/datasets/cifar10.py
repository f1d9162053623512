"""CIFAR-10 from the official "python version" batches, loaded without running pickled code.

The folder ``cifar-10-batches-py`` holds ``data_batch_1`` … ``data_batch_5`` (training,
10000 images each) and ``test_batch``. Each is a pickle of a dict with bytes keys:
``b"data"``, a uint8 array (10000, 3072) whose rows are the red, green and blue 32×32
planes in turn (so ``reshape(-1, 3, 32, 32)`` is already CHW), and ``b"labels"``, a list
of ints 0–9.

A pickle can name any Python callable, so ``pickle.load`` on a downloaded file runs
whatever the file says. needle never calls it: :class:`_BatchUnpickler` resolves only the
three globals NumPy needs to rebuild an array, and refuses every other one (``os.system``,
``builtins.eval``, …) before anything is called. An array can only be rebuilt from its own
bytes (their count must match its shape), and no declared length is allocated beyond the
bytes left in the file. The result is then checked field by
field; any problem raises :class:`CIFAR10FormatError` naming the file.

:func:`download_cifar10` fetches the official archive, checks the MD5 its authors
publish, and unpacks only the expected files (no path from the archive is trusted).
"""

from __future__ import annotations

import importlib
import os
import pickle
import shutil
import tarfile
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from ..data_basic import Dataset, TransformLike, normalize_index
from ..idx import PathLike
from . import download as _download
from .mnist_dataset import DatasetNotFoundError, default_data_dir

__all__ = [
    "CIFAR10Dataset",
    "CIFAR10FormatError",
    "CIFAR10_URL",
    "CIFAR10_MD5",
    "download_cifar10",
    "load_cifar10_batch",
]

#: The official archive of the python version (Krizhevsky, University of Toronto).
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
#: The archive's MD5, as published on https://www.cs.toronto.edu/~kriz/cifar.html.
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"

FOLDER = "cifar-10-batches-py"
TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILES = ("test_batch",)
_ARCHIVE_FILES = TRAIN_FILES + TEST_FILES + ("batches.meta", "readme.html")
_PIXELS = 3 * 32 * 32
_CLASSES = 10


class CIFAR10FormatError(ValueError):
    """A CIFAR-10 batch file is malformed, truncated or names a global it may not use."""


# ----- safe unpickling -----------------------------------------------------------------------


def _reconstruct_function():
    """NumPy's array-rebuilding function (``numpy._core`` in NumPy 2, ``numpy.core`` in 1)."""
    for module in ("numpy._core.multiarray", "numpy.core.multiarray"):
        try:
            return importlib.import_module(module)._reconstruct
        except (ImportError, AttributeError):
            continue
    raise ImportError("CIFAR-10: this NumPy has no multiarray._reconstruct")


class _NDArrayClassToken:
    """What the pickle's ``numpy.ndarray`` global resolves to: a name, not a callable.

    ``ndarray.__reduce__`` names the class only as the first argument of ``_reconstruct``;
    a pickle that *calls* it (``ndarray(shape, dtype)``: uninitialised memory of any size)
    fails, because calling this token raises.
    """

    def __call__(self, *args: Any, **kwargs: Any) -> None:
        raise pickle.UnpicklingError(
            "refused a call of numpy.ndarray(...): an array must be rebuilt from its own "
            "bytes (numpy's _reconstruct), never allocated uninitialised"
        )

    def __repr__(self) -> str:
        return "numpy.ndarray"


_NDARRAY_TOKEN = _NDArrayClassToken()


def _small_reconstruct(cls: Any, shape: Any, dtype: Any) -> np.ndarray:
    """``_reconstruct`` limited to what ``ndarray.__reduce__`` writes: an empty ndarray.

    The data arrive afterwards through ``ndarray.__setstate__``, which accepts them only
    if their byte count is exactly the shape's size times the dtype's item size; refusing
    anything else here keeps a crafted file from allocating a huge array or building
    another class.
    """
    if cls is not _NDARRAY_TOKEN or not isinstance(shape, tuple) or np.prod(shape) != 0:
        raise pickle.UnpicklingError(
            f"_reconstruct called with {cls!r}, shape {shape!r}: only the empty ndarray "
            f"that NumPy writes is accepted"
        )
    return _reconstruct_function()(np.ndarray, shape, dtype)


def _plain_dtype(*args: Any) -> np.dtype:
    """``numpy.dtype(...)`` for dtypes of plain bytes (an object dtype would need pickle)."""
    dtype = np.dtype(*args)
    if dtype.hasobject:
        raise pickle.UnpicklingError(f"refused dtype {dtype}: a CIFAR-10 batch holds no objects")
    return dtype


_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): _small_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _small_reconstruct,
    ("numpy", "ndarray"): _NDARRAY_TOKEN,
    ("numpy", "dtype"): _plain_dtype,
}


class _BoundedReader:
    """A binary file whose ``read(n)`` never asks for more than the bytes left in it.

    A pickle declares the length of each bytes object before it; a lying length
    (gigabytes, in a file of kilobytes) is then met with a short read instead of an
    allocation of that size.
    """

    def __init__(self, file: BinaryIO) -> None:
        self.file = file
        self.left = os.fstat(file.fileno()).st_size

    def read(self, n: int = -1) -> bytes:
        data = self.file.read(self.left if n < 0 else min(n, self.left))
        self.left -= len(data)
        return data

    def readline(self) -> bytes:
        line = self.file.readline(self.left)
        self.left -= len(line)
        return line


class _BatchUnpickler(pickle._Unpickler):
    """An unpickler that knows only NumPy's array reconstruction and plain containers.

    It is the pure-Python unpickler: it reads each object's bytes from the file as it
    meets them (the C one allocates a declared length before reading it), here through
    a :class:`_BoundedReader`.
    """

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refused global {module}.{name}: a CIFAR-10 batch holds only NumPy arrays, "
                f"dicts, lists, ints and bytes"
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("refused a persistent id: CIFAR-10 batches have none")


def load_cifar10_batch(path: PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Read one batch file safely: ``(data uint8 (n, 3072), labels int64 (n,))``.

    Raises:
        DatasetNotFoundError: the file does not exist.
        CIFAR10FormatError: the file is not a valid batch (a refused global, a truncated
            pickle, missing keys, a wrong dtype or shape, labels outside 0–9); the
            message names the file and the problem.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetNotFoundError(
            f"CIFAR10Dataset: missing batch file {path}; expected the python-version folder "
            f"{FOLDER}/ with {', '.join(TRAIN_FILES + TEST_FILES)} (from "
            f"{CIFAR10_URL}, or needle.data.download_cifar10(root))"
        )
    try:
        with open(path, "rb") as f:
            batch = _BatchUnpickler(_BoundedReader(f), encoding="bytes").load()
    except (
        pickle.UnpicklingError,
        EOFError,
        ValueError,
        TypeError,
        AttributeError,
        IndexError,
        KeyError,
        MemoryError,
        OverflowError,
    ) as e:
        raise CIFAR10FormatError(f"CIFAR-10 batch {path}: not a valid batch pickle: {e}") from None
    return _checked_fields(path, batch)


def _checked_fields(path: Path, batch: Any) -> tuple[np.ndarray, np.ndarray]:
    """The ``b"data"`` and ``b"labels"`` of ``batch``, validated; else CIFAR10FormatError."""

    def fail(problem: str) -> CIFAR10FormatError:
        return CIFAR10FormatError(f"CIFAR-10 batch {path}: {problem}")

    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        keys = sorted(map(repr, batch)) if isinstance(batch, dict) else type(batch).__name__
        raise fail(f"expected a dict with keys b'data' and b'labels', got {keys}")
    data, labels = batch[b"data"], batch[b"labels"]
    if (
        not isinstance(data, np.ndarray)
        or data.dtype != np.uint8
        or data.ndim != 2
        or data.shape[1] != _PIXELS
    ):
        got = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise fail(f"b'data' must be a uint8 array of shape (n, {_PIXELS}), got {got}")
    if (
        not isinstance(labels, list)
        or len(labels) != data.shape[0]
        or not all(type(v) is int and 0 <= v < _CLASSES for v in labels)
    ):
        n = len(labels) if isinstance(labels, list) else type(labels).__name__
        raise fail(
            f"b'labels' must be a list of {data.shape[0]} ints in [0, {_CLASSES}), got {n} entries"
        )
    return data, np.asarray(labels, dtype=np.int64)


# ----- the dataset ---------------------------------------------------------------------------


class CIFAR10Dataset(Dataset):
    """CIFAR-10 images ``X`` float32 (N, 3, 32, 32) in [0, 1] and labels ``y`` int64 (N,).

    Reads ``data_batch_1`` … ``data_batch_5`` in order (train, N = 50000) or
    ``test_batch`` (N = 10000) from ``base_folder`` (the ``cifar-10-batches-py`` folder).
    ``ds[i]`` is ``(X[i] (3, 32, 32), y[i])``. Transforms see each image as an HWC copy
    (32, 32, 3) and the result is converted back to CHW; ``X`` is never modified.
    Construction never downloads and draws no random numbers; ``p`` is accepted for the
    course's signature and unused.

    Raises:
        DatasetNotFoundError: a batch file is missing.
        CIFAR10FormatError: a batch file is malformed (see :func:`load_cifar10_batch`).

    Example:
        >>> ds = CIFAR10Dataset("data/cifar-10-batches-py", train=True)  # doctest: +SKIP
        >>> ds.X.shape, ds[0][0].shape  # doctest: +SKIP
        ((50000, 3, 32, 32), (3, 32, 32))
    """

    def __init__(
        self,
        base_folder: PathLike,
        train: bool,
        p: float = 0.5,
        transforms: Sequence[TransformLike] | None = None,
    ) -> None:
        super().__init__(transforms)
        self.base_folder = Path(base_folder)
        self.train = train
        self.p = p
        names = TRAIN_FILES if train else TEST_FILES
        batches = [load_cifar10_batch(self.base_folder / name) for name in names]
        data = np.concatenate([d for d, _ in batches])
        self.X = (data.reshape(-1, 3, 32, 32) / np.float32(255)).astype(np.float32)
        self.y = np.concatenate([labels for _, labels in batches])

    def __len__(self) -> int:
        return self.X.shape[0]

    def __getitem__(self, index: Any) -> tuple[np.ndarray, Any]:
        index = normalize_index(index, len(self), "CIFAR10Dataset")
        if isinstance(index, int):
            return self._image(index), self.y[index]
        return self.get_batch(index)

    def get_batch(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(X (k, 3, 32, 32), y (k,))`` for 1-D int ``indices``: the items, stacked."""
        if self.transforms is None or len(indices) == 0:
            return self.X[indices], self.y[indices]
        return np.stack([self._image(int(i)) for i in indices]), self.y[indices]

    def _image(self, i: int) -> np.ndarray:
        """Image ``i`` (3, 32, 32), transformed in HWC on a copy if there are transforms."""
        if self.transforms is None:
            return self.X[i]
        hwc = self.apply_transforms(self.X[i].transpose(1, 2, 0).copy())
        return np.ascontiguousarray(hwc.transpose(2, 0, 1))

    def __repr__(self) -> str:
        return f"CIFAR10Dataset(len={len(self)}, train={self.train}, transforms={self.transforms})"


# ----- the downloader ------------------------------------------------------------------------


def download_cifar10(
    root: PathLike | None = None,
    *,
    url: str = CIFAR10_URL,
    md5: str = CIFAR10_MD5,
    timeout: float = 60.0,
) -> Path:
    """Download and unpack CIFAR-10's python version into ``root``; return the batch folder.

    The archive is verified against ``md5`` (the authors' published value) before it is
    opened. Only the expected regular files of ``cifar-10-batches-py/`` are extracted,
    into a temporary folder that is moved into place at the end, so ``root`` holds
    either the complete folder or nothing new. An existing complete folder is kept.

    Args:
        root: the parent folder; None means ``$NEEDLE_DATA/cifar10`` or
            ``~/.cache/needle/cifar10``.
        url, md5: the archive and its MD5 (override for a mirror).
        timeout: seconds to wait for the server at each network operation.

    Raises:
        DownloadError, ChecksumMismatchError: the download failed or does not match.
        CIFAR10FormatError: the verified archive lacks an expected file.
    """
    root = Path(root) if root is not None else default_data_dir("cifar10")
    target = root / FOLDER
    if all((target / name).is_file() for name in TRAIN_FILES + TEST_FILES):
        return target
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".cifar10-", dir=root) as tmp:
        archive = _download.download_file(
            url, Path(tmp) / "archive.tar.gz", None, md5=md5, timeout=timeout
        )
        unpacked = Path(tmp) / FOLDER
        _extract_batches(archive, unpacked)
        if target.exists():  # an incomplete earlier folder: replace it as a whole
            shutil.rmtree(target)
        os.replace(unpacked, target)
    return target


def _extract_batches(archive: Path, out: Path) -> None:
    """Copy the expected regular files of ``FOLDER/`` from ``archive`` into ``out``."""
    out.mkdir()
    wanted = {f"{FOLDER}/{name}": name for name in _ARCHIVE_FILES}
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar:
            name = wanted.get(member.name)
            if name is None or not member.isfile():
                continue  # anything else (links, other paths) is never written
            with tar.extractfile(member) as src, open(out / name, "wb") as dst:
                shutil.copyfileobj(src, dst)
    missing = [n for n in TRAIN_FILES + TEST_FILES if not (out / n).is_file()]
    if missing:
        raise CIFAR10FormatError(f"download_cifar10: {archive} lacks {FOLDER}/{missing}")
