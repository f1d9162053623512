"""Shared pytest fixtures. Keep this file small: helpers used by one file live in that file."""
from __future__ import annotations

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
