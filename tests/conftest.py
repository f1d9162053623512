"""Shared pytest fixtures. Keep this file small: helpers used by one file live in that file."""
from __future__ import annotations

import functools
import http.server
import threading
from pathlib import Path

import numpy as np
import pytest

import needle as ndl
import needle.autograd as autograd
from needle import backend_ndarray
from needle.backends import NDArray
from needle.data import write_idx


def _params_of(devices) -> list:
    """One pytest param per device; a disabled one skips with a reason."""
    return [
        pytest.param(d, id=d.name)
        if d.enabled()
        else pytest.param(d, id=d.name, marks=pytest.mark.skip(reason=f"{d} is not enabled"))
        for d in devices
    ]


def _device_params() -> list:
    """Under nd every NDArray device (disabled ones skip with a reason); under np its CPU."""
    if ndl.backends.BACKEND != "nd":
        return [pytest.param(ndl.cpu(), id="cpu")]
    return _params_of(ndl.all_devices())


@pytest.fixture(params=_device_params())
def device(request):
    """Each device the current backend offers: tests using it run once per device."""
    return request.param


@pytest.fixture(params=_params_of(backend_ndarray.all_devices()))
def nd_device(request):
    """Each NDArray device, under either backend (needle.backend_ndarray always imports)."""
    return request.param


@pytest.fixture
def rng() -> np.random.Generator:
    """A fresh, seeded generator per test (never NumPy's global one)."""
    return np.random.default_rng(0)


@pytest.fixture(autouse=True)
def _restore_autograd_modes():
    """Undo LAZY_MODE / no_grad / detect_anomaly leaks from a test that failed half-way."""
    saved = (autograd.LAZY_MODE, autograd._grad_enabled, autograd._anomaly_enabled)
    yield
    autograd.LAZY_MODE, autograd._grad_enabled, autograd._anomaly_enabled = saved


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep pytest output clean
        pass


@pytest.fixture
def server(tmp_path, monkeypatch):
    """Serve ``tmp_path/'served'`` on 127.0.0.1:<ephemeral>; yield (folder, base URL)."""
    for scheme in ("http", "https", "all"):
        monkeypatch.delenv(f"{scheme}_proxy", raising=False)
        monkeypatch.delenv(f"{scheme.upper()}_PROXY", raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    served = tmp_path / "served"
    served.mkdir()
    handler = functools.partial(QuietHandler, directory=str(served))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        yield served, f"http://127.0.0.1:{httpd.server_address[1]}/"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


@pytest.fixture(scope="module")
def tiny_mnist(tmp_path_factory) -> Path:
    """A folder with random MNIST-format IDX files: 120 training and 40 test images."""
    folder = tmp_path_factory.mktemp("mnist")
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 120), ("t10k", 40)):
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz",
                  rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz",
                  rng.integers(0, 10, n, dtype=np.uint8))
    return folder


def tensor(data, **kwargs) -> ndl.Tensor:
    """``ndl.Tensor(data)`` keeping NumPy's inferred float dtype on both backends.

    Under ``nd`` a Tensor is float32 unless a dtype is given (spec), while these tests'
    NumPy references compute in the data's own dtype (float64 for Python floats); under
    ``np`` this is exactly ``ndl.Tensor(data)``.
    """
    if "dtype" not in kwargs and not isinstance(data, (ndl.Tensor, NDArray)):
        inferred = np.asarray(data).dtype
        if inferred.kind == "f":
            kwargs["dtype"] = inferred
    return ndl.Tensor(data, **kwargs)


ND = ndl.backends.BACKEND == "nd"


def scaled_draws(draws: np.ndarray, scale: float, shift: float) -> np.ndarray:
    """``draws * scale + shift`` as needle.init computes it, as float32.

    Under ``np`` in float64, then cast (the course's NumPy framework); under ``nd`` the
    draws and the scalars are cast to float32 first (spec: NDArray arithmetic in the dtype).
    """
    if ND:
        return draws.astype(np.float32) * np.float32(scale) + np.float32(shift)
    return (draws * scale + shift).astype(np.float32)
