"""Flushing subnormal floats to zero (needle.set_flush_denormal), checked functionally.

Whether subnormals are *slow* depends on the CPU (benchmarks/bench_subnormal.py measures
it); what flushing does is the same everywhere: results below float32's normal range
(1.18e-38) become 0 where needle stores them.
"""

import numpy as np
import pytest

import needle as ndl
from needle import nn, optim
from needle.backends import BACKEND

TINY = np.finfo(np.float32).tiny


@pytest.fixture(autouse=True)
def _flushing_off_afterwards():
    yield
    ndl.set_flush_denormal(False)


def _sgd_step_to_a_subnormal(device) -> np.ndarray:
    """w - lr * g with w = 3e-38, g = 2e-38 (both normal), lr = 1: exactly 1e-38 (Sterbenz's
    lemma), which is subnormal."""
    w = nn.Parameter(ndl.Tensor(np.array([3e-38, 1.0], dtype=np.float32), device=device))
    w.grad = ndl.Tensor(
        np.array([2e-38, 0.5], dtype=np.float32), device=device, requires_grad=False
    )
    optim.SGD([w], lr=1.0).step()
    return w.numpy()


def test_an_update_whose_exact_result_is_subnormal_stores_zero_when_flushing(device):
    exact = np.float32(np.float64(np.float32(3e-38)) - np.float64(np.float32(2e-38)))
    assert 0 < exact < TINY
    ndl.set_flush_denormal(False)
    np.testing.assert_array_equal(_sgd_step_to_a_subnormal(device), [exact, 0.5])
    ndl.set_flush_denormal(True)
    np.testing.assert_array_equal(_sgd_step_to_a_subnormal(device), [0.0, 0.5])


def test_adam_moments_are_flushed_too(device):
    # m = (1 - beta1) * g = 0.1 * 1e-37: subnormal; v = 0.001 * g**2 underflows to 0 anyway.
    ndl.set_flush_denormal(True)
    w = nn.Parameter(ndl.Tensor(np.array([1.0, 1.0], dtype=np.float32), device=device))
    w.grad = ndl.Tensor(
        np.array([1e-37, 1.0], dtype=np.float32), device=device, requires_grad=False
    )
    opt = optim.Adam([w], lr=1e-3)
    opt.step()
    m = np.asarray(opt.state[0]["m"]).reshape(-1)
    assert m[0] == 0.0 and m[1] == np.float32(0.1)


def test_flushing_leaves_normal_results_bit_identical(device):
    rng = np.random.default_rng(0)
    data = rng.standard_normal((3, 4)).astype(np.float32)
    grads = [rng.standard_normal((3, 4)).astype(np.float32) for _ in range(3)]
    results = []
    for flush in (False, True):
        ndl.set_flush_denormal(flush)
        w = nn.Parameter(ndl.Tensor(data, device=device))
        opt = optim.Adam([w], lr=0.01, weight_decay=0.01)
        for g in grads:
            w.grad = ndl.Tensor(g, device=device, requires_grad=False)
            opt.step()
        results.append(w.numpy())
    np.testing.assert_array_equal(results[0], results[1])


def test_the_context_manager_restores_the_previous_mode():
    ndl.set_flush_denormal(False)
    with ndl.flush_denormals():
        assert ndl.is_flush_denormal()
    assert not ndl.is_flush_denormal()
    with pytest.raises(TypeError, match="expected True or False"):
        ndl.set_flush_denormal(1)


@pytest.mark.skipif(
    BACKEND != "nd",
    reason="the CPU's flush modes are set only by the "
    "compiled backend (NEEDLE_BACKEND=np loads no compiled code)",
)
def test_on_x86_the_cpu_itself_flushes_every_kernel():
    if not ndl.set_flush_denormal(True):
        pytest.skip("this CPU has no flush-to-zero mode needle can set (not x86-64)")
    x = ndl.Tensor(np.array([1.5e-38], dtype=np.float32))
    assert (x * 0.5).numpy()[0] == 0.0  # 7.5e-39 without flushing
    ndl.set_flush_denormal(False)
    assert (x * 0.5).numpy()[0] == np.float32(7.5e-39)


def test_the_numpy_backend_reports_that_only_optimizers_flush():
    if BACKEND != "np":
        pytest.skip("under nd the return value depends on the CPU (see the test above)")
    assert ndl.set_flush_denormal(True) is False and ndl.is_flush_denormal()
