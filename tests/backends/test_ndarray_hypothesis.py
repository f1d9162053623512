"""Fuzzing the NDArray against NumPy on every enabled NDArray device.

Every input is a *strided view*: a random array sliced with random starts and steps,
its axes permuted, sometimes broadcast (stride 0) — so offsets, non-unit and zero
strides are the default, not the exception. Each operation's result is compared with
NumPy's on the same view.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from needle import backend_ndarray as nd

SETTINGS = settings(max_examples=40, deadline=None)
DEVICES = [
    pytest.param(d, id=d.name)
    if d.enabled()
    else pytest.param(d, id=d.name, marks=pytest.mark.skip(reason=f"{d} is not enabled here"))
    for d in nd.all_devices()
]
pytestmark = pytest.mark.parametrize("device", DEVICES)

shapes = st.lists(st.integers(1, 4), min_size=0, max_size=4).map(tuple)


@st.composite
def strided(draw, shape, device, low=-10.0, high=10.0):
    """(NumPy view, NDArray view) of ``shape`` over a bigger buffer, axes permuted."""
    ndim = len(shape)
    perm = draw(st.permutations(range(ndim)))
    inverse = tuple(np.argsort(perm))
    steps = [draw(st.integers(1, 3)) for _ in range(ndim)]
    starts = [draw(st.integers(0, 2)) for _ in range(ndim)]
    base_shape = tuple(starts[perm[i]] + shape[perm[i]] * steps[perm[i]] for i in range(ndim))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    base = rng.uniform(low, high, base_shape).astype(np.float32)
    index = tuple(
        slice(starts[perm[i]], starts[perm[i]] + shape[perm[i]] * steps[perm[i]], steps[perm[i]])
        for i in range(ndim)
    )
    np_view = base[index].transpose(inverse)
    nd_view = nd.array(base, device=device)[index].permute(inverse)
    assert nd_view.shape == np_view.shape == shape
    return np_view, nd_view


@st.composite
def broadcast_shapes(draw):
    """Two shapes that broadcast together (dropped leading axes, some set to 1)."""
    full = draw(shapes)
    drop = draw(st.integers(0, len(full)))
    other = tuple(1 if draw(st.booleans()) else s for s in full[drop:])
    mine = tuple(1 if draw(st.booleans()) else s for s in full)
    return (mine, other) if draw(st.booleans()) else (other, mine)


def check(got: nd.NDArray, expected: np.ndarray, tol: float = 1e-5) -> None:
    result = got.numpy()
    assert result.shape == np.shape(expected), f"{result.shape} != {np.shape(expected)}"
    assert result.dtype == np.float32
    np.testing.assert_allclose(result, expected, rtol=tol, atol=tol)


@SETTINGS
@given(data=st.data())
def test_views_and_compact_match_numpy(device, data):
    shape = data.draw(shapes)
    np_view, nd_view = data.draw(strided(shape, device))
    check(nd_view, np_view, 0)
    check(nd_view.compact(), np_view, 0)
    lead = data.draw(st.integers(1, 3))
    check(nd_view.broadcast_to((lead,) + shape), np.broadcast_to(np_view, (lead,) + shape), 0)
    if shape:
        index = tuple(
            slice(
                data.draw(st.integers(-5, 5)),
                data.draw(st.integers(-5, 5)),
                data.draw(st.integers(1, 3)),
            )
            for _ in shape
        )
        check(nd_view[index], np_view[index], 0)


@SETTINGS
@given(data=st.data())
def test_reshape_of_views(device, data):
    shape = data.draw(shapes)
    np_view, nd_view = data.draw(strided(shape, device))
    size = int(np.prod(shape))
    first = data.draw(st.sampled_from([d for d in range(1, size + 1) if size % d == 0]))
    check(nd_view.reshape((first, -1)), np_view.reshape(first, -1), 0)


BINARY = {
    "add": (lambda a, b: a + b, np.add),
    "sub": (lambda a, b: a - b, np.subtract),
    "mul": (lambda a, b: a * b, np.multiply),
    "div": (lambda a, b: a / b, np.divide),
    "maximum": (nd.maximum, np.maximum),
    "eq": (lambda a, b: a == b, np.equal),
    "ne": (lambda a, b: a != b, np.not_equal),
    "ge": (lambda a, b: a >= b, np.greater_equal),
    "gt": (lambda a, b: a > b, np.greater),
    "le": (lambda a, b: a <= b, np.less_equal),
    "lt": (lambda a, b: a < b, np.less),
    "pow": (lambda a, b: a**b, np.power),
}


@SETTINGS
@given(data=st.data(), name=st.sampled_from(sorted(BINARY)))
def test_binary_ops_broadcast_like_numpy(device, data, name):
    fn, ref = BINARY[name]
    shape_a, shape_b = data.draw(broadcast_shapes())
    low = 0.5 if name in ("pow", "div") else -10.0
    np_a, nd_a = data.draw(strided(shape_a, device, low, 3.0 if name == "pow" else 10.0))
    np_b, nd_b = data.draw(strided(shape_b, device, low if name == "div" else -2.0, 2.0))
    if name in ("eq", "ne", "ge", "gt", "le", "lt"):  # make some pairs equal
        np_b = np.round(np_b)
        nd_b = nd.array(np_b, device=device)
        np_a = np.round(np_a)
        nd_a = nd.array(np_a, device=device)
    check(fn(nd_a, nd_b), ref(np_a, np_b).astype(np.float32))


SCALAR = {
    "add": (lambda a, c: a + c, lambda a, c: a + c),
    "radd": (lambda a, c: c + a, lambda a, c: c + a),
    "rsub": (lambda a, c: c - a, lambda a, c: c - a),
    "mul": (lambda a, c: a * c, lambda a, c: a * c),
    "div": (lambda a, c: a / c, lambda a, c: a / c),
    "rdiv": (lambda a, c: c / a, lambda a, c: c / a),
    "pow": (lambda a, c: a**c, lambda a, c: a**c),
    "maximum": (nd.maximum, np.maximum),
    "ge": (lambda a, c: a >= c, lambda a, c: a >= c),
    "eq": (lambda a, c: a == c, lambda a, c: a == c),
}


@SETTINGS
@given(data=st.data(), name=st.sampled_from(sorted(SCALAR)))
def test_scalar_ops(device, data, name):
    fn, ref = SCALAR[name]
    shape = data.draw(shapes)
    positive = name in ("pow", "rdiv")
    np_a, nd_a = data.draw(strided(shape, device, 0.5 if positive else -10.0, 10.0))
    c = data.draw(st.sampled_from([0.5, -2.0, 3.0, 2.0]))
    if name == "eq" and np_a.size:
        c = float(np_a.reshape(-1)[0])
    expected = ref(np_a, np.float32(c)).astype(np.float32)
    check(fn(nd_a, c), expected)


@SETTINGS
@given(data=st.data(), name=st.sampled_from(["log", "exp", "tanh", "neg"]))
def test_unary_ops(device, data, name):
    shape = data.draw(shapes)
    np_a, nd_a = data.draw(strided(shape, device, 0.1 if name == "log" else -5.0, 5.0))
    fn = (lambda a: -a) if name == "neg" else getattr(nd, name)
    ref = np.negative if name == "neg" else getattr(np, name)
    check(fn(nd_a), ref(np_a))


@SETTINGS
@given(data=st.data(), op=st.sampled_from(["sum", "max"]), keepdims=st.booleans())
def test_reductions_over_random_axes(device, data, op, keepdims):
    shape = data.draw(shapes)
    np_a, nd_a = data.draw(strided(shape, device))
    axes = data.draw(
        st.none()
        | st.lists(st.integers(0, max(len(shape) - 1, 0)), unique=True, max_size=len(shape)).map(
            tuple
        )
    )
    if axes is not None and shape:
        axes = tuple(a - len(shape) if data.draw(st.booleans()) else a for a in axes)
    elif not shape:
        axes = None
    check(
        getattr(nd_a, op)(axis=axes, keepdims=keepdims),
        getattr(np_a, op)(axis=axes, keepdims=keepdims),
        1e-4,
    )


@SETTINGS
@given(data=st.data())
def test_matmul_of_views(device, data):
    m, n, p = (data.draw(st.integers(1, 20)) for _ in range(3))
    batch = data.draw(st.sampled_from([(), (2,), (1, 3)]))
    np_a, nd_a = data.draw(strided(batch + (m, n), device, -2.0, 2.0))
    np_b, nd_b = data.draw(
        strided((n, p) if data.draw(st.booleans()) else batch + (n, p), device, -2.0, 2.0)
    )
    check(nd_a @ nd_b, np.matmul(np_a, np_b), 1e-4)


@SETTINGS
@given(data=st.data())
def test_tile_multiple_matmul(device, data):
    m, n, p = (8 * data.draw(st.integers(1, 3)) for _ in range(3))
    np_a, nd_a = data.draw(strided((m, n), device, -2.0, 2.0))
    np_b, nd_b = data.draw(strided((n, p), device, -2.0, 2.0))
    check(nd_a @ nd_b, np_a @ np_b, 1e-4)


@SETTINGS
@given(data=st.data())
def test_flip_and_pad(device, data):
    shape = data.draw(shapes.filter(len))
    np_a, nd_a = data.draw(strided(shape, device))
    axes = data.draw(st.lists(st.integers(0, len(shape) - 1), min_size=1, unique=True))
    check(nd.flip(nd_a, tuple(axes)), np.flip(np_a, tuple(axes)), 0)
    pads = tuple((data.draw(st.integers(0, 2)), data.draw(st.integers(0, 2))) for _ in shape)
    check(nd.pad(nd_a, pads), np.pad(np_a, pads), 0)
    check(nd_a, np_a, 0)  # inputs unchanged


@SETTINGS
@given(data=st.data())
def test_setitem_writes_like_numpy(device, data):
    shape = data.draw(shapes.filter(len))
    target = np.zeros(shape, dtype=np.float32)
    array = nd.array(target, device=device)
    index = tuple(
        slice(data.draw(st.integers(0, s - 1)), None, data.draw(st.integers(1, 2))) for s in shape
    )
    view_shape = target[index].shape
    value_shape = tuple(1 if data.draw(st.booleans()) else s for s in view_shape)
    np_value, nd_value = data.draw(strided(value_shape, device))
    target[index] = np_value
    array[index] = nd_value
    check(array, target, 0)
    scalar = data.draw(st.floats(-5, 5, width=32))
    target[index] = scalar
    array[index] = scalar
    check(array, target, 0)
