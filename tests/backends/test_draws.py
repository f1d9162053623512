"""Uniform draws: ``kernels.uniform_draws(shape)`` is ``np.random.rand(*shape)``, bit for bit,
and leaves NumPy's global generator exactly where that call leaves it, from any position in
its 624-word block, at both vector widths."""

from __future__ import annotations

import numpy as np
import pytest

import needle as ndl
from needle.backends import BACKEND, kernels

nd = ndl.backend_ndarray
compiled = nd.ndarray_backend_cpu


@pytest.fixture
def widths():
    """The vector widths to run at: both where the CPU has AVX2 (restored after)."""
    if BACKEND != "nd" or compiled is None:
        yield (None,)
        return
    previous = compiled.get_vector_width()
    yield tuple(w for w in (128, 256) if compiled.set_vector_width(w) == w)
    compiled.set_vector_width(previous)


def _state():
    _, key, pos, _, _ = np.random.get_state()
    return key.copy(), pos


def _advance(used: int, odd_word: bool) -> None:
    np.random.seed(7)
    if odd_word:
        np.random.bytes(4)  # one 32-bit word: then a draw's two words can straddle a refill
    np.random.rand(used)  # start anywhere in the block, at its end, past a refill


@pytest.mark.parametrize("shape", [(5,), (2047,), (2048,), (3000,), (100, 100), (7, 313, 3)])
@pytest.mark.parametrize("used", [0, 1, 311, 622, 623, 624, 1000])
@pytest.mark.parametrize("odd_word", [False, True])
def test_uniform_draws_are_np_random_rand(widths, shape, used, odd_word):
    for width in widths:
        if width is not None:
            compiled.set_vector_width(width)
        _advance(used, odd_word)
        expected, expected_state = np.random.rand(*shape), _state()
        _advance(used, odd_word)
        got = kernels.uniform_draws(shape)
        assert got.dtype == np.float64 and got.shape == shape
        assert got.tobytes() == expected.tobytes()
        key, pos = _state()
        assert pos == expected_state[1] and np.array_equal(key, expected_state[0])


@pytest.mark.skipif(BACKEND != "nd" or compiled is None, reason="the compiled module's draws")
def test_the_compiled_draws_are_the_ones_used(monkeypatch):
    """The comparisons above exercise the compiled generator, not NumPy's loop: the process's
    self-check passes, and large draws do not call np.random.rand."""
    assert nd.ndarray._compiled_draws_match(np.random.MT19937)
    monkeypatch.setattr(np.random, "rand", lambda *shape: pytest.fail("NumPy's loop was used"))
    assert kernels.uniform_draws((3000,)).shape == (3000,)


def test_uniform_draws_continue_the_stream_call_after_call():
    np.random.seed(11)
    expected = np.random.rand(3 * 5000)
    np.random.seed(11)
    got = np.concatenate([kernels.uniform_draws((5000,)) for _ in range(3)])
    np.testing.assert_array_equal(got, expected)


def test_uniform_draws_follow_another_global_bit_generator():
    previous = np.random.get_bit_generator()
    try:
        np.random.set_bit_generator(np.random.PCG64(3))
        expected = np.random.rand(4000)
        np.random.set_bit_generator(np.random.PCG64(3))
        np.testing.assert_array_equal(kernels.uniform_draws((4000,)), expected)
    finally:
        np.random.set_bit_generator(previous)


@pytest.mark.skipif(BACKEND != "nd" or compiled is None, reason="the compiled module's kernel")
def test_compiled_draws_reject_what_is_not_numpys_mt19937():
    with pytest.raises(TypeError, match="expected a numpy.random.MT19937 bit generator, got"):
        compiled.mt19937_uniform(np.random.PCG64(1), np.empty(10))
    with pytest.raises(TypeError, match="expected a numpy.random.MT19937"):
        compiled.mt19937_uniform(object(), np.empty(10))
    read_only = np.empty(10)
    read_only.flags.writeable = False
    for out in (read_only, np.empty(10, dtype=np.float32), np.empty((4, 4))[:, ::2], [0.0]):
        with pytest.raises(TypeError, match="out must be a writeable C-contiguous float64"):
            compiled.mt19937_uniform(np.random.MT19937(1), out)


def test_dropout_draws_what_the_course_draws(rng):
    x = rng.standard_normal((300, 40)).astype(np.float32)
    np.random.seed(5)
    out = ndl.nn.Dropout(0.3)(ndl.Tensor(x)).numpy()
    after = np.random.rand()
    np.random.seed(5)
    draws = np.random.rand(300, 40).astype(kernels.DRAW_DTYPE)
    keep = np.asarray(0.7, dtype=kernels.DRAW_DTYPE)
    mask = ((draws <= keep) / keep).astype(np.float32)
    np.testing.assert_allclose(out, x * mask, rtol=1e-6, atol=1e-7)
    assert np.random.rand() == after
