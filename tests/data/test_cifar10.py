"""CIFAR10Dataset and download_cifar10 on generated files in the official format.

The batches are written as Python 2's cPickle wrote the official ones (protocol 2,
strings as BINSTRING, ``numpy.core.multiarray._reconstruct``), so the loader is tested
on the real byte layout without the 170 MB download. No network: the downloader is
served by a local http.server (the ``server`` fixture in conftest.py).
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
from helpers.datasets import TRAIN, make_batch, py2_dumps

import needle as ndl
from needle.data import (
    CIFAR10Dataset,
    CIFAR10FormatError,
    DataLoader,
    DatasetNotFoundError,
    RandomFlipHorizontal,
    download_cifar10,
)
from needle.data.datasets.download import ChecksumMismatchError


@pytest.fixture
def cifar_dir(tmp_path, rng):
    """A cifar-10-batches-py folder: 5 train batches of 4 images, a test batch of 3."""
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    batches = {}
    for i, name in enumerate(TRAIN + ["test_batch"]):
        batches[name] = make_batch(rng, 3 if name == "test_batch" else 4, f"batch {i}")
        (folder / name).write_bytes(py2_dumps(batches[name]))
    return folder, batches


def test_train_set_concatenates_batches_in_order(cifar_dir):
    folder, batches = cifar_dir
    ds = CIFAR10Dataset(str(folder), train=True)
    data = np.concatenate([batches[n][b"data"] for n in TRAIN])
    labels = np.concatenate([batches[n][b"labels"] for n in TRAIN])
    assert ds.X.dtype == np.float32 and ds.X.shape == (20, 3, 32, 32)
    np.testing.assert_array_equal(ds.X, data.reshape(-1, 3, 32, 32).astype(np.float32) / 255)
    assert ds.y.dtype == np.int64
    np.testing.assert_array_equal(ds.y, labels)
    assert len(ds) == 20


def test_rows_are_channel_planes_not_transposed(cifar_dir):
    """Pixel (c, i, j) of an image is entry c·1024 + i·32 + j of its row."""
    folder, batches = cifar_dir
    ds = CIFAR10Dataset(folder, train=False)
    row = batches["test_batch"][b"data"][1]
    assert ds[1][0][2, 5, 7] == np.float32(row[2 * 1024 + 5 * 32 + 7]) / np.float32(255)
    assert ds[1][0].shape == (3, 32, 32) and ds[1][1] == batches["test_batch"][b"labels"][1]


def test_also_reads_python3_pickles(tmp_path, rng):
    folder = tmp_path / "c"
    folder.mkdir()
    batch = make_batch(rng, 2, "py3")
    (folder / "test_batch").write_bytes(pickle.dumps(batch, protocol=4))
    np.testing.assert_array_equal(CIFAR10Dataset(folder, train=False).y, batch[b"labels"])


def test_no_random_draws_when_loading_and_iterating(cifar_dir):
    folder, _ = cifar_dir
    np.random.seed(0)
    state = np.random.get_state()[1].copy()
    ds = CIFAR10Dataset(folder, train=True)
    batches = list(DataLoader(ds, batch_size=8))
    np.testing.assert_array_equal(np.random.get_state()[1], state)
    X, y = batches[0]
    assert isinstance(X, ndl.Tensor) and X.shape == (8, 3, 32, 32) and X.dtype == "float32"
    np.testing.assert_array_equal(X.numpy(), ds.X[:8])
    np.testing.assert_array_equal(y.numpy(), ds.y[:8])


def test_transforms_act_on_hwc_copies(cifar_dir):
    folder, _ = cifar_dir
    seen = []

    def record(img):
        seen.append(img.shape)
        img[...] = 0  # must not reach ds.X
        return img

    plain = CIFAR10Dataset(folder, train=False)
    ds = CIFAR10Dataset(folder, train=False, transforms=[record])
    assert ds[0][0].shape == (3, 32, 32) and seen == [(32, 32, 3)]
    np.testing.assert_array_equal(ds.X, plain.X)

    flip = CIFAR10Dataset(folder, train=False, transforms=[RandomFlipHorizontal(p=1.0)])
    np.testing.assert_array_equal(flip[2][0], plain.X[2][:, :, ::-1])
    batch = flip.get_batch(np.array([2, 0]))[0]
    np.testing.assert_array_equal(batch, plain.X[[2, 0]][:, :, :, ::-1])


# ----- bad and malicious files --------------------------------------------------------------


class RunsCommand:
    """Unpickling this calls os.system(command): what a tampered batch would do."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def test_tampered_pickle_is_refused_before_anything_runs(cifar_dir, tmp_path):
    folder, batches = cifar_dir
    marker = tmp_path / "pwned"
    evil = {**batches["test_batch"], b"data": RunsCommand(f"touch {marker}")}
    (folder / "test_batch").write_bytes(py2_dumps(evil))
    with pytest.raises(CIFAR10FormatError) as info:
        CIFAR10Dataset(folder, train=False)
    assert not marker.exists()
    message = str(info.value)
    assert str(folder / "test_batch") in message and "refused global" in message
    assert ".system" in message  # posix.system: the module os.system lives in


