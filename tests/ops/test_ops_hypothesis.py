"""Property-based tests: random shapes (up to 3-D, sizes 1-4) and values.

Forward results are compared with NumPy, gradients with finite differences
(``needle.testing.gradcheck``). Example counts are small so the file runs in seconds.
"""

from __future__ import annotations

import math

import numpy as np
from helpers import tensor
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import needle as ndl
from needle.testing import gradcheck

SETTINGS = settings(max_examples=30, deadline=None)

shapes = st.lists(st.integers(1, 4), min_size=0, max_size=3).map(tuple)


def values(shape, low=-3.0, high=3.0):
    return arrays(np.float64, shape, elements=st.floats(low, high, allow_nan=False))


@st.composite
def broadcast_pair(draw):
    """Two shapes that broadcast: the second drops leading axes and sets some to 1."""
    full = draw(st.lists(st.integers(1, 4), min_size=0, max_size=3).map(tuple))
    drop = draw(st.integers(0, len(full)))
    other = tuple(1 if draw(st.booleans()) else s for s in full[drop:])
    mine = tuple(1 if draw(st.booleans()) else s for s in full)
    return (mine, other) if draw(st.booleans()) else (other, mine)


@st.composite
def nonzero_values(draw, shape):
    magnitude = draw(values(shape, 0.5, 3.0))
    sign = draw(arrays(np.float64, shape, elements=st.sampled_from([-1.0, 1.0])))
    return magnitude * sign


BINARY = {
    "add": (ndl.add, np.add),
    "sub": (lambda a, b: a - b, np.subtract),
    "multiply": (ndl.multiply, np.multiply),
    "divide": (ndl.divide, np.divide),
    "power": (ndl.power, np.power),
}


@SETTINGS
@given(data=st.data(), name=st.sampled_from(sorted(BINARY)))
def test_elementwise_binary_with_broadcasting(data, name):
    fn, ref = BINARY[name]
    shape_a, shape_b = data.draw(broadcast_pair())
    if name == "power":  # positive base: the gradient in the exponent needs log(a)
        a, b = data.draw(values(shape_a, 0.5, 2.0)), data.draw(values(shape_b, -2.0, 2.0))
    elif name == "divide":
        a, b = data.draw(values(shape_a)), data.draw(nonzero_values(shape_b))
    else:
        a, b = data.draw(values(shape_a)), data.draw(values(shape_b))
    out = fn(tensor(a), tensor(b))
    np.testing.assert_allclose(out.numpy(), ref(a, b), rtol=1e-12, atol=1e-12)
    assert gradcheck(fn, a, b)


@st.composite
def array_and_axes(draw):
    """An array and axes to reduce: None, an int, or a tuple in any order, negatives allowed."""
    shape = draw(shapes)
    a = draw(values(shape))
    ndim = len(shape)
    kind = draw(st.sampled_from(["none", "int", "tuple"] if ndim else ["none", "tuple"]))
    if kind == "none":
        return a, None
    if kind == "int":
        return a, draw(st.integers(-ndim, ndim - 1))
    chosen = draw(st.permutations(range(ndim)))[: draw(st.integers(0, ndim))]
    return a, tuple(ax - ndim if draw(st.booleans()) else ax for ax in chosen)


def np_logsumexp(a, axes):
    axes = tuple(range(a.ndim)) if axes is None else axes
    return np.log(np.sum(np.exp(a), axis=axes))  # inputs are small: the naive form is exact


@SETTINGS
@given(case=array_and_axes(), op=st.sampled_from(["summation", "logsumexp"]))
def test_reductions_over_random_axes(case, op):
    a, axes = case
    fn = {"summation": ndl.summation, "logsumexp": ndl.logsumexp}[op]
    ref = {
        "summation": lambda x: np.sum(x, axis=axes),
        "logsumexp": lambda x: np_logsumexp(x, axes),
    }[op]
    out = fn(tensor(a), axes)
    expected = ref(a)
    assert out.shape == np.shape(expected)
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-12, atol=1e-12)
    assert gradcheck(lambda t: fn(t, axes), a)


@st.composite
def matmul_shapes(draw):
    batch_a, batch_b = draw(broadcast_pair())
    batch_a, batch_b = batch_a[-2:], batch_b[-2:]  # at most 4-D; trailing dims still broadcast
    n, k, m = (draw(st.integers(1, 4)) for _ in range(3))
    return batch_a + (n, k), batch_b + (k, m)


@SETTINGS
@given(data=st.data())
def test_batched_matmul(data):
    shape_a, shape_b = data.draw(matmul_shapes())
    a, b = data.draw(values(shape_a)), data.draw(values(shape_b))
    out = ndl.matmul(tensor(a), tensor(b))
    np.testing.assert_allclose(out.numpy(), a @ b, rtol=1e-12, atol=1e-12)
    assert gradcheck(ndl.matmul, a, b)


@st.composite
def reshape_case(draw):
    """A shape and a random factorization of its size into up to 4 dims, maybe with one -1."""
    shape = draw(shapes)
    size = math.prod(shape)
    factors = [p for n in shape for p in _prime_factors(n)]
    factors = draw(st.permutations(factors)) if factors else []
    ndim = draw(st.integers(1 if factors else 0, 4))
    target = [1] * ndim
    for f in factors:
        target[draw(st.integers(0, ndim - 1))] *= f
    assert math.prod(target) == size
    if target and draw(st.booleans()):
        target[draw(st.integers(0, len(target) - 1))] = -1
    return shape, tuple(target)


def _prime_factors(n: int) -> list[int]:
    out, p = [], 2
    while n > 1:
        while n % p == 0:
            out.append(p)
            n //= p
        p += 1
    return out


@SETTINGS
@given(data=st.data())
def test_reshape_random_factorizations(data):
    shape, target = data.draw(reshape_case())
    a = data.draw(values(shape))
    out = ndl.reshape(tensor(a), target)
    np.testing.assert_array_equal(out.numpy(), a.reshape(target))
    assert gradcheck(lambda t: ndl.reshape(t, target), a)


@st.composite
def broadcast_to_case(draw):
    shape = draw(shapes)
    lead = tuple(draw(st.lists(st.integers(1, 4), max_size=3 - len(shape) + 1)))
    target = lead + tuple(draw(st.integers(1, 4)) if s == 1 else s for s in shape)
    return shape, target


@SETTINGS
@given(data=st.data())
def test_broadcast_to(data):
    shape, target = data.draw(broadcast_to_case())
    a = data.draw(values(shape))
    out = ndl.broadcast_to(tensor(a), target)
    np.testing.assert_array_equal(out.numpy(), np.broadcast_to(a, target))
    assert gradcheck(lambda t: ndl.broadcast_to(t, target), a)


@SETTINGS
@given(data=st.data(), name=st.sampled_from(["exp", "tanh", "sigmoid", "relu", "negate"]))
def test_unary_ops_keep_float32(data, name):
    a = data.draw(arrays(np.float32, data.draw(shapes), elements=st.floats(-3, 3, width=32)))
    out = getattr(ndl, name)(tensor(a))
    assert out.dtype == np.float32 and out.shape == a.shape
