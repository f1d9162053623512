"""needle.init: seeded draws equal NumPy calls made in the documented order."""

import math

import numpy as np
import pytest
from helpers import ND, scaled_draws

import needle as ndl
from needle import init


def _uniform(shape, low, high, seed):
    np.random.seed(seed)
    return scaled_draws(np.random.rand(*shape), high - low, low)


def _normal(shape, mean, std, seed):
    np.random.seed(seed)
    return scaled_draws(np.random.randn(*shape), std, mean)


def _draw(fn, *args, seed, **kwargs):
    np.random.seed(seed)
    return fn(*args, **kwargs)


# ----- basic draws ----------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 3])
def test_rand_matches_numpy(seed):
    out = _draw(init.rand, 3, 4, low=-2.0, high=5.0, seed=seed)
    assert out.dtype == np.float32 and out.shape == (3, 4)
    np.testing.assert_array_equal(out.numpy(), _uniform((3, 4), -2.0, 5.0, seed))


def test_randn_matches_numpy():
    out = _draw(init.randn, 5, 2, mean=1.5, std=0.3, seed=1)
    np.testing.assert_array_equal(out.numpy(), _normal((5, 2), 1.5, 0.3, 1))


def test_randb_matches_numpy():
    out = _draw(init.randb, 4, 6, p=0.3, seed=2)
    np.random.seed(2)
    draws = np.random.rand(4, 6)
    if ND:  # float32 draws compared with float32(p), as the course's NDArray does
        expected = draws.astype(np.float32) <= np.float32(0.3)
    else:
        expected = draws <= 0.3
    assert out.dtype == expected.dtype
    np.testing.assert_array_equal(out.numpy(), expected)


def test_randb_with_float_dtype_gives_zeros_and_ones():
    out = _draw(init.randb, 100, p=0.5, dtype="float32", seed=0)
    assert out.dtype == np.float32 and set(np.unique(out.numpy())) <= {0.0, 1.0}


def test_draws_continue_the_global_stream():
    np.random.seed(7)
    first, second = init.rand(2), init.randn(3)
    np.random.seed(7)
    np.testing.assert_array_equal(first.numpy(), np.random.rand(2).astype(np.float32))
    np.testing.assert_array_equal(second.numpy(), np.random.randn(3).astype(np.float32))


def test_constants_and_one_hot():
    assert np.array_equal(init.ones(2, 3).numpy(), np.ones((2, 3), np.float32))
    assert np.array_equal(init.zeros(4).numpy(), np.zeros(4, np.float32))
    assert np.array_equal(init.constant(2, c=3.5, dtype="float64").numpy(), [3.5, 3.5])
    hot = init.one_hot(4, ndl.Tensor([0, 3, 1]))
    assert np.array_equal(hot.numpy(), np.eye(4, dtype=np.float32)[[0, 3, 1]])
    like = init.ones_like(init.zeros(2, 2, dtype="float64"))
    assert like.dtype == np.float64 and like.shape == (2, 2)


def test_requires_grad_and_dtype_pass_through():
    out = init.kaiming_uniform(3, 2, dtype="float64", requires_grad=True)
    assert out.requires_grad and out.dtype == np.float64
    assert not init.rand(2).requires_grad


# ----- initializers ---------------------------------------------------------------------------


def test_xavier_uniform():
    a = 1.5 * math.sqrt(6.0 / (5 + 7))
    out = _draw(init.xavier_uniform, 5, 7, gain=1.5, seed=0)
    assert out.shape == (5, 7)
    np.testing.assert_array_equal(out.numpy(), _uniform((5, 7), -a, a, 0))


def test_xavier_normal():
    std = 0.5 * math.sqrt(2.0 / (5 + 7))
    out = _draw(init.xavier_normal, 5, 7, gain=0.5, seed=0)
    np.testing.assert_array_equal(out.numpy(), _normal((5, 7), 0.0, std, 0))


def test_kaiming_uniform():
    bound = math.sqrt(2.0) * math.sqrt(3.0 / 6)
    out = _draw(init.kaiming_uniform, 6, 4, seed=5)
    assert out.shape == (6, 4)
    np.testing.assert_array_equal(out.numpy(), _uniform((6, 4), -bound, bound, 5))


def test_kaiming_normal():
    std = math.sqrt(2.0) / math.sqrt(6)
    out = _draw(init.kaiming_normal, 6, 4, seed=5)
    np.testing.assert_array_equal(out.numpy(), _normal((6, 4), 0.0, std, 5))


def test_shape_argument_keeps_the_fan_based_bound():
    bound = math.sqrt(2.0) * math.sqrt(3.0 / 36)
    out = _draw(init.kaiming_uniform, 36, 8, shape=(3, 3, 4, 8), seed=1)
    assert out.shape == (3, 3, 4, 8)
    np.testing.assert_array_equal(out.numpy(), _uniform((3, 3, 4, 8), -bound, bound, 1))
    assert _draw(init.xavier_normal, 4, 4, shape=(2, 2), seed=0).shape == (2, 2)


def test_kaiming_bound_is_respected():
    out = _draw(init.kaiming_uniform, 50, 1000, seed=0).numpy()
    bound = math.sqrt(6.0 / 50)
    assert np.abs(out).max() <= bound and np.abs(out).max() > 0.95 * bound


def test_calculate_gain_values():
    assert init.calculate_gain("linear") == 1.0
    assert init.calculate_gain("sigmoid") == 1.0
    assert init.calculate_gain("tanh") == pytest.approx(5.0 / 3.0)
    assert init.calculate_gain("relu") == pytest.approx(math.sqrt(2.0))
    assert init.calculate_gain("leaky_relu") == pytest.approx(math.sqrt(2.0 / (1 + 0.01**2)))
    assert init.calculate_gain("leaky_relu", 0.2) == pytest.approx(math.sqrt(2.0 / 1.04))


# ----- errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fn", [init.xavier_uniform, init.xavier_normal, init.kaiming_uniform, init.kaiming_normal]
)
@pytest.mark.parametrize("fans", [(0, 3), (3, -1)])
def test_non_positive_fans_are_rejected(fn, fans):
    with pytest.raises(ValueError, match="positive"):
        fn(*fans)


def test_unknown_nonlinearity_is_rejected():
    with pytest.raises(ValueError, match="unknown nonlinearity 'swish'"):
        init.calculate_gain("swish")
    with pytest.raises(ValueError, match="swish"):
        init.kaiming_uniform(3, 3, nonlinearity="swish")


def test_negative_shape_is_rejected():
    with pytest.raises(ValueError, match="shape"):
        init.rand(2, -1)
