"""Reading and writing IDX files, the format MNIST and Fashion-MNIST ship in.

An IDX file is big-endian::

    bytes 0-1   zero
    byte  2     data type (0x08 = unsigned byte, the only type needle reads)
    byte  3     number of dimensions d
    4*d bytes   each dimension as a big-endian uint32
    rest        the data, prod(dims) items in C order

Image files have the magic number ``0x00000803`` (uint8, 3 dims: N, H, W) and label
files ``0x00000801`` (uint8, 1 dim: N). Files may be gzip-compressed; compression is
detected from the gzip magic bytes ``1f 8b``, never from the file name.

Every problem with a file's contents raises :class:`IDXFormatError` (a ``ValueError``)
whose message starts with the file's path, so the error says which file is bad.
"""

from __future__ import annotations

import errno
import gzip
import math
import os
import zlib
from pathlib import Path
from typing import Union

import numpy as np

__all__ = [
    "IDXFormatError",
    "read_idx",
    "write_idx",
    "load_mnist_arrays",
    "IMAGES_MAGIC",
    "LABELS_MAGIC",
]

PathLike = Union[str, "os.PathLike[str]"]

GZIP_MAGIC = b"\x1f\x8b"
UINT8_TYPE = 0x08
IMAGES_MAGIC = 0x00000803
LABELS_MAGIC = 0x00000801

# IDX type codes that exist but that needle does not read, for a precise message.
_OTHER_TYPES = {0x09: "int8", 0x0B: "int16", 0x0C: "int32", 0x0D: "float32", 0x0E: "float64"}


class IDXFormatError(ValueError):
    """A file is not a valid IDX file (or not the kind expected); names the file.

    Attributes:
        path: the offending file, as given by the caller.

    Example:
        >>> str(IDXFormatError("labels.idx", "bad magic number"))
        'IDX file labels.idx: bad magic number'
    """

    def __init__(self, path: PathLike, problem: str) -> None:
        self.path = os.fspath(path)
        super().__init__(f"IDX file {self.path}: {problem}")


