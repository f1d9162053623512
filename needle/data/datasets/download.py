"""Verified, atomic downloads of dataset files (standard library only).

A file is streamed into a temporary file in the destination folder, its SHA-256 is
checked, and only then is it moved into place with ``os.replace`` (atomic on one file
system). A reader therefore never sees a partial or unverified file; on any failure
the temporary file is removed.

Dataset hashes are *content* hashes: the SHA-256 of the uncompressed IDX bytes (see
:func:`content_sha256`). The same data gzip-compressed by different tools (another
timestamp, a stored file name, another level) gives different ``.gz`` bytes, e.g. the
Debian package's Fashion-MNIST files differ from the official mirror's only in their
gzip headers; the content hash accepts both.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import os
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Union

__all__ = [
    "DownloadError",
    "ChecksumMismatchError",
    "MNIST_MIRRORS",
    "FASHION_MNIST_MIRRORS",
    "MNIST_SHA256",
    "FASHION_MNIST_SHA256",
    "content_sha256",
    "download_file",
    "download_from_mirrors",
]

PathLike = Union[str, "os.PathLike[str]"]

#: Base URLs for MNIST's four ``.gz`` files, tried in order.
MNIST_MIRRORS: tuple[str, ...] = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)

#: Base URLs for Fashion-MNIST's four ``.gz`` files, tried in order.
FASHION_MNIST_MIRRORS: tuple[str, ...] = (
    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
)

#: SHA-256 of MNIST's ``.gz`` files as served (the original files, byte for byte, on
#: both mirrors), keyed by file name; the values TensorFlow Datasets publishes for them.
MNIST_SHA256: dict[str, str | None] = {
    "train-images-idx3-ubyte": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
    "train-labels-idx1-ubyte": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
    "t10k-images-idx3-ubyte": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    "t10k-labels-idx1-ubyte": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
}

#: Content SHA-256 (uncompressed IDX bytes) of Fashion-MNIST's files, keyed by file
#: name; computed from the official files shipped by Debian's dataset-fashion-mnist.
FASHION_MNIST_SHA256: dict[str, str | None] = {
    "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}

_CHUNK = 1 << 20


class DownloadError(OSError):
    """A file could not be fetched (network, HTTP status, short read, no mirror left)."""


class ChecksumMismatchError(ValueError):
    """A downloaded file's SHA-256 differs from the expected one; nothing was kept."""


def content_sha256(path: PathLike) -> str:
    """Return the hex SHA-256 of a file's content, decompressed first if it is gzip.

    Gzip is detected from the magic bytes ``1f 8b``; a raw file is hashed as is, so
    ``x`` and ``x.gz`` holding the same data hash the same.

    Raises:
        ValueError: the file starts like gzip but the stream is corrupt.

    Example:
        >>> import tempfile, os
        >>> p = os.path.join(tempfile.mkdtemp(), "a.gz")
        >>> with gzip.open(p, "wb") as f: _ = f.write(b"abc")
        >>> content_sha256(p) == hashlib.sha256(b"abc").hexdigest()
        True
    """
    digest = hashlib.sha256()
    with open(path, "rb") as raw:
        is_gzip = raw.read(2) == b"\x1f\x8b"
    try:
        with gzip.open(path, "rb") if is_gzip else open(path, "rb") as f:
            for chunk in iter(lambda: f.read(_CHUNK), b""):
                digest.update(chunk)
    except (EOFError, zlib.error, gzip.BadGzipFile) as e:
        raise ValueError(f"content_sha256: {os.fspath(path)}: corrupt gzip stream ({e})") from None
    return digest.hexdigest()


def _check_url(url: str) -> None:
    """Raise ValueError unless ``url`` is http(s): urllib would also open file:// URLs."""
    scheme = urllib.parse.urlsplit(url).scheme
    if scheme not in ("http", "https"):
        raise ValueError(f"download_file: {url!r} is not an http(s) URL")


