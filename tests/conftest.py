"""Shared pytest fixtures and the groups of tests that need something optional.

Keep this file small: helpers used by one file live in that file, helpers imported by
several in tests/helpers/.
"""

from __future__ import annotations

import functools
import http.server
import threading
from pathlib import Path

import numpy as np
import pytest

import needle as ndl
import needle.autograd as autograd
from needle import backend_ndarray, distributed
from needle.data import write_idx

# ----- groups: tests that need PyTorch, MPI or a browser ----------------------------------------
# Such a test carries the marker of its group (registered in pyproject.toml), so that
# `-m torch` selects the group and `-m "not torch"` leaves it out. Where what the group needs
# is missing, each of its tests skips with the reason; the other tests of its module run.
# `torch`: given to every test that takes the `torch` fixture (below). `mpi`: from
# helpers.mpi (`needs_mpi4py`; `needs_mpiexec` is `mpi(launcher=True)`). `browser`: the
# browser tests' module sets it.


@functools.cache
def _missing_torch() -> str | None:
    try:
        import torch  # noqa: F401
    except ImportError:
        return (
            "PyTorch, the reference this test compares with, is not installed "
            '(pip install -e ".[torch]")'
        )
    return None


@functools.cache
def _missing_mpi(launcher: bool = False) -> str | None:
    if not distributed.is_available():
        return 'mpi4py is not installed (pip install -e ".[distributed]")'
    if launcher and distributed.find_mpiexec() is None:
        return 'no mpiexec launcher found (pip install -e ".[distributed]" installs one)'
    return None


@functools.cache
def _missing_browser() -> str | None:
    from helpers.browser import chromium_path

    if chromium_path() is None:
        return "Chromium not installed (scripts/install-viz-deps.sh)"
    return None


MISSING = {"torch": _missing_torch, "mpi": _missing_mpi, "browser": _missing_browser}


@pytest.hookimpl(tryfirst=True)  # before -m deselects by marker
def pytest_collection_modifyitems(items):
    for item in items:
        if "torch" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.torch)


@pytest.hookimpl(tryfirst=True)  # before the test's fixtures are set up
def pytest_runtest_setup(item):
    for group, missing in MISSING.items():
        for marker in item.iter_markers(group):
            reason = missing(**marker.kwargs)
            if reason:
                pytest.skip(reason)


@pytest.fixture
def torch():
    """The ``torch`` module, for tests that compare with PyTorch (they are marked ``torch``)."""
    reason = _missing_torch()
    if reason:
        pytest.skip(reason)
    import torch

    return torch


# ----- devices ---------------------------------------------------------------------------------


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
    thread = threading.Thread(
        target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
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
        write_idx(
            folder / f"{prefix}-images-idx3-ubyte.gz",
            rng.integers(0, 256, (n, 28, 28), dtype=np.uint8),
        )
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", rng.integers(0, 10, n, dtype=np.uint8))
    return folder
