"""Save and load checkpoints: nested dicts/lists/tuples of numbers, strings, arrays and tensors.

The file is a NumPy ``.npz`` archive (``np.savez``, uncompressed). Its members are the
array leaves (``leaf_0``, ``leaf_1``, … in depth-first order) plus ``__manifest__``,
a uint8 array holding UTF-8 JSON that describes the structure::

    {"format": "needle-checkpoint", "version": 1,
     "root": {"type": "dict", "items": [["model", {...}], ["epoch", {"type": "int", "value": 3}]]}}

Node types: ``dict`` (str keys, order kept), ``list``, ``tuple``, ``str``, ``int``,
``float`` (JSON keeps Python's shortest round-tripping repr; NaN/Infinity allowed),
``bool``, ``none``, ``ndarray``/``tensor``/``npscalar`` (with the leaf's ``key``,
``dtype`` and ``shape``). Loading uses ``allow_pickle=False``, so a checkpoint can never
run code; object arrays are refused at save time.

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

import io
import json
import os
import tempfile
import zipfile
from typing import Any, BinaryIO, Callable

import numpy as np

from .autograd import Tensor

FORMAT = "needle-checkpoint"
VERSION = 1
MANIFEST = "__manifest__"


class CheckpointError(ValueError):
    """A checkpoint file is truncated, corrupted, not a checkpoint, or inconsistent."""


# ----- save -----------------------------------------------------------------------------------

def save(obj: Any, path: "str | os.PathLike[str]") -> None:
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
    hint = ("; save its state_dict() instead" if hasattr(value, "state_dict") else "")
    raise TypeError(f"needle.save: {where} has unsupported type {type(value).__name__}{hint} "
                    f"(supported: dict, list, tuple, str, int, float, bool, None, "
                    f"numpy arrays, needle.Tensor)")


def _encode_item(key: Any, value: Any, where: str, leaves: dict) -> list:
    if not isinstance(key, str):
        raise TypeError(f"needle.save: {where} has a key {key!r} of type {type(key).__name__}; "
                        f"dict keys must be str (convert them, e.g. str(key))")
    return [key, _encode(value, f"{where}[{key!r}]", leaves)]


def _leaf(kind: str, array: np.ndarray, where: str, leaves: dict) -> dict:
    if array.dtype.hasobject:
        raise TypeError(f"needle.save: {where} is an object array, which cannot be saved "
                        f"without pickle; convert it to a numeric or string dtype")
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

def load(path: "str | os.PathLike[str]") -> Any:
    """Read a checkpoint written by :func:`save`.

    Arrays come back as NumPy arrays, tensors as :class:`~needle.Tensor` with
    ``requires_grad=False`` and their saved dtype. Raises :class:`CheckpointError`
    naming the file and the problem if it is truncated, corrupted, not a checkpoint
    or inconsistent; FileNotFoundError if it does not exist.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"needle.load: no such file: {path!r}")
    try:
        arrays = _read_archive(path)
    except CheckpointError:
        raise
    except Exception as error:
        # zipfile/NumPy raise many types for damaged files (BadZipFile, EOFError, OSError,
        # ValueError, NotImplementedError, ...): report them all the same way.
        raise CheckpointError(
            f"needle.load: {path!r} is not a readable checkpoint (truncated or corrupted?): "
            f"{type(error).__name__}: {error}"
        ) from error
    manifest = _read_manifest(path, arrays)
    used: set[str] = set()
    root = _decode(manifest["root"], arrays, used, path)
    extra = set(arrays) - used - {MANIFEST}
    if extra:
        raise CheckpointError(f"needle.load: {path!r}: arrays {sorted(extra)} are not described "
                              f"by the manifest; the file was modified")
    return root


