"""Hostile data files: every reader checks declared sizes before it spends memory on them.

Each test builds a small file that declares (or inflates to) far more than it should, and
checks two things: the error is the reader's own, naming the file and the problem, and
the peak memory traced while refusing it (``tracemalloc``: every Python and NumPy
allocation) stays at a few MB, where reading the file whole would take hundreds of MB or
gigabytes.
"""

from __future__ import annotations

import gzip
import json
import pickle
import struct
import tracemalloc
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

import needle as ndl
from needle.data import CIFAR10FormatError, Corpus, CorpusFormatError, IDXFormatError, read_idx
from needle.data.datasets.cifar10 import load_cifar10_batch
from needle.serialization import CheckpointError

MB = 2**20
#: What refusing a bomb may cost: a few read buffers, never the declared data.
PEAK_LIMIT = 8 * MB


def peak_while_refused(action: Callable[[], object], error: type, match: str) -> int:
    """Run ``action``, which must raise ``error`` matching ``match``; return the peak
    number of bytes allocated meanwhile."""
    tracemalloc.start()
    try:
        with pytest.raises(error, match=match):
            action()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


# ----- IDX ------------------------------------------------------------------------------------


def idx_header(*dims: int) -> bytes:
    """An IDX uint8 header for ``dims``, built by hand."""
    return struct.pack(">BBBB", 0, 0, 8, len(dims)) + struct.pack(f">{len(dims)}I", *dims)


def test_gzip_idx_that_inflates_to_a_gigabyte_is_refused_after_its_declared_bytes(tmp_path):
    # Ten images, then a thousand gzip members of 1 MB of zeros each: ~1 GB once inflated.
    images = np.arange(10 * 28 * 28, dtype=np.uint8).tobytes()
    zeros_member = gzip.compress(bytes(MB), compresslevel=9)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(idx_header(10, 28, 28) + images) + zeros_member * 1000)
    assert path.stat().st_size < 3 * MB
    peak = peak_while_refused(
        lambda: read_idx(path),
        IDXFormatError,
        f"{path.name}.*need 7840 data bytes.*more.*trailing bytes",
    )
    assert peak < PEAK_LIMIT, peak


def test_idx_header_declaring_more_than_its_gzip_can_hold_is_refused_unread(tmp_path):
    path = tmp_path / "labels.gz"
    path.write_bytes(gzip.compress(idx_header(60000, 60000, 60000) + bytes(100)))
    peak = peak_while_refused(
        lambda: read_idx(path),
        IDXFormatError,
        "need 216000000000000 data bytes, more than a gzip file",
    )
    assert peak < PEAK_LIMIT, peak


def test_idx_data_over_the_limit_is_refused(tmp_path):
    path = tmp_path / "images"
    path.write_bytes(idx_header(4, 5) + bytes(20))
    assert read_idx(path, max_bytes=20).shape == (4, 5)
    with pytest.raises(IDXFormatError, match="need 20 data bytes, over the limit of 19"):
        read_idx(path, max_bytes=19)


def test_multi_member_gzip_idx_reads_like_one_stream(tmp_path):
    array = np.arange(6000, dtype=np.uint8).reshape(6, 1000) % 251
    whole = idx_header(6, 1000) + array.tobytes()
    path = tmp_path / "split.gz"
    path.write_bytes(gzip.compress(whole[:2500]) + gzip.compress(whole[2500:]))
    np.testing.assert_array_equal(read_idx(path), array)


# ----- CIFAR-10 batches -----------------------------------------------------------------------


