"""Save and load checkpoints: nested dicts/lists/tuples of numbers, strings, arrays and tensors.

The file is a NumPy ``.npz`` archive (``np.savez``, uncompressed). Its members are the
array leaves (``leaf_0``, ``leaf_1``, … in depth-first order) plus ``__manifest__``,
a uint8 array holding UTF-8 JSON that describes the structure::

    {"format": "needle-checkpoint", "version": 1,
     "root": {"type": "dict", "items": [["model", {...}], ["epoch", {"type": "int", "value": 3}]]}}

Node types: ``dict`` (str keys, order kept), ``list``, ``tuple``, ``str``, ``int``,
``float`` (JSON keeps Python's shortest round-tripping repr; NaN/Infinity allowed),
``bool``, ``none``, ``ndarray``/``tensor``/``npscalar`` (with the leaf's ``key``,
``dtype`` and ``shape``). Loading never unpickles, so a checkpoint can never run code;
object arrays are refused at save time and at load time. Loading checks every declared
size (zip directory, ``.npy`` header, manifest, a limit) before it inflates anything.

Writes are atomic: the archive goes to a temporary file in the target directory, is
flushed and fsync'ed, then renamed over the target with ``os.replace``. A failure
leaves the previous file untouched and no temporary file behind.

>>> import os, tempfile, numpy as np
>>> path = os.path.join(tempfile.mkdtemp(), "ckpt.npz")
>>> save({"w": np.arange(3.0), "epoch": 2}, path)
>>> load(path)["epoch"]
2
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import zipfile
from collections.abc import Callable
from typing import Any, BinaryIO

import numpy as np

from .autograd import Tensor

FORMAT = "needle-checkpoint"
VERSION = 1
MANIFEST = "__manifest__"


class CheckpointError(ValueError):
    """A checkpoint file is truncated, corrupted, not a checkpoint, or inconsistent."""


# ----- save -----------------------------------------------------------------------------------


def save(obj: Any, path: str | os.PathLike[str]) -> None:
    """Write ``obj`` to ``path`` atomically (the name is used as given; no suffix is added).

    ``obj``: nested dicts (str keys), lists and tuples of str, int, float, bool, None,
    NumPy arrays and scalars, and :class:`~needle.Tensor` (saved as its data).
    Raises TypeError naming the place in ``obj`` of an unsupported value.
    """
    leaves: dict[str, np.ndarray] = {}
    manifest = {"format": FORMAT, "version": VERSION, "root": _encode(obj, "obj", leaves)}
    text = json.dumps(manifest, allow_nan=True, separators=(",", ":"))
    leaves[MANIFEST] = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
    atomic_write(path, lambda file: np.savez(file, **leaves))


def _encode(value: Any, where: str, leaves: dict) -> dict:
    """The manifest node of ``value``; array leaves are added to ``leaves``."""
    if value is None:
        return {"type": "none"}
    if isinstance(value, np.generic):
        # Before int/float: np.float64 is a float subclass, but should come back as itself.
        return _leaf("npscalar", np.asarray(value), where, leaves)
    if isinstance(value, bool):
        return {"type": "bool", "value": value}
    if isinstance(value, int):
        return {"type": "int", "value": int(value)}
    if isinstance(value, float):
        return {"type": "float", "value": float(value)}
    if isinstance(value, str):
        return {"type": "str", "value": value}
    if isinstance(value, Tensor):
        return _leaf("tensor", value.numpy(), where, leaves)
    if isinstance(value, np.ndarray):
        return _leaf("ndarray", value, where, leaves)
    if isinstance(value, dict):
        items = [_encode_item(k, v, where, leaves) for k, v in value.items()]
        return {"type": "dict", "items": items}
    if isinstance(value, (list, tuple)):
        items = [_encode(v, f"{where}[{i}]", leaves) for i, v in enumerate(value)]
        return {"type": "tuple" if isinstance(value, tuple) else "list", "items": items}
    hint = "; save its state_dict() instead" if hasattr(value, "state_dict") else ""
    raise TypeError(
        f"needle.save: {where} has unsupported type {type(value).__name__}{hint} "
        f"(supported: dict, list, tuple, str, int, float, bool, None, "
        f"numpy arrays, needle.Tensor)"
    )


def _encode_item(key: Any, value: Any, where: str, leaves: dict) -> list:
    if not isinstance(key, str):
        raise TypeError(
            f"needle.save: {where} has a key {key!r} of type {type(key).__name__}; "
            f"dict keys must be str (convert them, e.g. str(key))"
        )
    return [key, _encode(value, f"{where}[{key!r}]", leaves)]


def _leaf(kind: str, array: np.ndarray, where: str, leaves: dict) -> dict:
    if array.dtype.hasobject:
        raise TypeError(
            f"needle.save: {where} is an object array, which cannot be saved "
            f"without pickle; convert it to a numeric or string dtype"
        )
    key = f"leaf_{len(leaves)}"
    leaves[key] = array
    return {"type": kind, "key": key, "dtype": array.dtype.str, "shape": list(array.shape)}


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> None:
    """Call ``write(file)`` on a temporary file beside ``path``, then rename it to ``path``.

    The data is flushed and fsync'ed before the rename, so readers (and a machine that
    crashes) see either the previous file or the complete new one, never a partial one.
    On any error, or an interrupt, the temporary file is removed and ``path`` is untouched.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(tmp, _default_file_mode())  # mkstemp makes it 0600; give it the usual mode
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    _fsync_directory(directory)


