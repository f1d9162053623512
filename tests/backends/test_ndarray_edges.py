"""The NDArray at the edges, against NumPy: NaN, infinities and signed zeros in comparisons,
zero-length matrix products, shapes that are negative or too large for int64, views that
reach past their buffer, setitem values that do not broadcast, and what errors name.

Every test runs on each enabled NDArray device (the compiled ``cpu()`` and ``cpu_numpy()``).
"""

from __future__ import annotations

import itertools
import operator

import numpy as np
import pytest

import needle as ndl
from needle import backend_ndarray as nd


@pytest.fixture
def device(nd_device):
    """Every NDArray device (conftest's nd_device) under the name these tests use."""
    return nd_device


# ----- comparisons: IEEE's unordered NaN, infinities, -0.0; integer extremes ----------------

COMPARISONS = [operator.lt, operator.le, operator.gt, operator.ge, operator.eq, operator.ne]
EDGE_VALUES = {
    "float32": [np.nan, -np.inf, -1.5, -0.0, 0.0, 1.0, np.inf],
    "float64": [np.nan, -np.inf, -1.5, -0.0, 0.0, 1.0, np.inf],
    "int32": [-(2**31), -1, 0, 1, 2**31 - 1],
    "int64": [-(2**63), -1, 0, 1, 2**63 - 1],
    "bool": [False, True],
}
EDGE_SCALARS = [np.nan, np.inf, -np.inf, -0.0, 0.0, 0.5, 1, -1, True]


def _all_pairs(dtype: str) -> tuple[np.ndarray, np.ndarray]:
    """Every ordered pair of the dtype's edge values, as two arrays of one shape."""
    values = np.array(EDGE_VALUES[dtype], dtype=dtype)
    return tuple(np.meshgrid(values, values))


def _same(got: nd.NDArray, expected: np.ndarray, dtype: str) -> None:
    """The course's rule: a comparison is 1/0 in the dtype, equal to NumPy's booleans."""
    result = got.numpy()
    assert result.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(result, np.asarray(expected).astype(dtype))


@pytest.mark.parametrize("dtype", sorted(EDGE_VALUES))
@pytest.mark.parametrize("op", COMPARISONS, ids=lambda op: op.__name__)
def test_array_comparisons_follow_ieee(device, op, dtype):
    a, b = _all_pairs(dtype)
    _same(
        op(nd.array(a, device=device, dtype=dtype), nd.array(b, device=device, dtype=dtype)),
        op(a, b),
        dtype,
    )


@pytest.mark.parametrize("scalar", EDGE_SCALARS, ids=repr)
@pytest.mark.parametrize("dtype", sorted(EDGE_VALUES))
@pytest.mark.parametrize("op", COMPARISONS, ids=lambda op: op.__name__)
def test_scalar_comparisons_follow_ieee_both_ways_round(device, op, dtype, scalar):
    a, _ = _all_pairs(dtype)
    array = nd.array(a, device=device, dtype=dtype)
    _same(op(array, scalar), op(a, scalar), dtype)
    _same(op(scalar, array), op(scalar, a), dtype)  # reflected: 2 < a is a > 2


def test_comparisons_of_mixed_dtypes_compare_in_the_common_dtype(device):
    ints = np.array([0, 1, 2], dtype=np.int32)
    floats = np.array([np.nan, 1.0, 3.0], dtype=np.float32)
    a, b = nd.array(ints, device=device, dtype="int32"), nd.array(floats, device=device)
    for op in COMPARISONS:
        _same(op(a, b), op(ints, floats), "float64")
        _same(op(b[0:1], a), op(floats[0:1], ints), "float64")  # broadcast NaN


# ----- matrix products with a zero-length axis ---------------------------------------------

ZERO_CASES = [
    (batch_a, batch_b, m, n, p)
    for m, n, p in itertools.product([0, 3, 8], repeat=3)
    for batch_a, batch_b in [
        ((), ()),
        ((0,), ()),
        ((), (0,)),
        ((2,), (2,)),
        ((1,), (0,)),
        ((3, 0), (1,)),
        ((2,), ()),
    ]
    if 0 in (m, n, p) + batch_a + batch_b
]


@pytest.mark.parametrize("product", [operator.matmul, nd.matmul], ids=["@", "nd.matmul"])
@pytest.mark.parametrize("batch_a, batch_b, m, n, p", ZERO_CASES)
def test_matmul_with_a_zero_length_axis_is_numpys(device, product, batch_a, batch_b, m, n, p):
    rng = np.random.default_rng(0)
    a = rng.standard_normal(batch_a + (m, n)).astype(np.float32)
    b = rng.standard_normal(batch_b + (n, p)).astype(np.float32)
    got = product(nd.array(a, device=device), nd.array(b, device=device)).numpy()
    expected = np.matmul(a, b)  # an empty sum is 0; an empty batch an empty result
    assert got.shape == expected.shape
    np.testing.assert_array_equal(got, expected)