def _fetch(url: str, f, timeout: float) -> None:
    """Stream ``url`` into the open binary file ``f``; raise DownloadError on failure."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            expected = response.headers.get("Content-Length")
            received = 0
            for chunk in iter(lambda: response.read(_CHUNK), b""):
                f.write(chunk)
                received += len(chunk)
    except (urllib.error.URLError, http.client.HTTPException, OSError) as e:
        raise DownloadError(f"download_file: could not fetch {url}: {e}") from e
    if expected is not None and int(expected) != received:
        raise DownloadError(
            f"download_file: {url}: got {received} bytes but the server announced {expected}"
        )


def download_file(
    url: str,
    dest_path: PathLike,
    sha256: str | None,
    *,
    verify: bool = True,
    content_hash: bool = False,
    timeout: float = 60.0,
    md5: str | None = None,
) -> Path:
    """Download ``url`` to ``dest_path``, verified and atomically.

    Args:
        url: an http or https URL.
        dest_path: final location; its folder is created if needed. An existing file
            there is replaced only after the new one is verified.
        sha256: expected hex SHA-256. ``None`` is refused unless ``verify=False``.
        verify: check ``sha256``; pass ``verify=False`` to accept an unknown file.
        content_hash: hash the decompressed content of a gzip file (see
            :func:`content_sha256`) instead of its raw bytes.
        timeout: seconds to wait for the server at each network operation.
        md5: expected hex MD5 of the raw bytes, checked instead of ``sha256`` when given
            (for datasets whose authors publish only an MD5, such as CIFAR-10).

    Returns:
        ``dest_path`` as a ``Path``.

    Raises:
        ValueError: a non-http(s) URL, or no hash while ``verify`` is True.
        DownloadError: the transfer failed; nothing is left at ``dest_path``.
        ChecksumMismatchError: the hash differs (message names the URL, the file and
            both hashes); nothing is left at ``dest_path``.

    Example:
        >>> try:
        ...     download_file("https://example.org/x.gz", "x.gz", sha256=None)
        ... except ValueError as e:
        ...     print(str(e).split(";")[0])
        download_file: no known SHA-256 for https://example.org/x.gz
    """
    _check_url(url)
    if verify and not (sha256 or md5):
        raise ValueError(
            f"download_file: no known SHA-256 for {url}; refusing an unverified download. "
            "Pass the expected hash, or verify=False to accept the file unchecked"
        )
    dest = Path(dest_path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            _fetch(url, f, timeout)
        if verify and md5:
            _check_digest(url, dest, "MD5", md5.lower(), _file_digest(Path(tmp_name), "md5"))
        elif verify:
            _verify(url, dest, Path(tmp_name), sha256.lower(), content_hash)
        os.replace(tmp_name, dest)
    finally:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
    return dest


def _verify(url: str, dest: Path, tmp: Path, expected: str, content_hash: bool) -> None:
    """Raise ChecksumMismatchError if ``tmp``'s SHA-256 is not ``expected``."""
    try:
        actual = content_sha256(tmp) if content_hash else _file_digest(tmp, "sha256")
    except ValueError as e:  # corrupt gzip: the content cannot even be hashed
        raise ChecksumMismatchError(
            f"download_file: {url} (for {dest}) is not a valid gzip file: {e}"
        ) from None
    _check_digest(url, dest, "SHA-256", expected, actual)


def _check_digest(url: str, dest: Path, name: str, expected: str, actual: str) -> None:
    """Raise ChecksumMismatchError naming the URL, the file and both digests if they differ."""
    if actual != expected:
        raise ChecksumMismatchError(
            f"download_file: {name} mismatch for {url} (for {dest}): expected {expected}, "
            f"got {actual}; the file was discarded"
        )


def _file_digest(path: Path, algorithm: str) -> str:
    """Return the hex digest (``hashlib`` name ``algorithm``) of a file's raw bytes."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def download_from_mirrors(
    mirrors: Sequence[str],
    filename: str,
    dest_path: PathLike,
    sha256: str | None,
    *,
    verify: bool = True,
    content_hash: bool = True,
    timeout: float = 60.0,
) -> Path:
    """Download ``filename`` from the first mirror that serves a verified copy.

    Args:
        mirrors: base URLs ending in ``/``, tried in order.
        filename: name appended to each base URL.
        dest_path, sha256, verify, content_hash, timeout: as in :func:`download_file`
            (``content_hash`` defaults to True here: dataset tables hold content hashes).

    Raises:
        DownloadError: every mirror failed; the message lists each failure.

    Example:
        >>> try:
        ...     download_from_mirrors([], "x.gz", "x.gz", None, verify=False)
        ... except DownloadError as e:
        ...     print(str(e).splitlines()[0])
        download_from_mirrors: no mirror gave a verified x.gz; tried:
    """
    failures = []
    for base in mirrors:
        try:
            return download_file(
                base + filename,
                dest_path,
                sha256,
                verify=verify,
                content_hash=content_hash,
                timeout=timeout,
            )
        except (DownloadError, ChecksumMismatchError) as e:
            failures.append(f"  {base}: {e}")
    raise DownloadError(
        f"download_from_mirrors: no mirror gave a verified {filename}; tried:\n"
        + ("\n".join(failures) if failures else "  (no mirrors given)")
    )
