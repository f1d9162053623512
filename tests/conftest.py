"""Shared pytest fixtures. Keep this file small: helpers used by one file live in that file."""
from __future__ import annotations

import functools
import http.server
import threading

import numpy as np
import pytest

import needle.autograd as autograd


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