# ----- shapes: negative dimensions and element counts beyond int64 -------------------------

HUGE = (2**40, 2**40)  # 2**80 elements


def _shape_entry_points(device):
    """(name, call with a shape) for each NDArray function that takes a shape."""
    one = nd.array([1.0], device=device)
    empty = nd.array(np.zeros(0), device=device)
    return {
        "empty": lambda s: nd.empty(s, device=device),
        "full": lambda s: nd.full(s, 1.0, device=device),
        "zeros": lambda s: nd.zeros(s, device=device),
        "ones": lambda s: device.ones(*s),
        "rand": lambda s: device.rand(*s),
        "randn": lambda s: device.randn(*s),
        "make": lambda s: nd.NDArray.make(s, device=device),
        "broadcast_to": lambda s: one.broadcast_to(s),
        "as_strided": lambda s: one.as_strided(s, (0,) * len(s)),
        "reshape": lambda s: empty.reshape(s + (0,)),
    }


@pytest.mark.parametrize(
    "name",
    [
        "empty",
        "full",
        "zeros",
        "ones",
        "rand",
        "randn",
        "make",
        "broadcast_to",
        "as_strided",
        "reshape",
    ],
)
def test_shapes_beyond_int64_are_refused_by_name(device, name):
    call = _shape_entry_points(device)[name]
    with pytest.raises(ValueError, match=rf"{name}: shape .* is too large"):
        call(HUGE)
    with pytest.raises(ValueError, match=rf"{name}: shape .* is too large"):
        call((2**70,))


@pytest.mark.parametrize(
    "name",
    ["empty", "full", "zeros", "ones", "rand", "randn", "make", "broadcast_to", "as_strided"],
)
def test_negative_dimensions_are_refused_by_name(device, name):
    with pytest.raises(ValueError, match=rf"{name}: negative dimension in shape \(-1, 2\)"):
        _shape_entry_points(device)[name]((-1, 2))


def test_operands_whose_broadcast_is_beyond_int64_are_refused(device):
    rows = nd.array([1.0], device=device).broadcast_to((2**40, 1))
    columns = nd.array([1.0], device=device).broadcast_to((1, 2**40))
    with pytest.raises(
        ValueError,
        match=r"ewise_add: shapes \(\d+, 1\) and \(1, \d+\) "
        r"broadcast to .* more elements than int64",
    ):
        rows + columns


def test_shape_limits(device):
    with pytest.raises(TypeError, match=r"empty: shape entries must be ints, got 2.5"):
        nd.empty((2.5,), device=device)
    with pytest.raises(ValueError, match=r"reshape: the new shape \(-1, -2\) must hold ints"):
        nd.array(np.zeros(4), device=device).reshape((-1, -2))
    assert nd.empty((0, 2**62), device=device).shape == (0, 2**62)  # within int64
    view = nd.array([1.0], device=device).broadcast_to((3, 2**40))  # a stride-0 view is fine
    assert view.shape == (3, 2**40) and view.strides == (0, 0)


@pytest.mark.parametrize("shape", [(-1,), (-2, 1), HUGE])
def test_tensor_broadcast_to_refuses_bad_shapes_when_called(shape):
    with pytest.raises(ValueError, match=r"broadcast_to: (negative dimension|shape .* too large)"):
        ndl.broadcast_to(ndl.Tensor([1.0]), shape)


def test_tensor_reshape_refuses_negative_dimensions_beside_minus_one():
    with pytest.raises(ValueError, match=r"reshape: the new shape \(-1, -2\) must hold ints"):
        ndl.reshape(ndl.Tensor(np.zeros(4)), (-1, -2))
    with pytest.raises(ValueError, match=r"reshape: shape \(0, \d+\) is too large"):
        ndl.reshape(ndl.Tensor(np.zeros(0)), (-1, 2**70))


def test_init_refuses_shapes_beyond_int64():
    with pytest.raises(ValueError, match=r"rand: shape .* is too large"):
        ndl.init.rand(*HUGE)
    with pytest.raises(ValueError, match=r"constant: negative dimension"):
        ndl.init.zeros(-1)


# ----- views over a buffer: make with an offset ---------------------------------------------


def test_make_refuses_a_view_past_its_buffer(device):
    base = nd.array(np.arange(4.0), device=device)
    with pytest.raises(
        ValueError,
        match=r"make: shape \(4,\), strides \(1,\) at offset 2 "
        r"reach elements 2..5 of a buffer of 4",
    ):
        nd.NDArray.make((4,), device=device, handle=base._handle, offset=2)
    with pytest.raises(ValueError, match=r"reach elements -1..0"):
        nd.NDArray.make((2,), strides=(-1,), device=device, handle=base._handle)
    with pytest.raises(ValueError, match=r"strides \(1, 1\) must be one int per dimension"):
        nd.NDArray.make((2,), strides=(1, 1), device=device, handle=base._handle)


