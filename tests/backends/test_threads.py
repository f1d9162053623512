"""Threads: the compiled kernels give the same bits at any thread count, and the knob works.

The kernels' thread count is varied alone (the compiled module's own setter): OpenBLAS
splits a matrix product's sums differently with another thread count, so products may
differ in the last bits between BLAS thread counts (documented), never between kernel ones.
"""

from __future__ import annotations

import numpy as np
import pytest

import needle as ndl
from needle import nn
from needle.backends import BACKEND

pytestmark = pytest.mark.skipif(BACKEND != "nd", reason="the NDArray kernels' threads (nd only)")


@pytest.fixture
def thread_counts():
    previous = ndl.get_num_threads()
    yield (1, 2, 3)
    ndl.set_num_threads(previous)


def _under_each(counts, compute):
    """compute()'s NumPy results with each kernel thread count: all the first's bits."""
    kernels = ndl.backend_ndarray.ndarray_backend_cpu
    results = []
    for n in counts:
        kernels.set_num_threads(n)
        assert ndl.get_num_threads() == n
        results.append([np.asarray(r) for r in compute()])
    for other in results[1:]:
        for i, (a, b) in enumerate(zip(results[0], other)):
            assert a.dtype == b.dtype and a.shape == b.shape
            assert a.tobytes() == b.tobytes(), f"result {i} differs"
    return results[0]


def test_array_kernels_are_bit_identical_at_any_thread_count(thread_counts):
    nd = ndl.backend_ndarray
    rng = np.random.default_rng(0)
    x = nd.array(rng.standard_normal((300, 700)).astype(np.float32))  # several chunks
    y = nd.array(rng.standard_normal((300, 700)).astype(np.float32))
    ints = nd.array(rng.integers(-5, 5, (300, 700)), dtype="int64")

    def compute():
        target = nd.zeros((700, 300))
        target[:, :] = x.permute((1, 0))
        strided = nd.zeros((300, 1400))
        strided[:, ::2] = y
        return [
            (x + y).numpy(),
            (x * 3.0).numpy(),
            x.exp().numpy(),
            x.tanh().numpy(),
            (x / y).numpy(),
            x.permute((1, 0)).compact().numpy(),
            x[::3, 1::2].numpy(),
            x.sum(axis=1).numpy(),
            x.sum(axis=0).numpy(),
            x.max(axis=1).numpy(),
            x.sum().numpy(),
            target.numpy(),
            strided.numpy(),
            (ints * ints).numpy(),
            (x >= y).numpy(),
            x.maximum(y).numpy(),
        ]

    _under_each(thread_counts, compute)


def test_a_training_step_is_bit_identical_at_any_thread_count(thread_counts):
    def compute():
        np.random.seed(0)
        model = nn.Sequential(
            nn.Linear(256, 512),
            nn.LayerNorm1d(512),
            nn.ReLU(),
            nn.Dropout(0.3),
            nn.Linear(512, 300),
            nn.BatchNorm1d(300),
        )
        opt = ndl.optim.Adam(model.parameters(), lr=0.01)
        for _ in range(2):
            X = ndl.Tensor(np.random.randn(200, 256), dtype="float32")
            y = ndl.Tensor(np.random.randint(0, 300, 200), dtype="int64")
            opt.reset_grad()
            nn.SoftmaxLoss()(model(X), y).backward()
            opt.step()
        sgd = ndl.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        nn.SoftmaxLoss()(model(X), y).backward()
        sgd.step()
        emb = nn.Embedding(1000, 64)
        ids = ndl.Tensor(np.random.randint(0, 1000, (40, 30)), dtype="int64")
        return [p.numpy() for p in model.parameters()] + [emb(ids).numpy()]

    _under_each(thread_counts, compute)


def test_workers_take_the_callers_flush_to_zero_mode(thread_counts):
    nd = ndl.backend_ndarray
    tiny = nd.array(np.full(200_000, 1e-20, dtype=np.float32))
    previous = ndl.is_flush_denormal()
    try:
        if not ndl.set_flush_denormal(True):
            pytest.skip("no flush-to-zero mode on this CPU")
        flushed = _under_each(thread_counts, lambda: [(tiny * 1e-20).numpy()])
        assert not flushed[0].any(), "1e-40 is subnormal: flushed to 0 on every thread"
    finally:
        ndl.set_flush_denormal(previous)


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2"])
def test_set_num_threads_refuses_bad_counts(bad):
    with pytest.raises(ValueError, match="set_num_threads: the number of threads must be an int"):
        ndl.set_num_threads(bad)
