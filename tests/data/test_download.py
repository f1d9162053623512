"""The verified downloader, against a local HTTP server on 127.0.0.1 (no other network)."""

from __future__ import annotations

import gzip
import hashlib
import os
from pathlib import Path

import numpy as np
import pytest

from needle.data import MNIST, FashionMNIST, write_idx
from needle.data.datasets import download, mnist_dataset
from needle.data.datasets.download import (
    ChecksumMismatchError,
    DownloadError,
    content_sha256,
    download_file,
    download_from_mirrors,
)

GOOD = b"needle test payload\n" * 1000


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_good_file_accepted(server, tmp_path, monkeypatch):
    served, base = server
    (served / "good.bin").write_bytes(GOOD)
    dest = tmp_path / "out" / "good.bin"
    seen = []
    original = download._verify

    def spy(url, final, tmp, expected, content_hash):
        # While verifying: the data sits in a temp file beside the destination, which is absent.
        seen.append((final.exists(), tmp.parent == final.parent, tmp.read_bytes() == GOOD))
        original(url, final, tmp, expected, content_hash)

    monkeypatch.setattr(download, "_verify", spy)
    assert download_file(base + "good.bin", dest, sha(GOOD), timeout=5) == dest
    assert seen == [(False, True, True)]
    assert dest.read_bytes() == GOOD
    assert os.listdir(dest.parent) == ["good.bin"]  # no temp file left


@pytest.mark.parametrize("existing", [None, b"old contents"])
def test_corrupted_file_rejected(server, tmp_path, existing):
    served, base = server
    (served / "data.bin").write_bytes(GOOD[:-1] + b"X")
    dest = tmp_path / "out" / "data.bin"
    if existing is not None:
        dest.parent.mkdir()
        dest.write_bytes(existing)
    with pytest.raises(ChecksumMismatchError) as info:
        download_file(base + "data.bin", dest, sha(GOOD), timeout=5)
    message = str(info.value)
    for text in (base + "data.bin", str(dest), sha(GOOD), sha(GOOD[:-1] + b"X")):
        assert text in message
    if existing is None:
        assert os.listdir(dest.parent) == []
    else:  # an earlier good file survives a failed replacement
        assert os.listdir(dest.parent) == ["data.bin"] and dest.read_bytes() == existing


def test_http_error_leaves_nothing(server, tmp_path):
    _, base = server
    dest = tmp_path / "out" / "missing.bin"
    with pytest.raises(DownloadError, match=r"missing\.bin.*404"):
        download_file(base + "missing.bin", dest, sha(GOOD), timeout=5)
    assert os.listdir(dest.parent) == []


def test_unknown_hash_refused_unless_verify_false(server, tmp_path):
    served, base = server
    (served / "f.bin").write_bytes(GOOD)
    with pytest.raises(ValueError, match="no known SHA-256.*verify=False"):
        download_file(base + "f.bin", tmp_path / "f.bin", None)
    assert not (tmp_path / "f.bin").exists()
    download_file(base + "f.bin", tmp_path / "f.bin", None, verify=False, timeout=5)
    assert (tmp_path / "f.bin").read_bytes() == GOOD


def test_only_http_urls(tmp_path):
    (tmp_path / "src").write_bytes(GOOD)
    with pytest.raises(ValueError, match="not an http"):
        download_file((tmp_path / "src").as_uri(), tmp_path / "dst", sha(GOOD))


def test_content_hash_ignores_gzip_header(server, tmp_path):
    served, base = server
    (served / "f.gz").write_bytes(gzip.compress(GOOD, mtime=12345))
    (tmp_path / "raw").write_bytes(GOOD)
    assert content_sha256(tmp_path / "raw") == sha(GOOD)
    dest = download_file(base + "f.gz", tmp_path / "f.gz", sha(GOOD), content_hash=True, timeout=5)
    assert content_sha256(dest) == sha(GOOD)
    with pytest.raises(ChecksumMismatchError):  # raw-bytes hashing sees the gzip bytes
        download_file(base + "f.gz", tmp_path / "g.gz", sha(GOOD), timeout=5)


