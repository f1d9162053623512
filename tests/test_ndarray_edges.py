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

DEVICES = [
    pytest.param(d, id=d.name)
    if d.enabled()
    else pytest.param(d, id=d.name, marks=pytest.mark.skip(reason=f"{d} is not enabled here"))
    for d in nd.all_devices()
]


@pytest.fixture(params=DEVICES)
def device(request):
    return request.param


# ----- comparisons: IEEE's unordered NaN, infinities, -0.0; integer extremes ----------------

COMPARISONS = [operator.lt, operator.le, operator.gt, operator.ge, operator.eq, operator.ne]
EDGE_VALUES = {
    "float32": [np.nan, -np.inf, -1.5, -0.0, 0.0, 1.0, np.inf],
    "float64": [np.nan, -np.inf, -1.5, -0.0, 0.0, 1.0, np.inf],
    "int32": [-2**31, -1, 0, 1, 2**31 - 1],
    "int64": [-2**63, -1, 0, 1, 2**63 - 1],
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
    _same(op(nd.array(a, device=device, dtype=dtype), nd.array(b, device=device, dtype=dtype)),
          op(a, b), dtype)


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
    for batch_a, batch_b in [((), ()), ((0,), ()), ((), (0,)), ((2,), (2,)), ((1,), (0,)),
                             ((3, 0), (1,)), ((2,), ())]
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


# ----- setitem: NumPy's broadcasting rule ------------------------------------------------


def test_setitem_refuses_a_value_that_only_has_the_same_count(device):
    a = nd.array(np.zeros((4, 5)), device=device)
    with pytest.raises(ValueError, match=r"shape \(3, 2\) cannot be assigned to a view of "
                                         r"shape \(2, 3\): it does not broadcast"):
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