@pytest.mark.parametrize("payload", [eval, exec, getattr, __import__])
def test_other_builtins_are_refused(tmp_path, payload):
    path = tmp_path / "test_batch"
    path.write_bytes(py2_dumps({b"data": payload}))
    with pytest.raises(CIFAR10FormatError, match=r"refused global (__builtin__|builtins)\."):
        CIFAR10Dataset(tmp_path, train=False)


def _rewrite(folder: Path, name: str, batch) -> None:
    (folder / name).write_bytes(py2_dumps(batch))


BAD_BATCHES = [
    ("not a dict", lambda b: [b[b"data"]], "expected a dict"),
    ("no labels", lambda b: {b"data": b[b"data"]}, "b'labels'"),
    ("int16 data", lambda b: {**b, b"data": b[b"data"].astype(np.int16)}, "uint8"),
    ("short rows", lambda b: {**b, b"data": b[b"data"][:, :3000]}, "(n, 3072)"),
    ("label 10", lambda b: {**b, b"labels": [10] * 3}, "in [0, 10)"),
    ("label count", lambda b: {**b, b"labels": [1, 2]}, "list of 3 ints"),
    ("float labels", lambda b: {**b, b"labels": [1.0, 2.0, 3.0]}, "b'labels'"),
]


@pytest.mark.parametrize("name, tamper, words", BAD_BATCHES, ids=[b[0] for b in BAD_BATCHES])
def test_malformed_batches_name_the_file_and_problem(cifar_dir, name, tamper, words):
    folder, batches = cifar_dir
    _rewrite(folder, "test_batch", tamper(batches["test_batch"]))
    with pytest.raises(CIFAR10FormatError) as info:
        CIFAR10Dataset(folder, train=False)
    assert str(folder / "test_batch") in str(info.value) and words in str(info.value)


@pytest.mark.parametrize("keep", [0, 10, 200, 5000])
def test_truncated_batch(cifar_dir, keep):
    folder, _ = cifar_dir
    path = folder / "data_batch_3"
    path.write_bytes(path.read_bytes()[:keep])
    with pytest.raises(CIFAR10FormatError, match="data_batch_3"):
        CIFAR10Dataset(folder, train=True)


def test_huge_reconstruct_shape_is_refused(cifar_dir):
    folder, _ = cifar_dir
    path = folder / "test_batch"
    raw = path.read_bytes()
    # The array's _reconstruct(ndarray, (0,), b'b') gets the shape (2**30,) instead.
    empty_shape = b"cnumpy\nndarray\nq\x07K\x00\x85"
    assert empty_shape in raw
    path.write_bytes(raw.replace(empty_shape, b"cnumpy\nndarray\nq\x07J\x00\x00\x00\x40\x85"))
    with pytest.raises(CIFAR10FormatError, match="only the empty ndarray"):
        CIFAR10Dataset(folder, train=False)


