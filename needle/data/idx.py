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
from typing import BinaryIO, Union

import numpy as np

__all__ = [
    "IDXFormatError",
    "read_idx",
    "write_idx",
    "load_mnist_arrays",
    "IMAGES_MAGIC",
    "LABELS_MAGIC",
    "MAX_IDX_BYTES",
]

PathLike = Union[str, "os.PathLike[str]"]

GZIP_MAGIC = b"\x1f\x8b"
UINT8_TYPE = 0x08
IMAGES_MAGIC = 0x00000803
LABELS_MAGIC = 0x00000801
#: The largest data size :func:`read_idx` accepts by default (2 GiB; MNIST's training
#: images are 47 MB).
MAX_IDX_BYTES = 2**31
#: Deflate expands its input at most about 1032-fold: a gzip file declaring more data
#: than that cannot be complete.
DEFLATE_MAX_RATIO = 1032
#: Bytes read (and, for gzip, inflated) at a time.
READ_CHUNK_BYTES = 1 << 20

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


def _describe_magic(magic: int) -> str:
    """Return ``'0x00000803 (uint8, 3 dims)'`` style text for an IDX magic number."""
    type_code, ndim = (magic >> 8) & 0xFF, magic & 0xFF
    type_name = "uint8" if type_code == UINT8_TYPE else _OTHER_TYPES.get(type_code, "unknown")
    return f"0x{magic:08X} ({type_name}, {ndim} dim{'s' if ndim != 1 else ''})"


def _open_stream(path: PathLike, file: BinaryIO) -> tuple[BinaryIO, int | None]:
    """The stream of the IDX bytes of an open ``file``, and their exact count if known.

    A gzip file is decompressed as it is read (never all at once); the count is then
    unknown (None). For a raw file it is the file's size.
    """
    if file.read(2) == GZIP_MAGIC:
        file.seek(0)
        return gzip.GzipFile(fileobj=file, mode="rb"), None
    file.seek(0)
    return file, os.fstat(file.fileno()).st_size


def _read_exactly(path: PathLike, stream: BinaryIO, count: int) -> bytes:
    """Up to ``count`` bytes of ``stream`` (fewer only at its end); IDXFormatError on a
    corrupt gzip stream."""
    try:
        return stream.read(count)
    except (OSError, EOFError, zlib.error) as e:  # BadGzipFile is an OSError
        raise IDXFormatError(
            path,
            f"corrupt or truncated gzip stream ({type(e).__name__}: {e}); re-download the file",
        ) from None


def _parse_header(path: PathLike, stream: BinaryIO) -> tuple[int, int, tuple[int, ...]]:
    """Read and validate the IDX header at the start of ``stream``.

    Returns ``(magic, header_length, dims)``; the stream is left at the first data byte.
    """
    start = _read_exactly(path, stream, 4)
    if len(start) < 4:
        raise IDXFormatError(
            path, f"file is {len(start)} bytes, too short for the 4-byte IDX magic number"
        )
    magic = int.from_bytes(start, "big")
    if start[0] != 0 or start[1] != 0:
        raise IDXFormatError(
            path,
            f"bad magic number 0x{magic:08X}: the first two bytes must be zero "
            "(is this an IDX file?)",
        )
    type_code, ndim = start[2], start[3]
    if type_code != UINT8_TYPE:
        name = _OTHER_TYPES.get(type_code)
        kind = (
            f"unsupported data type 0x{type_code:02X} ({name})"
            if name
            else (f"unknown data type 0x{type_code:02X}")
        )
        raise IDXFormatError(path, f"{kind}; only 0x08 (unsigned byte) is supported")
    header_length = 4 + 4 * ndim
    sizes = _read_exactly(path, stream, 4 * ndim)
    if len(sizes) < 4 * ndim:
        raise IDXFormatError(
            path,
            f"truncated header: {ndim} dims need {header_length} header bytes, "
            f"but the file has {4 + len(sizes)} bytes",
        )
    dims = tuple(int.from_bytes(sizes[4 * k : 4 + 4 * k], "big") for k in range(ndim))
    return magic, header_length, dims


