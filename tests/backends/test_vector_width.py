"""Vector width: kernels compiled for AVX2 give the bits of the portable SSE2 build, and the
row maximum's eight running maxima give NumPy's maximum, NaN included."""

from __future__ import annotations

import numpy as np
import pytest

import needle as ndl
from needle.backends import BACKEND, kernels

pytestmark = pytest.mark.skipif(BACKEND != "nd", reason="the compiled kernels (nd only)")
nd = ndl.backend_ndarray
module = nd.ndarray_backend_cpu


@pytest.fixture
def widths():
    """The widths this CPU can run: (128, 256) with AVX2, else skipped."""
    previous = module.get_vector_width()
    if module.set_vector_width(256) != 256:
        module.set_vector_width(previous)
        pytest.skip("this CPU has no AVX2: only the portable kernels run here")
    yield (128, 256)
    module.set_vector_width(previous)


def test_set_vector_width_reports_the_width_in_use():
    previous = module.get_vector_width()
    try:
        assert module.set_vector_width(128) == 128 == module.get_vector_width()
        assert module.set_vector_width(256) in (128, 256)
    finally:
        module.set_vector_width(previous)


@pytest.mark.parametrize("n, k", [(1, 1), (3, 7), (5, 17), (64, 1000), (7, 10_003)])
def test_softmax_loss_has_the_same_bits_at_both_widths(widths, n, k, rng):
    logits = nd.array((rng.standard_normal((n, k)) * 4).astype(np.float32))
    labels = rng.integers(0, k, n)
    results = []
    for width in widths:
        assert module.set_vector_width(width) == width
        loss, grad = kernels.softmax_cross_entropy(logits, labels)
        results.append((loss.numpy().tobytes(), grad.numpy().tobytes()))
    assert results[0] == results[1]


@pytest.mark.parametrize("length", [1, 7, 8, 15, 16, 17, 33, 1001])
@pytest.mark.parametrize("nan_at", [None, 0, "middle", "last"])
def test_row_max_matches_numpy(length, nan_at, rng):
    x = rng.standard_normal((3, length)).astype(np.float32)
    if nan_at is not None:
        column = {0: 0, "middle": length // 2, "last": length - 1}[nan_at]
        x[1, column] = np.nan
    got = nd.array(x).max(axis=1).numpy()
    np.testing.assert_array_equal(got, x.max(axis=1))