def test_missing_batch_names_path_and_layout(cifar_dir):
    folder, _ = cifar_dir
    (folder / "data_batch_4").unlink()
    with pytest.raises(DatasetNotFoundError) as info:
        CIFAR10Dataset(folder, train=True)
    message = str(info.value)
    assert str(folder / "data_batch_4") in message and "cifar-10-batches-py" in message


# ----- the downloader -----------------------------------------------------------------------


def _archive(cifar_folder: Path, extra: dict | None = None, skip: str | None = None) -> bytes:
    """A .tar.gz like the official one, optionally with extra members or one file left out."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for path in sorted(cifar_folder.iterdir()):
            if path.name != skip:
                tar.add(path, arcname=f"cifar-10-batches-py/{path.name}")
        for name, data in (extra or {}).items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_download_verifies_and_unpacks(server, cifar_dir, tmp_path):
    served, base = server
    folder, _ = cifar_dir
    archive = _archive(folder, extra={"../escape": b"x", "cifar-10-batches-py/../../up": b"y"})
    (served / "c.tar.gz").write_bytes(archive)
    root = tmp_path / "root"
    out = download_cifar10(
        root, url=base + "c.tar.gz", md5=hashlib.md5(archive).hexdigest(), timeout=5
    )
    assert out == root / "cifar-10-batches-py"
    assert sorted(os.listdir(root)) == ["cifar-10-batches-py"]  # no temp files, no escapes
    assert not (tmp_path / "escape").exists() and not (tmp_path / "up").exists()
    np.testing.assert_array_equal(
        CIFAR10Dataset(out, train=True).X, CIFAR10Dataset(folder, train=True).X
    )
    # A complete folder is reused: no request is made (this URL would fail).
    assert download_cifar10(root, url=base + "absent.tar.gz", timeout=5) == out


def test_download_with_wrong_md5_keeps_nothing(server, cifar_dir, tmp_path):
    served, base = server
    folder, _ = cifar_dir
    (served / "c.tar.gz").write_bytes(_archive(folder))
    root = tmp_path / "root"
    with pytest.raises(ChecksumMismatchError, match="MD5 mismatch"):
        download_cifar10(root, url=base + "c.tar.gz", md5="0" * 32, timeout=5)
    assert os.listdir(root) == []


def test_download_of_incomplete_archive_is_refused(server, cifar_dir, tmp_path):
    served, base = server
    folder, _ = cifar_dir
    archive = _archive(folder, skip="test_batch")
    (served / "c.tar.gz").write_bytes(archive)
    root = tmp_path / "root"
    with pytest.raises(CIFAR10FormatError, match="test_batch"):
        download_cifar10(
            root, url=base + "c.tar.gz", md5=hashlib.md5(archive).hexdigest(), timeout=5
        )
    assert os.listdir(root) == []


def test_resnet9_trains_on_a_cifar_folder(cifar_dir):
    """Batch files → CIFAR10Dataset → DataLoader → ResNet9 → train and evaluate."""
    from needle.apps.models import ResNet9
    from needle.apps.simple_ml import evaluate_cifar10, train_cifar10

    folder, _ = cifar_dir
    loader = DataLoader(CIFAR10Dataset(folder, train=True), batch_size=8, shuffle=True)
    np.random.seed(0)
    model = ResNet9()
    first_acc, first_loss = train_cifar10(model, loader, n_epochs=1, lr=0.01)
    acc, loss = train_cifar10(model, loader, n_epochs=3, lr=0.01)
    assert 0.0 <= first_acc <= 1.0 and loss < first_loss  # 20 images: Adam fits them
    test = DataLoader(CIFAR10Dataset(folder, train=False), batch_size=8)
    eval_acc, eval_loss = evaluate_cifar10(model, test)
    assert 0.0 <= eval_acc <= 1.0 and np.isfinite(eval_loss)