def test_mirrors_tried_in_order(server, tmp_path):
    served, base = server
    (served / "bad").mkdir()
    (served / "good").mkdir()
    (served / "bad" / "f.bin").write_bytes(b"tampered")
    (served / "good" / "f.bin").write_bytes(GOOD)
    mirrors = [base + "absent/", base + "bad/", base + "good/"]
    dest = download_from_mirrors(
        mirrors, "f.bin", tmp_path / "f.bin", sha(GOOD), content_hash=False, timeout=5
    )
    assert dest.read_bytes() == GOOD
    with pytest.raises(DownloadError) as info:
        download_from_mirrors(mirrors[:2], "f.bin", tmp_path / "g.bin", sha(GOOD), timeout=5)
    assert (base + "absent/") in str(info.value) and "mismatch" in str(info.value)
    assert not (tmp_path / "g.bin").exists()


def serve_split(folder: Path, n: int) -> dict[str, str]:
    """Write the four MNIST-named .gz files; return their content hashes by base name."""
    rng = np.random.default_rng(n)
    hashes = {}
    for prefix in ("train", "t10k"):
        for base, array in (
            (f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)),
            (f"{prefix}-labels-idx1-ubyte", rng.integers(0, 10, n, dtype=np.uint8)),
        ):
            write_idx(folder / (base + ".gz"), array)
            hashes[base] = content_sha256(folder / (base + ".gz"))
    return hashes


def test_mnist_download_end_to_end(server, tmp_path, monkeypatch):
    served, base = server
    serve_split(served, n=9)
    # MNIST's table holds the hashes of the .gz files themselves.
    hashes = {p.name[:-3]: hashlib.sha256(p.read_bytes()).hexdigest() for p in served.glob("*.gz")}
    monkeypatch.setattr(download, "MNIST_MIRRORS", (base + "nothing-here/", base))
    monkeypatch.setattr(download, "MNIST_SHA256", hashes)
    ds = MNIST(root=tmp_path / "data", train=False, download=True)
    assert len(ds) == 9 and ds[0][0].shape == (784,)
    assert sorted(os.listdir(tmp_path / "data")) == [
        "t10k-images-idx3-ubyte.gz",
        "t10k-labels-idx1-ubyte.gz",
    ]
    monkeypatch.setattr(download, "MNIST_SHA256", {**hashes, "train-labels-idx1-ubyte": "0" * 64})
    with pytest.raises(DownloadError, match="mismatch"):
        MNIST(root=tmp_path / "data", train=True, download=True)
    # the images were verified and kept; the bad labels were not
    assert sorted(os.listdir(tmp_path / "data")) == [
        "t10k-images-idx3-ubyte.gz",
        "t10k-labels-idx1-ubyte.gz",
        "train-images-idx3-ubyte.gz",
    ]


def test_fashion_mnist_download_into_cache(server, tmp_path, monkeypatch):
    served, base = server
    hashes = serve_split(served, n=5)
    monkeypatch.setattr(mnist_dataset, "SYSTEM_FASHION_MNIST_DIR", str(tmp_path / "none"))
    monkeypatch.setenv("NEEDLE_DATA", str(tmp_path / "cache"))
    monkeypatch.setattr(download, "FASHION_MNIST_MIRRORS", (base,))
    monkeypatch.setattr(download, "FASHION_MNIST_SHA256", hashes)
    assert len(FashionMNIST(download=True)) == 5
    assert (tmp_path / "cache" / "fashion-mnist" / "train-images-idx3-ubyte.gz").is_file()


SYSTEM_DIR = Path(mnist_dataset.SYSTEM_FASHION_MNIST_DIR)


@pytest.mark.skipif(
    not SYSTEM_DIR.is_dir(), reason=f"{SYSTEM_DIR} absent (apt-get install dataset-fashion-mnist)"
)
def test_fashion_mnist_hash_table_matches_official_files():
    for base, expected in download.FASHION_MNIST_SHA256.items():
        assert content_sha256(SYSTEM_DIR / (base + ".gz")) == expected, base
