"""needle.save / needle.load: round trips, atomic writes, and damaged files."""

import os
import zipfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import needle as ndl
from needle import nn, optim
from needle.serialization import CheckpointError


def _same(a, b):
    """Equal values of the same types, arrays bit for bit (NaN == NaN)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, ndl.Tensor):
        return a.requires_grad == b.requires_grad and _same(a.numpy(), b.numpy())
    if isinstance(a, (np.ndarray, np.generic)):
        return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()
    if isinstance(a, float):
        return repr(a) == repr(b)
    return a == b


def _sample():
    return {
        "weights": np.arange(12, dtype=np.float32).reshape(3, 4),
        "tensor": ndl.Tensor(np.linspace(0, 1, 5), dtype="float64", requires_grad=False),
        "config": {"name": "mlp", "layers": [784, 100, 10], "ok": True, "none": None},
        "pair": (1, 2.5),
    }


def _roundtrip(obj, path):
    ndl.save(obj, path)
    return ndl.load(path)


# ----- round trips ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        None,
        True,
        False,
        0,
        -7,
        2**80,
        1.5,
        -0.0,
        float("inf"),
        float("nan"),
        1e-310,
        "",
        "héllo ✓",
        [],
        (),
        {},
        [1, [2, (3, None)]],
        ((),),
        {"b": 1, "a": {"nested": [1.25, "x"]}},
        np.zeros((0, 3), np.float32),
        np.arange(5, dtype=np.int64),
        np.array(3.5),
        np.array([True, False]),
        np.array([1 + 2j]),
        np.array(["ab", "c"]),
        np.arange(6, dtype=np.uint8).reshape(2, 3).T,
        np.float32(1.5),
        np.int16(-3),
        np.float64(0.1),
    ],
)
def test_leaf_and_container_round_trips(value, tmp_path):
    assert _same(_roundtrip(value, tmp_path / "x.ckpt"), value)


def test_tensor_round_trip_keeps_dtype_and_drops_grad(tmp_path):
    tensor = ndl.Tensor(np.arange(6, dtype=np.float32).reshape(2, 3), requires_grad=True)
    loaded = _roundtrip({"t": tensor}, tmp_path / "t.ckpt")["t"]
    assert isinstance(loaded, ndl.Tensor) and not loaded.requires_grad
    assert loaded.dtype == np.float32 and np.array_equal(loaded.numpy(), tensor.numpy())


def test_numpy_random_state_round_trip(tmp_path):
    np.random.seed(123)
    np.random.randn(3)  # make the cached Gaussian non-trivial
    state = np.random.get_state()
    loaded = _roundtrip(state, tmp_path / "rng.ckpt")
    assert _same(loaded, state)
    expected = np.random.rand(4)
    np.random.set_state(loaded)
    assert np.array_equal(np.random.rand(4), expected)


def test_model_and_optimizer_state_round_trip(tmp_path):
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    opt = optim.Adam(model.parameters())
    model(ndl.Tensor(np.random.randn(5, 3).astype(np.float32))).sum().backward()
    opt.step()
    obj = {"model": model.state_dict(), "optimizer": opt.state_dict()}
    loaded = _roundtrip(obj, tmp_path / "ckpt.npz")
    assert _same(loaded["optimizer"], obj["optimizer"])
    assert _same(loaded["model"], dict(obj["model"]))  # an OrderedDict comes back as a dict
    assert list(loaded["model"]) == list(obj["model"])


def test_path_is_used_as_given(tmp_path):
    ndl.save({"a": 1}, str(tmp_path / "model.ndl"))
    assert os.listdir(tmp_path) == ["model.ndl"]
    assert ndl.load(tmp_path / "model.ndl") == {"a": 1}


def test_unsupported_values_are_rejected(tmp_path):
    path = tmp_path / "x.ckpt"
    with pytest.raises(TypeError, match=r"obj\['a'\]\[1\] has unsupported type set"):
        ndl.save({"a": [1, {2}]}, path)
    with pytest.raises(TypeError, match="key 3 of type int"):
        ndl.save({3: 1}, path)
    with pytest.raises(TypeError, match="object array"):
        ndl.save(np.array([1, "a", None], dtype=object), path)
    with pytest.raises(TypeError, match="save its state_dict"):
        ndl.save(nn.Linear(2, 2), path)
    assert not path.exists() and os.listdir(tmp_path) == []


# ----- atomic writes --------------------------------------------------------------------------


def test_failed_save_leaves_old_file_and_no_temp_file(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.npz"
    ndl.save({"version": 1}, path)
    before = path.read_bytes()

    def broken_savez(file, **arrays):
        file.write(b"PK\x03\x04 partial data")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", broken_savez)
    with pytest.raises(OSError, match="disk full"):
        ndl.save({"version": 2}, path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["ckpt.npz"]
    monkeypatch.undo()
    assert ndl.load(path) == {"version": 1}


def test_interrupted_save_leaves_no_temp_file(tmp_path, monkeypatch):
    def interrupted(file, **arrays):
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez", interrupted)
    with pytest.raises(KeyboardInterrupt):
        ndl.save({"a": 1}, tmp_path / "new.npz")
    assert os.listdir(tmp_path) == []


# ----- damaged files --------------------------------------------------------------------------


@pytest.fixture
def checkpoint(tmp_path):
    path = tmp_path / "ckpt.npz"
    ndl.save(_sample(), path)
    return path


def test_truncated_file(checkpoint):
    data = checkpoint.read_bytes()
    for length in (0, 10, len(data) // 2, len(data) - 1):
        checkpoint.write_bytes(data[:length])
        with pytest.raises(CheckpointError, match="ckpt.npz"):
            ndl.load(checkpoint)


def test_corrupted_array_data_fails_the_crc(checkpoint):
    data = bytearray(checkpoint.read_bytes())
    offset = data.index(np.arange(12, dtype=np.float32).tobytes())
    data[offset + 5] ^= 0xFF
    checkpoint.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"ckpt.npz.*(CRC|corrupted)"):
        ndl.load(checkpoint)


def test_non_zip_file(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match=r"notes.txt.*not a zip/npz archive"):
        ndl.load(path)
    np.save(tmp_path / "plain.npy", np.zeros(3))
    with pytest.raises(CheckpointError, match="plain.npy"):
        ndl.load(tmp_path / "plain.npy")


def test_plain_npz_without_manifest(tmp_path):
    path = tmp_path / "plain.npz"
    np.savez(path, a=np.zeros(3))
    with pytest.raises(CheckpointError, match=r"plain.npz.*no '__manifest__'"):
        ndl.load(path)


def _rewrite(path, manifest_text=None, extra=None, drop=None):
    """Rebuild the archive with a replaced manifest, an extra member or a member removed."""
    with np.load(path) as archive:
        arrays = {k: archive[k] for k in archive.files if k != drop}
    if manifest_text is not None:
        arrays["__manifest__"] = np.frombuffer(manifest_text.encode(), dtype=np.uint8)
    arrays.update(extra or {})
    np.savez(path, **arrays)


def _manifest(path):
    with np.load(path) as archive:
        return archive["__manifest__"].tobytes().decode()


@pytest.mark.parametrize(
    "tamper, words",
    [
        (lambda p: _rewrite(p, drop="leaf_0"), "missing"),
        (lambda p: _rewrite(p, extra={"leaf_9": np.zeros(2)}), "not described by the manifest"),
        (lambda p: _rewrite(p, manifest_text="{not json"), "unreadable manifest"),
        (lambda p: _rewrite(p, manifest_text='{"format": "other", "root": null}'), "not a needle"),
        (
            lambda p: _rewrite(p, manifest_text=_manifest(p).replace('"version":1', '"version":7')),
            "version 7",
        ),
        (lambda p: _rewrite(p, manifest_text=_manifest(p).replace("[3,4]", "[4,3]")), "shape"),
        (
            lambda p: _rewrite(
                p, manifest_text=_manifest(p).replace('"type":"int"', '"type":"set"')
            ),
            "unknown node",
        ),
        (
            lambda p: _rewrite(
                p, manifest_text=_manifest(p).replace('"value":2.5', '"value":"2.5"')
            ),
            "float node",
        ),
    ],
)
def test_tampered_manifest(checkpoint, tamper, words):
    tamper(checkpoint)
    with pytest.raises(CheckpointError, match=f"ckpt.npz.*{words}"):
        ndl.load(checkpoint)


def test_zip_with_foreign_member(checkpoint):
    with zipfile.ZipFile(checkpoint, "a") as archive:
        archive.writestr("evil.pkl", b"cos\nsystem\n")
    with pytest.raises(CheckpointError, match="unexpected or repeated member 'evil.pkl'"):
        ndl.load(checkpoint)


def test_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.npz"):
        ndl.load(tmp_path / "nothing.npz")


_GOOD = {}


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    flips=st.lists(
        st.tuples(st.floats(0, 1, exclude_max=True), st.integers(1, 255)), min_size=1, max_size=3
    )
)
def test_random_byte_flips_never_load_a_wrong_value(tmp_path, flips):
    path = tmp_path / "fuzz.npz"
    if "bytes" not in _GOOD:
        ndl.save(_sample(), path)
        _GOOD["bytes"] = path.read_bytes()
    data = bytearray(_GOOD["bytes"])
    for where, mask in flips:
        data[int(where * len(data))] ^= mask
    path.write_bytes(bytes(data))
    try:
        loaded = ndl.load(path)
    except CheckpointError as error:
        assert "fuzz.npz" in str(error)
        return
    assert _same(loaded, _sample())


def test_saved_file_gets_the_usual_permissions(tmp_path):
    umask = os.umask(0o022)
    try:
        ndl.save({"a": np.ones(2)}, tmp_path / "c.npz")
    finally:
        os.umask(umask)
    assert (os.stat(tmp_path / "c.npz").st_mode & 0o777) == 0o644