def _read_archive(path: str) -> dict[str, np.ndarray]:
    """Every ``.npy`` member of the archive, by name without the suffix.

    Each member is read whole before it is parsed, so zipfile verifies its CRC-32, and
    it must hold exactly one array with no bytes left over.
    """
    with open(path, "rb") as file:
        if file.read(4) != b"PK\x03\x04":
            raise CheckpointError(f"needle.load: {path!r} is not a needle checkpoint "
                                  f"(not a zip/npz archive)")
    arrays: dict[str, np.ndarray] = {}
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            name = info.filename
            if not name.endswith(".npy") or name[:-4] in arrays:
                raise CheckpointError(f"needle.load: {path!r} has an unexpected or repeated "
                                      f"member {name!r}")
            data = archive.read(info)
            buffer = io.BytesIO(data)
            arrays[name[:-4]] = np.lib.format.read_array(buffer, allow_pickle=False)
            if buffer.tell() != len(data):
                raise CheckpointError(f"needle.load: {path!r}: member {name!r} has "
                                      f"{len(data) - buffer.tell()} bytes after its array")
    return arrays


def _read_manifest(path: str, arrays: dict) -> dict:
    if MANIFEST not in arrays:
        raise CheckpointError(f"needle.load: {path!r} has no {MANIFEST!r} entry; it is an npz "
                              f"archive but not a needle checkpoint (use numpy.load for it)")
    raw = arrays[MANIFEST]
    try:
        if raw.dtype != np.uint8 or raw.ndim != 1:
            raise ValueError(f"manifest array has dtype {raw.dtype} and shape {raw.shape}")
        manifest = json.loads(raw.tobytes().decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as error:
        raise CheckpointError(
            f"needle.load: {path!r} has an unreadable manifest: {error}"
        ) from error
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT or "root" not in manifest:
        raise CheckpointError(f"needle.load: {path!r} has a manifest that is not a needle "
                              f"checkpoint's")
    if manifest.get("version") != VERSION:
        raise CheckpointError(f"needle.load: {path!r} has format version "
                              f"{manifest.get('version')!r}; this needle reads version {VERSION}")
    return manifest


_SCALARS = {"bool": bool, "int": int, "float": float, "str": str}


def _decode(node: Any, arrays: dict, used: set, path: str) -> Any:
    """The value described by manifest ``node``; raises CheckpointError if inconsistent."""
    kind = node.get("type") if isinstance(node, dict) else None
    if kind == "none":
        return None
    if kind in _SCALARS:
        value = node.get("value")
        if type(value) is not _SCALARS[kind] and not (kind == "float" and type(value) is int):
            _bad(path, f"a {kind} node holds {value!r}")
        return float(value) if kind == "float" else value
    if kind in ("ndarray", "tensor", "npscalar"):
        array = _leaf_array(node, arrays, used, path)
        if kind == "tensor":
            return Tensor(array, dtype=array.dtype, requires_grad=False)
        return array[()] if kind == "npscalar" else array
    if kind in ("list", "tuple"):
        items = [_decode(item, arrays, used, path) for item in _items(node, path)]
        return tuple(items) if kind == "tuple" else items
    if kind == "dict":
        return {_dict_key(item, path): _decode(item[1], arrays, used, path)
                for item in _items(node, path)}
    _bad(path, f"unknown node {str(node)[:80]}")


def _items(node: dict, path: str) -> list:
    items = node.get("items")
    if not isinstance(items, list):
        _bad(path, f"a {node.get('type')} node has no item list")
    return items


def _dict_key(item: Any, path: str) -> str:
    if not (isinstance(item, list) and len(item) == 2 and isinstance(item[0], str)):
        _bad(path, f"a dict entry is malformed: {str(item)[:80]}")
    return item[0]


def _leaf_array(node: dict, arrays: dict, used: set, path: str) -> np.ndarray:
    key = node.get("key")
    if key not in arrays or key == MANIFEST or key in used:
        _bad(path, f"array {key!r} is missing or referenced twice")
    used.add(key)
    array = arrays[key]
    if array.dtype.str != node.get("dtype") or list(array.shape) != node.get("shape"):
        _bad(path, f"array {key!r} has dtype {array.dtype.str} and shape {list(array.shape)}, "
                   f"the manifest says {node.get('dtype')} and {node.get('shape')}")
    return array


def _bad(path: str, problem: str) -> None:
    raise CheckpointError(f"needle.load: {path!r} is inconsistent ({problem}); the file was "
                          f"modified or damaged")


__all__ = ["save", "load", "CheckpointError"]