def test_every_op_reads_an_offset_view_where_it_lies(device):
    base = np.arange(6.0, dtype=np.float32)
    handle = nd.array(base, device=device)._handle
    view = nd.NDArray.make((3,), device=device, handle=handle, offset=3)
    tail = base[3:]
    assert not view.is_compact()
    np.testing.assert_array_equal(view.compact().numpy(), tail)
    np.testing.assert_array_equal((view + view).numpy(), tail + tail)
    np.testing.assert_array_equal((view * 2).numpy(), tail * 2)
    np.testing.assert_array_equal((view >= 4).numpy(), (tail >= 4).astype(np.float32))
    np.testing.assert_array_equal(view.sum().numpy(), tail.sum())
    np.testing.assert_array_equal(view.reshape((3, 1)).numpy(), tail.reshape(3, 1))
    np.testing.assert_array_equal(nd.flip(view, 0).numpy(), tail[::-1])
    np.testing.assert_array_equal(view.astype("float64").numpy(), tail)
    square = nd.NDArray.make((2, 2), device=device, handle=handle, offset=2)
    np.testing.assert_array_equal(
        (square @ square).numpy(), base[2:].reshape(2, 2) @ base[2:].reshape(2, 2)
    )


# ----- setitem: NumPy's broadcasting rule ------------------------------------------------


def test_setitem_refuses_a_value_that_only_has_the_same_count(device):
    a = nd.array(np.zeros((4, 5)), device=device)
    with pytest.raises(
        ValueError,
        match=r"shape \(3, 2\) cannot be assigned to a view of "
        r"shape \(2, 3\): it does not broadcast",
    ):
        a[0:2, 0:3] = nd.array(np.ones((3, 2)), device=device)
    with pytest.raises(ValueError, match=r"\(shape \(\) as NumPy indexes it\)"):
        a[1, 2] = nd.array([1.0, 2.0], device=device)
    np.testing.assert_array_equal(a.numpy(), np.zeros((4, 5)))  # nothing written


def test_setitem_takes_what_numpy_takes(device):
    a, expected = nd.array(np.zeros((4, 5)), device=device), np.zeros((4, 5))
    values = [
        ((slice(0, 2), slice(0, 3)), np.arange(6.0).reshape(1, 2, 3)),  # extra leading 1
        ((slice(None), 3), np.arange(4.0)),  # NumPy's a[:, 3] is (4,): the kept axis is 1
        ((1,), np.arange(5.0)),
        ((2, slice(2, 3)), np.array([[[7.0]]])),
        ((slice(1, None, 2), slice(None, None, 2)), np.array([[9.0], [8.0]])),
    ]
    for index, value in values:
        a[index] = nd.array(value, device=device)
        expected[index] = value
    np.testing.assert_array_equal(a.numpy(), expected)


# ----- what errors name --------------------------------------------------------------------


def test_too_many_indices_names_the_dimensions_and_shape(device):
    a = nd.array(np.zeros((4, 5)), device=device)
    with pytest.raises(
        IndexError,
        match=r"too many indices \(3\) for a 2-d array of shape "
        r"\(4, 5\)",
    ):
        a[0, 0, 0]
    with pytest.raises(IndexError, match=r"too many indices \(3\) for a 2-d array"):
        a[0, 0, 0] = 1.0


@pytest.mark.parametrize(
    "ids, shown",
    [
        (np.array([1e20]), r"\[1e\+20\]"),
        (np.array([2**63], dtype=np.uint64), r"\[9223372036854775808\]"),
        ([2**64], r"\[18446744073709551616\]"),
        ([-(2**70), 1], r"\[-1180591620717411303424\]"),
    ],
)
def test_ids_beyond_int64_are_reported_as_passed(ids, shown):
    weight = ndl.Tensor(np.ones((5, 2)))
    with pytest.raises(ValueError, match=rf"embedding_lookup: ids must be in \[0, 5\) .*{shown}"):
        ndl.embedding_lookup(weight, ids)
    with pytest.raises(ValueError, match=rf"one_hot: labels must be in \[0, 5\), got {shown}"):
        ndl.init.one_hot(5, ids)
    with pytest.raises(ValueError, match=rf"one_hot: labels must be in \[0, 5\), got {shown}"):
        nd.cpu_numpy().one_hot(5, ids)


def test_one_hot_refuses_fractional_labels_instead_of_truncating():
    with pytest.raises(ValueError, match=r"one_hot: labels must be integers"):
        ndl.init.one_hot(3, np.array([1.7]))