def _default_file_mode() -> int:
    """0o666 less the process umask: the mode ``open()`` would have given the file."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _fsync_directory(directory: str) -> None:
    """Make the rename itself durable (not possible on every platform, e.g. Windows)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# ----- load -----------------------------------------------------------------------------------

#: The largest total size of the arrays :func:`load` accepts by default (4 GiB).
MAX_CHECKPOINT_BYTES = 4 * 2**30
#: needle writes members uncompressed; a compressed member (a re-zipped checkpoint) may
#: inflate to at most this multiple of its compressed size. Trained weights compress
#: barely at all, so more than this is a decompression bomb, not a checkpoint.
MAX_EXPANSION = 20
#: The deepest nesting of containers a checkpoint may have (state dicts nest a few levels).
MAX_DEPTH = 100
#: Bytes inflated at a time while reading a member.
_READ_CHUNK_BYTES = 1 << 20


def load(path: str | os.PathLike[str], *, max_bytes: int = MAX_CHECKPOINT_BYTES) -> Any:
    """Read a checkpoint written by :func:`save`.

    Arrays come back as NumPy arrays, tensors as :class:`~needle.Tensor` with
    ``requires_grad=False`` and their saved dtype.

    Sizes are checked before any data is inflated: every member's size in the zip
    directory must match its ``.npy`` header and the manifest's dtype and shape, a
    compressed member may not expand more than :data:`MAX_EXPANSION`-fold, and the
    arrays together may not exceed ``max_bytes``. Each member is then read in chunks,
    with its CRC checked, straight into its array.

    Args:
        path: the checkpoint file.
        max_bytes: the largest total size of the arrays (default
            :data:`MAX_CHECKPOINT_BYTES`); raise it to load a larger genuine checkpoint.

    Raises:
        CheckpointError: naming the file and the problem, if it is truncated, corrupted,
            not a checkpoint, inconsistent, too large or nested too deeply.
        FileNotFoundError: the file does not exist.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"needle.load: no such file: {path!r}")
    _check_zip_magic(path)
    try:
        with zipfile.ZipFile(path) as archive:
            members = _members(path, archive, max_bytes)
            return _decode_archive(path, archive, members)
    except CheckpointError:
        raise
    except Exception as error:
        # zipfile/NumPy raise many types for damaged files (BadZipFile, EOFError, OSError,
        # ValueError, NotImplementedError, ...): report them all the same way.
        raise CheckpointError(
            f"needle.load: {path!r} is not a readable checkpoint (truncated or corrupted?): "
            f"{type(error).__name__}: {error}"
        ) from error


def _check_zip_magic(path: str) -> None:
    """Raise CheckpointError unless ``path`` starts like a zip archive."""
    with open(path, "rb") as file:
        if file.read(4) != b"PK\x03\x04":
            raise CheckpointError(
                f"needle.load: {path!r} is not a needle checkpoint (not a zip/npz archive)"
            )


def _members(path: str, archive: zipfile.ZipFile, max_bytes: int) -> dict[str, zipfile.ZipInfo]:
    """The ``.npy`` members by name without the suffix, their sizes checked (nothing read)."""
    members: dict[str, zipfile.ZipInfo] = {}
    for info in archive.infolist():
        name = info.filename
        if not name.endswith(".npy") or name[:-4] in members:
            raise CheckpointError(
                f"needle.load: {path!r} has an unexpected or repeated member {name!r}"
            )
        _check_expansion(path, info)
        members[name[:-4]] = info
    total = sum(info.file_size for info in members.values())
    if total > max_bytes:
        raise CheckpointError(
            f"needle.load: {path!r} declares {total} bytes of arrays, over "
            f"the limit of {max_bytes}; if the file is genuine, pass a "
            f"larger max_bytes to needle.load"
        )
    return members


def _check_expansion(path: str, info: zipfile.ZipInfo) -> None:
    """Refuse a member whose declared size its compressed size cannot honestly give."""
    if info.compress_type == zipfile.ZIP_STORED:
        if info.file_size != info.compress_size:
            _bad(
                path,
                f"member {info.filename!r} is stored with {info.compress_size} bytes "
                f"but declares {info.file_size}",
            )
    elif info.file_size > MAX_EXPANSION * max(info.compress_size, 1):
        raise CheckpointError(
            f"needle.load: {path!r}: member {info.filename!r} would inflate {info.compress_size} "
            f"bytes to {info.file_size}, more than {MAX_EXPANSION}x; refused as a "
            f"decompression bomb (needle writes checkpoints uncompressed)"
        )


def _read_member(
    path: str,
    archive: zipfile.ZipFile,
    info: zipfile.ZipInfo,
    expect: Callable[[np.dtype, tuple[int, ...]], None],
) -> np.ndarray:
    """The array of one ``.npy`` member, read in chunks after its header is checked.

    ``expect(dtype, shape)`` raises if the header is not what the manifest describes;
    the header must also account for exactly the member's declared size, so no more than
    that is ever inflated.
    """
    with archive.open(info) as stream:
        version = np.lib.format.read_magic(stream)
        read_header = (
            np.lib.format.read_array_header_1_0
            if version == (1, 0)
            else np.lib.format.read_array_header_2_0
        )
        shape, fortran_order, dtype = read_header(stream)
        if dtype.hasobject:
            _bad(path, f"member {info.filename!r} holds objects, which need pickle")
        expect(dtype, shape)
        size = math.prod(shape) * dtype.itemsize
        header = stream.tell()
        if header + size != info.file_size:
            _bad(
                path,
                f"member {info.filename!r} declares {info.file_size} bytes but its "
                f"header says {header} + {size} (dtype {dtype.str}, shape {list(shape)})",
            )
        buffer = np.empty(size, dtype=np.uint8)
        filled = 0
        while filled < size:
            chunk = stream.read(min(_READ_CHUNK_BYTES, size - filled))
            if not chunk:
                _bad(path, f"member {info.filename!r} ends after {filled} of {size} bytes")
            buffer[filled : filled + len(chunk)] = np.frombuffer(chunk, dtype=np.uint8)
            filled += len(chunk)
    array = buffer.view(dtype)
    if fortran_order:
        return array.reshape(shape[::-1]).transpose()
    return array.reshape(shape)


def _decode_archive(
    path: str, archive: zipfile.ZipFile, members: dict[str, zipfile.ZipInfo]
) -> Any:
    """The object the archive holds: the manifest is read first, then every leaf it names."""
    manifest = _read_manifest(path, archive, members)
    used: set[str] = set()

    def read_leaf(node: dict) -> np.ndarray:
        return _leaf_array(node, archive, members, used, path)

    root = _decode(manifest["root"], read_leaf, path, 0)
    extra = set(members) - used - {MANIFEST}
    if extra:
        raise CheckpointError(
            f"needle.load: {path!r}: arrays {sorted(extra)} are not described "
            f"by the manifest; the file was modified"
        )
    return root


def _read_manifest(
    path: str, archive: zipfile.ZipFile, members: dict[str, zipfile.ZipInfo]
) -> dict:
    if MANIFEST not in members:
        raise CheckpointError(
            f"needle.load: {path!r} has no {MANIFEST!r} entry; it is an npz "
            f"archive but not a needle checkpoint (use numpy.load for it)"
        )

    def expect_bytes(dtype: np.dtype, shape: tuple[int, ...]) -> None:
        if dtype != np.uint8 or len(shape) != 1:
            raise CheckpointError(
                f"needle.load: {path!r} has an unreadable manifest: manifest "
                f"array has dtype {dtype} and shape {shape}"
            )

    raw = _read_member(path, archive, members[MANIFEST], expect_bytes)
    try:
        manifest = json.loads(raw.tobytes().decode("utf-8"))
    except RecursionError:
        _bad(path, f"the manifest nests deeper than {MAX_DEPTH} levels")
    except (ValueError, UnicodeDecodeError) as error:
        raise CheckpointError(
            f"needle.load: {path!r} has an unreadable manifest: {error}"
        ) from error
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT or "root" not in manifest:
        raise CheckpointError(
            f"needle.load: {path!r} has a manifest that is not a needle checkpoint's"
        )
    if manifest.get("version") != VERSION:
        raise CheckpointError(
            f"needle.load: {path!r} has format version "
            f"{manifest.get('version')!r}; this needle reads version {VERSION}"
        )
    return manifest


_SCALARS = {"bool": bool, "int": int, "float": float, "str": str}
#: NumPy dtype kinds a tensor leaf may have: bool, signed and unsigned integers, floats.
_TENSOR_KINDS = "biuf"


def _decode(node: Any, read_leaf: Callable[[dict], np.ndarray], path: str, depth: int) -> Any:
    """The value described by manifest ``node`` at nesting ``depth``; raises
    CheckpointError if inconsistent or nested deeper than :data:`MAX_DEPTH`."""
    if depth > MAX_DEPTH:
        _bad(path, f"the manifest nests deeper than {MAX_DEPTH} levels")
    kind = node.get("type") if isinstance(node, dict) else None
    if kind == "none":
        return None
    if kind in _SCALARS:
        value = node.get("value")
        if type(value) is not _SCALARS[kind] and not (kind == "float" and type(value) is int):
            _bad(path, f"a {kind} node holds {value!r}")
        return float(value) if kind == "float" else value
    if kind in ("ndarray", "tensor", "npscalar"):
        return _leaf_value(kind, read_leaf(node), path)
    if kind in ("list", "tuple"):
        items = [_decode(item, read_leaf, path, depth + 1) for item in _items(node, path)]
        return tuple(items) if kind == "tuple" else items
    if kind == "dict":
        return {
            _dict_key(item, path): _decode(item[1], read_leaf, path, depth + 1)
            for item in _items(node, path)
        }
    _bad(path, f"unknown node {str(node)[:80]}")


def _leaf_value(kind: str, array: np.ndarray, path: str) -> Any:
    """A leaf array as the value it was saved as: an array, a Tensor or a NumPy scalar."""
    if kind == "npscalar":
        if array.ndim != 0:
            _bad(path, f"a npscalar node has shape {list(array.shape)}")
        return array[()]
    if kind == "tensor":
        if array.dtype.kind not in _TENSOR_KINDS:
            _bad(
                path,
                f"a tensor has dtype {array.dtype.str}; tensors hold booleans, integers or floats",
            )
        try:
            return Tensor(array, dtype=array.dtype, requires_grad=False)
        except (TypeError, ValueError) as error:  # a dtype this backend does not have
            _bad(path, f"a tensor of dtype {array.dtype.str} cannot be built: {error}")
    return array


def _items(node: dict, path: str) -> list:
    items = node.get("items")
    if not isinstance(items, list):
        _bad(path, f"a {node.get('type')} node has no item list")
    return items


def _dict_key(item: Any, path: str) -> str:
    if not (isinstance(item, list) and len(item) == 2 and isinstance(item[0], str)):
        _bad(path, f"a dict entry is malformed: {str(item)[:80]}")
    return item[0]


def _leaf_array(
    node: dict, archive: zipfile.ZipFile, members: dict[str, zipfile.ZipInfo], used: set, path: str
) -> np.ndarray:
    """The member a leaf node names, read once its header matches the node."""
    key = node.get("key")
    if key not in members or key == MANIFEST or key in used:
        _bad(path, f"array {key!r} is missing or referenced twice")
    used.add(key)

    def expect_node(dtype: np.dtype, shape: tuple[int, ...]) -> None:
        if dtype.str != node.get("dtype") or list(shape) != node.get("shape"):
            _bad(
                path,
                f"array {key!r} has dtype {dtype.str} and shape {list(shape)}, "
                f"the manifest says {node.get('dtype')} and {node.get('shape')}",
            )

    return _read_member(path, archive, members[key], expect_node)


def _bad(path: str, problem: str) -> None:
    raise CheckpointError(
        f"needle.load: {path!r} is inconsistent ({problem}); the file was modified or damaged"
    )


__all__ = ["save", "load", "CheckpointError", "MAX_CHECKPOINT_BYTES"]