def _check_declared_size(
    path: PathLike,
    dims: tuple[int, ...],
    data_bytes: int | None,
    compressed_bytes: int,
    max_bytes: int,
) -> int:
    """The data size the header declares, after checking that the file can hold it.

    ``data_bytes`` is the raw file's data size (None for gzip, whose size is unknown
    until inflated: then a declared size beyond what deflate can expand
    ``compressed_bytes`` to is refused). Sizes over ``max_bytes`` are refused too, so
    nothing is allocated for a header that lies.
    """
    expected = math.prod(dims)  # Python ints: a corrupt header cannot overflow
    if data_bytes is not None and data_bytes != expected:
        what = "truncated" if data_bytes < expected else "trailing bytes"
        raise IDXFormatError(
            path,
            f"header dims {dims} need {expected} data bytes, but the file "
            f"has {data_bytes} ({what})",
        )
    if data_bytes is None and expected > DEFLATE_MAX_RATIO * compressed_bytes:
        raise IDXFormatError(
            path,
            f"header dims {dims} need {expected} data bytes, more than a gzip file "
            f"of {compressed_bytes} bytes can hold (truncated)",
        )
    if expected > max_bytes:
        raise IDXFormatError(
            path,
            f"header dims {dims} need {expected} data bytes, over the limit of "
            f"{max_bytes} (pass a larger max_bytes to read_idx if the file is genuine)",
        )
    return expected


def _read_data(
    path: PathLike, stream: BinaryIO, dims: tuple[int, ...], expected: int
) -> np.ndarray:
    """The ``expected`` data bytes of ``stream`` as a uint8 array shaped ``dims``.

    Read in chunks straight into the array; one byte more than declared is refused
    without reading further (a gzip stream could inflate to any size).
    """
    array = np.empty(expected, dtype=np.uint8)
    filled = 0
    while filled < expected:
        chunk = _read_exactly(path, stream, min(READ_CHUNK_BYTES, expected - filled))
        if not chunk:
            raise IDXFormatError(
                path,
                f"header dims {dims} need {expected} data bytes, but the file "
                f"has {filled} (truncated)",
            )
        array[filled : filled + len(chunk)] = np.frombuffer(chunk, dtype=np.uint8)
        filled += len(chunk)
    if _read_exactly(path, stream, 1):
        raise IDXFormatError(
            path,
            f"header dims {dims} need {expected} data bytes, but the file has more "
            "(trailing bytes; reading stopped at the first one)",
        )
    return array.reshape(dims)


def read_idx(
    path: PathLike, *, expected_magic: int | None = None, max_bytes: int = MAX_IDX_BYTES
) -> np.ndarray:
    """Read an IDX file (gzip or raw) into a uint8 array shaped like the header's dims.

    The file is read as a stream: the header first, then exactly the data it declares
    (refused beforehand if the file cannot hold them or they exceed ``max_bytes``), so
    a small gzip file that inflates to gigabytes costs no more memory than its header
    says.

    Args:
        path: the file; gzip compression is detected from its first two bytes.
        expected_magic: if given (e.g. ``IMAGES_MAGIC`` or ``LABELS_MAGIC``), the
            file's magic number must equal it.
        max_bytes: the largest data size accepted (default :data:`MAX_IDX_BYTES`).

    Returns:
        uint8 array of shape ``dims`` (e.g. ``(N, 28, 28)`` for images, ``(N,)``
        for labels). It owns its memory and is writable.

    Raises:
        FileNotFoundError: the file does not exist (the message names it).
        IDXFormatError: corrupt gzip, bad magic number, unsupported type, truncated
            header, a data size over ``max_bytes``, or a data length that differs from
            the product of the dims.

    Example:
        >>> import tempfile, os
        >>> p = os.path.join(tempfile.mkdtemp(), "x.idx")
        >>> write_idx(p, np.arange(6, dtype=np.uint8).reshape(2, 3))
        >>> read_idx(p)
        array([[0, 1, 2],
               [3, 4, 5]], dtype=uint8)
    """
    if not os.path.exists(path):
        raise FileNotFoundError(errno.ENOENT, "read_idx: no such IDX file", os.fspath(path))
    with open(path, "rb") as file:
        stream, file_bytes = _open_stream(path, file)
        with stream:
            magic, header_length, dims = _parse_header(path, stream)
            if expected_magic is not None and magic != expected_magic:
                raise IDXFormatError(
                    path,
                    f"magic number is {_describe_magic(magic)} but "
                    f"{_describe_magic(expected_magic)} was expected"
                    + _magic_hint(magic, expected_magic),
                )
            data_bytes = None if file_bytes is None else file_bytes - header_length
            expected = _check_declared_size(
                path, dims, data_bytes, os.fstat(file.fileno()).st_size, max_bytes
            )
            return _read_data(path, stream, dims, expected)


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
            image_path,
            f"has {images.shape[0]} images but the label file {label_path} "
            f"has {labels.shape[0]} labels; the counts must match",
        )
    if image_size is not None and images.shape[1:] != tuple(image_size):
        raise IDXFormatError(
            image_path,
            f"images are {images.shape[1]}x{images.shape[2]} but "
            f"{image_size[0]}x{image_size[1]} was expected",
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
            label_path,
            f"label {int(labels[i])} at index {i} is outside 0..{num_classes - 1} "
            f"({bad.size} labels out of range)",
        )
