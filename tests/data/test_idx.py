"""IDX reading and validation (needle.data.idx) on small files the tests write."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from needle.data import IDXFormatError, MNISTDataset, load_mnist_arrays, read_idx, write_idx
from needle.data.idx import IMAGES_MAGIC, LABELS_MAGIC


def idx_bytes(array: np.ndarray, type_code: int = 0x08) -> bytes:
    """Build an IDX file by hand (independently of write_idx) for cross-checking."""
    header = struct.pack(">BBBB", 0, 0, type_code, array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def make_pair(
    tmp_path: Path,
    n: int = 5,
    size: tuple[int, int] = (28, 28),
    n_labels: int | None = None,
    gz: bool = False,
) -> tuple[Path, Path]:
    """Write an image file and a label file; return their paths."""
    rng = np.random.default_rng(0)
    suffix = ".gz" if gz else ""
    images = tmp_path / f"imgs-idx3-ubyte{suffix}"
    labels = tmp_path / f"lbls-idx1-ubyte{suffix}"
    write_idx(images, rng.integers(0, 256, size=(n, *size), dtype=np.uint8))
    write_idx(labels, rng.integers(0, 10, size=n_labels or n, dtype=np.uint8))
    return images, labels


# ----- well-formed files ---------------------------------------------------------------


def test_write_idx_matches_hand_built_bytes(tmp_path):
    array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / "a", array)
    assert (tmp_path / "a").read_bytes() == idx_bytes(array)
    assert (tmp_path / "a").read_bytes()[:4] == IMAGES_MAGIC.to_bytes(4, "big")


@pytest.mark.parametrize("compress", [False, True])
def test_read_idx_raw_and_gzip(tmp_path, compress):
    array = np.random.default_rng(1).integers(0, 256, size=(3, 5, 7), dtype=np.uint8)
    data = idx_bytes(array)
    path = tmp_path / "file"
    path.write_bytes(gzip.compress(data) if compress else data)
    out = read_idx(path, expected_magic=IMAGES_MAGIC)
    assert out.dtype == np.uint8 and out.shape == (3, 5, 7)
    np.testing.assert_array_equal(out, array)
    out[0, 0, 0] = 1  # the result owns writable memory


def test_gzip_detected_by_magic_not_name(tmp_path):
    labels = np.array([1, 2, 3], dtype=np.uint8)
    (tmp_path / "compressed.idx").write_bytes(gzip.compress(idx_bytes(labels)))
    (tmp_path / "plain.gz").write_bytes(idx_bytes(labels))
    for name in ("compressed.idx", "plain.gz"):
        np.testing.assert_array_equal(read_idx(tmp_path / name), labels)


def test_load_mnist_arrays_values(tmp_path):
    images, labels = make_pair(tmp_path, n=4, gz=True)
    X, y = load_mnist_arrays(images, labels)
    raw = read_idx(images)
    assert X.shape == (4, 784) and X.dtype == np.float32
    assert y.shape == (4,) and y.dtype == np.uint8
    np.testing.assert_array_equal(X, raw.reshape(4, 784).astype(np.float32) / 255)
    assert 0.0 <= X.min() and X.max() <= 1.0
    np.testing.assert_array_equal(y, read_idx(labels))


# ----- rejected files: each error names the file --------------------------------------


def assert_idx_error(path: Path, *words: str, expected_magic: int | None = None) -> None:
    """read_idx(path) raises IDXFormatError naming the file and containing ``words``."""
    with pytest.raises(IDXFormatError) as info:
        read_idx(path, expected_magic=expected_magic)
    message = str(info.value)
    assert str(path) in message and info.value.path == str(path)
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"


def test_missing_file_names_path(tmp_path):
    path = tmp_path / "nope-idx1-ubyte.gz"
    with pytest.raises(FileNotFoundError, match="nope-idx1-ubyte.gz"):
        read_idx(path)


def test_header_only_file_is_truncated(tmp_path):
    path = tmp_path / "labels"
    path.write_bytes(struct.pack(">BBBBI", 0, 0, 8, 1, 5))
    assert_idx_error(path, "truncated", "need 5 data bytes", "has 0")


def test_short_data_is_truncated(tmp_path):
    path = tmp_path / "images"
    path.write_bytes(idx_bytes(np.zeros((2, 3, 3), np.uint8))[:-4])
    assert_idx_error(path, "truncated", "need 18 data bytes", "has 14")


def test_trailing_bytes_rejected(tmp_path):
    path = tmp_path / "images"
    path.write_bytes(idx_bytes(np.zeros((2, 3, 3), np.uint8)) + b"\x00\x01")
    assert_idx_error(path, "trailing bytes", "need 18", "has 20")


@pytest.mark.parametrize(
    "content, words",
    [
        (b"", ["0 bytes", "too short"]),
        (b"\x00\x00", ["2 bytes", "too short"]),
        (b"PK\x03\x04rest", ["bad magic number", "first two bytes must be zero"]),
        (b"\x00\x00\x0d\x01\x00\x00\x00\x01abcd", ["unsupported data type 0x0D", "float32"]),
        (b"\x00\x00\x42\x01\x00\x00\x00\x01a", ["unknown data type 0x42"]),
        (b"\x00\x00\x08\x03\x00\x00\x00\x01\x00", ["truncated header", "16 header bytes"]),
    ],
)
def test_malformed_headers_rejected(tmp_path, content, words):
    path = tmp_path / "bad-idx"
    path.write_bytes(content)
    assert_idx_error(path, *words)


def test_wrong_magic_for_role(tmp_path):
    images, labels = make_pair(tmp_path)
    assert_idx_error(labels, "0x00000801", "0x00000803", "swapped", expected_magic=IMAGES_MAGIC)
    assert_idx_error(images, "0x00000803", "0x00000801", "swapped", expected_magic=LABELS_MAGIC)
    with pytest.raises(IDXFormatError, match="swapped"):
        load_mnist_arrays(labels, images)


def test_count_mismatch_names_both_files(tmp_path):
    images, labels = make_pair(tmp_path, n=5, n_labels=4)
    with pytest.raises(IDXFormatError) as info:
        load_mnist_arrays(images, labels)
    message = str(info.value)
    assert str(images) in message and str(labels) in message
    assert "5 images" in message and "4 labels" in message


@pytest.mark.parametrize("damage", ["flip", "cut"])
def test_corrupt_gzip_rejected(tmp_path, damage):
    path = tmp_path / "train-images-idx3-ubyte.gz"
    good = gzip.compress(idx_bytes(np.arange(200, dtype=np.uint8).reshape(2, 10, 10)))
    if damage == "flip":
        bad = good[:20] + bytes(b ^ 0xFF for b in good[20:30]) + good[30:]
    else:
        bad = good[: len(good) // 2]
    path.write_bytes(bad)
    assert_idx_error(path, "gzip")


def test_image_size_and_label_range_checked_by_mnist_helper_only(tmp_path):
    images, labels = make_pair(tmp_path, n=3, size=(32, 32))
    with pytest.raises(IDXFormatError, match=r"32x32 but 28x28"):
        load_mnist_arrays(images, labels)
    assert MNISTDataset(images, labels)[0][0].shape == (32 * 32,)  # generic: any HxW
    write_idx(labels, np.array([1, 12, 3], dtype=np.uint8))
    with pytest.raises(IDXFormatError) as info:
        load_mnist_arrays(images, labels, image_size=None)
    assert str(labels) in str(info.value) and "label 12 at index 1" in str(info.value)
    assert read_idx(labels).tolist() == [1, 12, 3]  # the generic reader does not judge


# ----- random corruption: a clean error, or a correct load -----------------------------

IMAGE = np.arange(3 * 4 * 4, dtype=np.uint8).reshape(3, 4, 4)
GOOD = idx_bytes(IMAGE)
HEADER = 16
# tmp_path is shared by the examples; each example overwrites the same file, which is fine.
FIXTURE_OK = [HealthCheck.function_scoped_fixture]


def _read_or_clean_error(path, data: bytearray):
    """Write ``data`` to ``path`` and read it: the array, or None after an IDXFormatError
    that names the file (any other exception fails the test)."""
    path.write_bytes(bytes(data))
    try:
        return read_idx(path, expected_magic=IMAGES_MAGIC)
    except IDXFormatError as e:
        assert str(path) in str(e)
        return None


@settings(max_examples=300, deadline=None, suppress_health_check=FIXTURE_OK)
@given(
    changes=st.lists(
        st.tuples(st.integers(0, len(GOOD) - 1), st.integers(0, 255)), min_size=1, max_size=4
    ),
    cut=st.one_of(st.none(), st.integers(0, len(GOOD) + 3)),
)
def test_random_corruption_is_clean(tmp_path, changes, cut):
    data = bytearray(GOOD)
    for position, value in changes:
        data[position] = value
    if cut is not None:
        data = data[:cut] if cut <= len(GOOD) else data + b"\x07" * (cut - len(GOOD))
    out = _read_or_clean_error(tmp_path / "fuzz-idx3-ubyte", data)
    if out is None:
        return
    if cut in (None, len(GOOD)) and all(p >= HEADER for p, _ in changes):
        assert out.shape == IMAGE.shape
        pixels = np.frombuffer(bytes(data[HEADER:]), np.uint8)
        np.testing.assert_array_equal(out.reshape(-1), pixels)
    else:
        assert out.size == len(data) - HEADER  # a header that still adds up is accepted


GOOD_GZ = gzip.compress(GOOD, mtime=0)


@settings(max_examples=200, deadline=None, suppress_health_check=FIXTURE_OK)
@given(
    changes=st.lists(
        st.tuples(st.integers(0, len(GOOD_GZ) - 1), st.integers(0, 255)), min_size=1, max_size=3
    )
)
def test_random_gzip_corruption_is_clean(tmp_path, changes):
    data = bytearray(GOOD_GZ)
    for position, value in changes:
        data[position] = value
    out = _read_or_clean_error(tmp_path / "fuzz-idx3-ubyte.gz", data)
    if out is None:
        return
    assert out.dtype == np.uint8 and out.ndim == 3