def _read_bytes(path: PathLike) -> bytes:
    """Return the (decompressed, if gzip) bytes of ``path``.

    Raises FileNotFoundError naming the path if it does not exist, and IDXFormatError
    if the file starts like gzip but the stream is corrupt or truncated.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(errno.ENOENT, "read_idx: no such IDX file", path)
    with open(path, "rb") as f:
        raw = f.read()
    if not raw.startswith(GZIP_MAGIC):
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as e:  # BadGzipFile is an OSError
        raise IDXFormatError(
            path, f"corrupt or truncated gzip stream ({type(e).__name__}: {e}); "
            "re-download the file"
        ) from None


def _describe_magic(magic: int) -> str:
    """Return ``'0x00000803 (uint8, 3 dims)'`` style text for an IDX magic number."""
    type_code, ndim = (magic >> 8) & 0xFF, magic & 0xFF
    type_name = "uint8" if type_code == UINT8_TYPE else _OTHER_TYPES.get(type_code, "unknown")
    return f"0x{magic:08X} ({type_name}, {ndim} dim{'s' if ndim != 1 else ''})"


def _parse_header(path: PathLike, data: bytes) -> tuple[int, tuple[int, ...]]:
    """Validate the IDX header of ``data``; return ``(header_length, dims)``."""
    if len(data) < 4:
        raise IDXFormatError(
            path, f"file is {len(data)} bytes, too short for the 4-byte IDX magic number"
        )
    magic = int.from_bytes(data[:4], "big")
    if data[0] != 0 or data[1] != 0:
        raise IDXFormatError(
            path, f"bad magic number 0x{magic:08X}: the first two bytes must be zero "
            "(is this an IDX file?)"
        )
    type_code, ndim = data[2], data[3]
    if type_code != UINT8_TYPE:
        name = _OTHER_TYPES.get(type_code)
        kind = f"unsupported data type 0x{type_code:02X} ({name})" if name else (
            f"unknown data type 0x{type_code:02X}")
        raise IDXFormatError(path, f"{kind}; only 0x08 (unsigned byte) is supported")
    header_length = 4 + 4 * ndim
    if len(data) < header_length:
        raise IDXFormatError(
            path, f"truncated header: {ndim} dims need {header_length} header bytes, "
            f"but the file has {len(data)} bytes"
        )
    dims = tuple(int.from_bytes(data[4 + 4 * k: 8 + 4 * k], "big") for k in range(ndim))
    return header_length, dims


def read_idx(path: PathLike, *, expected_magic: int | None = None) -> np.ndarray:
    """Read an IDX file (gzip or raw) into a uint8 array shaped like the header's dims.

    Args:
        path: the file; gzip compression is detected from its first two bytes.
        expected_magic: if given (e.g. ``IMAGES_MAGIC`` or ``LABELS_MAGIC``), the
            file's magic number must equal it.

    Returns:
        uint8 array of shape ``dims`` (e.g. ``(N, 28, 28)`` for images, ``(N,)``
        for labels). It owns its memory and is writable.

    Raises:
        FileNotFoundError: the file does not exist (the message names it).
        IDXFormatError: corrupt gzip, bad magic number, unsupported type, truncated
            header, or a data length that differs from the product of the dims.

    Example:
        >>> import tempfile, os
        >>> p = os.path.join(tempfile.mkdtemp(), "x.idx")
        >>> write_idx(p, np.arange(6, dtype=np.uint8).reshape(2, 3))
        >>> read_idx(p)
        array([[0, 1, 2],
               [3, 4, 5]], dtype=uint8)
    """
    data = _read_bytes(path)
    header_length, dims = _parse_header(path, data)
    magic = int.from_bytes(data[:4], "big")
    if expected_magic is not None and magic != expected_magic:
        raise IDXFormatError(
            path, f"magic number is {_describe_magic(magic)} but "
            f"{_describe_magic(expected_magic)} was expected"
            + _magic_hint(magic, expected_magic)
        )
    expected_bytes = math.prod(dims)  # Python ints: a corrupt header cannot overflow
    actual_bytes = len(data) - header_length
    if actual_bytes != expected_bytes:
        what = "truncated" if actual_bytes < expected_bytes else "trailing bytes"
        raise IDXFormatError(
            path, f"header dims {dims} need {expected_bytes} data bytes, but the file "
            f"has {actual_bytes} ({what})"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header_length).reshape(dims).copy()


def _magic_hint(magic: int, expected_magic: int) -> str:
    """Return a hint when an image file was given for a label file or vice versa."""
    if {magic, expected_magic} == {IMAGES_MAGIC, LABELS_MAGIC}:
        return " (are the image and label files swapped?)"
    return ""


def write_idx(path: PathLike, array: np.ndarray) -> None:
    """Write a uint8 array as an IDX file; gzip-compressed if ``path`` ends in ``.gz``.

    Args:
        path: destination file.
        array: uint8 array of any shape with at most 255 dims, each < 2**32.

    Example:
        >>> import tempfile, os
        >>> p = os.path.join(tempfile.mkdtemp(), "labels-idx1-ubyte.gz")
        >>> write_idx(p, np.array([3, 1, 4], dtype=np.uint8))
        >>> read_idx(p, expected_magic=LABELS_MAGIC).tolist()
        [3, 1, 4]
    """
    array = np.asarray(array)
    if array.dtype != np.uint8:
        raise TypeError(f"write_idx: array.dtype={array.dtype}; only uint8 can be written")
    if array.ndim > 255 or any(d >= 2**32 for d in array.shape):
        raise ValueError(f"write_idx: array.shape={array.shape} does not fit an IDX header")
    header = bytes([0, 0, UINT8_TYPE, array.ndim])
    header += b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    payload = header + np.ascontiguousarray(array).tobytes()
    if os.fspath(path).endswith(".gz"):
        payload = gzip.compress(payload, mtime=0)
    Path(path).write_bytes(payload)


def load_mnist_arrays(
    image_path: PathLike,
    label_path: PathLike,
    *,
    image_size: tuple[int, int] | None = (28, 28),
    num_classes: int | None = 10,
    flatten: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Load an MNIST-style image/label IDX pair, validated, as model-ready arrays.

    Args:
        image_path: IDX image file (magic 0x00000803), gzip or raw.
        label_path: IDX label file (magic 0x00000801), gzip or raw.
        image_size: required ``(H, W)``; ``None`` accepts any size.
        num_classes: labels must lie in ``0 .. num_classes-1``; ``None`` skips the check.
        flatten: return X as ``(N, H*W)``; if False, as ``(N, H, W)``.

    Returns:
        ``(X, y)``: X float32 of shape ``(N, H*W)`` with values in [0, 1] (the uint8
        pixels divided by 255), y uint8 of shape ``(N,)``.

    Raises:
        FileNotFoundError: a file is missing.
        IDXFormatError: a file is malformed, the counts differ, the image size or a
            label is out of the expected range.

    Example:
        >>> import tempfile, os
        >>> d = tempfile.mkdtemp()
        >>> write_idx(os.path.join(d, "i"), np.full((2, 28, 28), 255, dtype=np.uint8))
        >>> write_idx(os.path.join(d, "l"), np.array([7, 2], dtype=np.uint8))
        >>> X, y = load_mnist_arrays(os.path.join(d, "i"), os.path.join(d, "l"))
        >>> X.shape, X.dtype, X.max(), y.tolist()
        ((2, 784), dtype('float32'), np.float32(1.0), [7, 2])
    """
    images = read_idx(image_path, expected_magic=IMAGES_MAGIC)
    labels = read_idx(label_path, expected_magic=LABELS_MAGIC)
    if images.shape[0] != labels.shape[0]:
        raise IDXFormatError(
            image_path, f"has {images.shape[0]} images but the label file {label_path} "
            f"has {labels.shape[0]} labels; the counts must match"
        )
    if image_size is not None and images.shape[1:] != tuple(image_size):
        raise IDXFormatError(
            image_path, f"images are {images.shape[1]}x{images.shape[2]} but "
            f"{image_size[0]}x{image_size[1]} was expected"
        )
    _check_label_range(label_path, labels, num_classes)
    X = images.astype(np.float32)
    X /= np.float32(255)  # exact float32 division, as the course's parse_mnist does
    return (X.reshape(X.shape[0], -1) if flatten else X), labels


def _check_label_range(label_path: PathLike, labels: np.ndarray, num_classes: int | None) -> None:
    """Raise IDXFormatError naming the first label outside ``0 .. num_classes-1``."""
    if num_classes is None or labels.size == 0:
        return
    bad = np.flatnonzero(labels >= num_classes)
    if bad.size:
        i = int(bad[0])
        raise IDXFormatError(
            label_path, f"label {int(labels[i])} at index {i} is outside 0..{num_classes - 1} "
            f"({bad.size} labels out of range)"
        )