class _CallsNDArray:
    """Pickles as ``numpy.ndarray(shape, 'u1')``: a direct call of the class."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        self.shape = shape

    def __reduce__(self):
        return np.ndarray, (self.shape, "u1")


def test_cifar_pickle_calling_ndarray_directly_is_refused(tmp_path):
    path = tmp_path / "data_batch_1"
    batch = {b"data": _CallsNDArray((1_000_000, 3072)), b"labels": [0] * 1_000_000}
    path.write_bytes(pickle.dumps(batch, protocol=3))
    assert path.stat().st_size < 3 * MB
    peak = peak_while_refused(
        lambda: load_cifar10_batch(path),
        CIFAR10FormatError,
        f"{path.name}.*refused a call of numpy.ndarray",
    )
    assert peak < PEAK_LIMIT, peak


def test_cifar_pickle_declaring_gigabytes_of_bytes_is_refused_unallocated(tmp_path):
    path = tmp_path / "test_batch"
    # PROTO 4, BINBYTES8 of 7.9 GB followed by three bytes: the file ends there.
    path.write_bytes(b"\x80\x04\x8e" + struct.pack("<Q", 7_900_000_000) + b"abc")
    peak = peak_while_refused(
        lambda: load_cifar10_batch(path),
        CIFAR10FormatError,
        f"{path.name}.*not a valid batch pickle",
    )
    assert peak < PEAK_LIMIT, peak


def test_cifar_array_whose_bytes_do_not_fill_its_shape_is_refused(tmp_path):
    data = np.zeros((2, 3072), dtype=np.uint8)
    raw = pickle.dumps({b"data": data, b"labels": [1, 2]}, protocol=3)
    # Claim four rows for the same two rows of bytes.
    raw = raw.replace(b"K\x02M\x00\x0c\x86", b"K\x04M\x00\x0c\x86", 1)
    path = tmp_path / "data_batch_2"
    path.write_bytes(raw)
    with pytest.raises(CIFAR10FormatError, match="buffer size does not match"):
        load_cifar10_batch(path)


# ----- .npz checkpoints -----------------------------------------------------------------------


def manifest_bytes(root: dict) -> np.ndarray:
    """A needle manifest holding ``root``, as the uint8 array ``save`` stores."""
    text = json.dumps({"format": "needle-checkpoint", "version": 1, "root": root})
    return np.frombuffer(text.encode(), dtype=np.uint8)


def write_members(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """An uncompressed npz of ``arrays``, written by NumPy."""
    np.savez(path, **arrays)


def test_npz_member_inflating_to_512_mb_is_refused_uninflated(tmp_path):
    path = tmp_path / "bomb.npz"
    shape = [128 * MB]  # float32: 512 MB
    leaf = {"type": "ndarray", "key": "leaf_0", "dtype": "<f4", "shape": shape}
    npy = np.lib.format
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        with archive.open("__manifest__.npy", "w") as member:
            npy.write_array(member, manifest_bytes(leaf))
        with archive.open("leaf_0.npy", "w", force_zip64=True) as member:
            header = {"descr": "<f4", "fortran_order": False, "shape": tuple(shape)}
            npy.write_array_header_1_0(member, header)
            for _ in range(512):
                member.write(bytes(MB))
    assert path.stat().st_size < 3 * MB
    peak = peak_while_refused(
        lambda: ndl.load(path),
        CheckpointError,
        r"bomb.npz.*leaf_0.npy.*to \d{9}, more than 20x.*decompression bomb",
    )
    assert peak < PEAK_LIMIT, peak


def test_npz_member_whose_directory_size_lies_is_refused(tmp_path):
    path = tmp_path / "ckpt.npz"
    ndl.save({"w": np.arange(4.0)}, path)
    data = bytearray(path.read_bytes())
    # The central directory's uncompressed size of the first member: claim 512 MB.
    first = data.index(b"PK\x01\x02")
    struct.pack_into("<I", data, first + 24, 512 * MB)
    path.write_bytes(bytes(data))
    peak = peak_while_refused(lambda: ndl.load(path), CheckpointError, "ckpt.npz")
    assert peak < PEAK_LIMIT, peak


def test_npz_over_the_size_limit_is_refused(tmp_path):
    path = tmp_path / "big.npz"
    ndl.save({"w": np.zeros(1000)}, path)
    assert ndl.load(path, max_bytes=9000)["w"].shape == (1000,)
    with pytest.raises(CheckpointError, match=r"big.npz.*over the limit of 8000"):
        ndl.load(path, max_bytes=8000)


def test_npz_leaf_header_that_disagrees_with_the_manifest_is_refused_unread(tmp_path):
    path = tmp_path / "ckpt.npz"
    leaf = {"type": "ndarray", "key": "leaf_0", "dtype": "<f4", "shape": [2]}
    write_members(
        path, {"__manifest__": manifest_bytes(leaf), "leaf_0": np.zeros(3, dtype=np.float32)}
    )
    with pytest.raises(CheckpointError, match=r"ckpt.npz.*shape \[3\].*says <f4 and \[2\]"):
        ndl.load(path)


@pytest.mark.parametrize("depth", [150, 100_000])
def test_deeply_nested_manifest_is_a_checkpoint_error(tmp_path, depth):
    path = tmp_path / "deep.npz"
    text = (
        '{"format": "needle-checkpoint", "version": 1, "root": '
        + '{"type": "list", "items": [' * depth
        + "]}" * depth
        + "}"
    )
    write_members(path, {"__manifest__": np.frombuffer(text.encode(), dtype=np.uint8)})
    with pytest.raises(CheckpointError, match=r"deep.npz.*nests deeper than 100 levels"):
        ndl.load(path)


@pytest.mark.parametrize("dtype", ["<U3", "<c8"])
def test_tensor_leaf_with_an_unsupported_dtype_is_a_checkpoint_error(tmp_path, dtype):
    path = tmp_path / "odd.npz"
    leaf = {"type": "tensor", "key": "leaf_0", "dtype": np.dtype(dtype).str, "shape": [2]}
    write_members(path, {"__manifest__": manifest_bytes(leaf), "leaf_0": np.zeros(2, dtype=dtype)})
    with pytest.raises(CheckpointError, match=f"odd.npz.*tensor has dtype {np.dtype(dtype).str}"):
        ndl.load(path)


def test_fortran_ordered_leaf_round_trips(tmp_path):
    array = np.asfortranarray(np.arange(12.0).reshape(3, 4))
    ndl.save({"a": array}, tmp_path / "f.npz")
    np.testing.assert_array_equal(ndl.load(tmp_path / "f.npz")["a"], np.arange(12.0).reshape(3, 4))


# ----- text corpora ---------------------------------------------------------------------------


def write_corpus(folder: Path, train: bytes) -> None:
    (folder / "train.txt").write_bytes(train)
    (folder / "test.txt").write_bytes(b" the end \n")


def test_corpus_that_is_not_utf8_names_file_line_and_byte(tmp_path):
    write_corpus(tmp_path, b" the cat \n le caf\xe9 noir \n")
    with pytest.raises(CorpusFormatError) as info:
        Corpus(tmp_path)
    message = str(info.value)
    assert str(tmp_path / "train.txt") in message
    assert "line 2, column 8: not UTF-8 (byte e9: invalid continuation byte)" in message


def test_corpus_line_without_end_is_refused_after_a_bounded_read(tmp_path):
    write_corpus(tmp_path, b"word " * (4 * MB))  # 20 MB, no line break
    peak = peak_while_refused(
        lambda: Corpus(tmp_path), CorpusFormatError, "train.txt, line 1: longer than 1048576 bytes"
    )
    assert peak < PEAK_LIMIT, peak


def test_corpus_lines_are_read_as_before(tmp_path):
    write_corpus(tmp_path, "a b\r\nc é\n\nb".encode())
    corpus = Corpus(tmp_path)
    words = [corpus.dictionary.idx2word[i] for i in corpus.train]
    assert words == ["a", "b", "<eos>", "c", "é", "<eos>", "<eos>", "b", "<eos>"]
    assert len(Corpus(tmp_path, max_lines=1).train) == 3
