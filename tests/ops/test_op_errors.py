"""Every user mistake an op checks for raises where it is made, naming the op and the shapes.

One row per error path: the call, the exception type, and the words the message must
contain (the op's name and the shapes or values involved).
"""

from __future__ import annotations

import re

import numpy as np
import pytest

import needle as ndl


def T(*shape: int) -> ndl.Tensor:
    return ndl.Tensor(np.ones(shape))


def _set(t: ndl.Tensor, key, value) -> None:
    t.detach()[key] = value


ERRORS = [
    # elementwise ops: incompatible broadcast shapes name the op and both shapes
    ("add shapes", lambda: ndl.add(T(2, 3), T(4)), ValueError, ["add", "(2, 3)", "(4,)"]),
    ("+ shapes", lambda: T(2, 3) + T(3, 2), ValueError, ["add", "(2, 3)", "(3, 2)"]),
    ("- shapes", lambda: T(2, 3) - T(2), ValueError, ["add", "(2, 3)", "(2,)"]),
    (
        "multiply shapes",
        lambda: ndl.multiply(T(2, 3), T(2)),
        ValueError,
        ["multiply", "(2, 3)", "(2,)"],
    ),
    ("* shapes", lambda: T(3) * T(4), ValueError, ["multiply", "(3,)", "(4,)"]),
    (
        "divide shapes",
        lambda: ndl.divide(T(5, 1, 3), T(2, 2)),
        ValueError,
        ["divide", "(5, 1, 3)", "(2, 2)"],
    ),
    ("power shapes", lambda: ndl.power(T(2), T(3)), ValueError, ["power", "(2,)", "(3,)"]),
    # matmul
    (
        "matmul inner",
        lambda: ndl.matmul(T(2, 3), T(4, 5)),
        ValueError,
        ["matmul: a.shape=(2, 3), b.shape=(4, 5): inner dimensions 3 and 4 differ"],
    ),
    (
        "@ inner",
        lambda: T(2, 2, 3) @ T(2, 5),
        ValueError,
        ["matmul", "(2, 2, 3)", "(2, 5)", "3 and 2"],
    ),
    (
        "matmul 1-D a",
        lambda: ndl.matmul(T(3), T(3, 2)),
        ValueError,
        ["matmul", "(3,)", "(3, 2)", "at least 2 dimensions"],
    ),
    ("matmul 1-D b", lambda: ndl.matmul(T(2, 3), T(3)), ValueError, ["matmul", "(3,)"]),
    (
        "matmul batch",
        lambda: ndl.matmul(T(2, 3, 4), T(3, 4, 5)),
        ValueError,
        ["matmul", "batch", "(2,)", "(3,)"],
    ),
    # reshape / broadcast_to / transpose
    (
        "reshape size",
        lambda: ndl.reshape(T(2, 3), (4, 2)),
        ValueError,
        ["reshape", "(2, 3)", "(4, 2)", "6", "8"],
    ),
    (
        "reshape two -1",
        lambda: ndl.reshape(T(2, 3), (-1, -1)),
        ValueError,
        ["reshape", "one -1", "(-1, -1)"],
    ),
    (
        "reshape -1 no fit",
        lambda: ndl.reshape(T(2, 3), (4, -1)),
        ValueError,
        ["reshape", "(2, 3)", "(4, -1)"],
    ),
    (
        "reshape negative",
        lambda: ndl.reshape(T(2, 3), (-2, -3)),
        ValueError,
        ["reshape", "(-2, -3)"],
    ),
    (
        "broadcast_to",
        lambda: ndl.broadcast_to(T(2, 3), (3, 3)),
        ValueError,
        ["broadcast_to", "(2, 3)", "(3, 3)"],
    ),
    (
        "broadcast_to fewer dims",
        lambda: ndl.broadcast_to(T(2, 3), (3,)),
        ValueError,
        ["broadcast_to", "(2, 3)", "(3,)"],
    ),
    (
        "transpose three axes",
        lambda: ndl.transpose(T(2, 3, 4), (0, 1, 2)),
        ValueError,
        ["transpose", "two", "(0, 1, 2)"],
    ),
    (
        "transpose axis range",
        lambda: ndl.transpose(T(2, 3), (0, 5)),
        ValueError,
        ["transpose", "axis 5", "(2, 3)"],
    ),
    (
        "transpose negative range",
        lambda: ndl.transpose(T(2, 3), (-3, 0)),
        ValueError,
        ["transpose", "axis -3"],
    ),
    (
        "transpose 1-D",
        lambda: ndl.transpose(T(3)),
        ValueError,
        ["transpose", "(3,)", "2 dimensions"],
    ),
    # reductions
    (
        "summation axis range",
        lambda: ndl.summation(T(2, 3), 2),
        ValueError,
        ["summation", "axis 2", "2 dimensions"],
    ),
    (
        "summation negative",
        lambda: ndl.summation(T(2, 3), (0, -3)),
        ValueError,
        ["summation", "axis -3"],
    ),
    (
        "summation of a scalar",
        lambda: ndl.summation(T(), 0),
        ValueError,
        ["summation", "axis 0", "0 dimensions"],
    ),
    (
        "summation repeated",
        lambda: ndl.summation(T(2, 3), (1, -1)),
        ValueError,
        ["summation", "repeated", "(1, -1)"],
    ),
    (
        "summation non-int axis",
        lambda: ndl.summation(T(2, 3), 1.0),
        TypeError,
        ["summation", "ints", "1.0"],
    ),
    ("flip non-int axis", lambda: ndl.flip(T(2, 3), (0, "1")), TypeError, ["flip", "'1'"]),
    ("Tensor.sum axis", lambda: T(2).sum(1), ValueError, ["summation", "axis 1"]),
    (
        "logsumexp axis range",
        lambda: ndl.logsumexp(T(2, 3), 3),
        ValueError,
        ["logsumexp", "axis 3", "2 dimensions"],
    ),
    (
        "logsumexp repeated",
        lambda: ndl.logsumexp(T(2, 3), (0, 0)),
        ValueError,
        ["logsumexp", "repeated"],
    ),
    ("logsoftmax scalar", lambda: ndl.logsoftmax(T()), ValueError, ["logsoftmax", "()"]),
    # stack / split / flip / dilate / undilate / tuples
    ("stack unequal", lambda: ndl.stack([T(2), T(3)], 0), ValueError, ["stack", "(2,)", "(3,)"]),
    ("stack empty", lambda: ndl.stack([], 0), ValueError, ["stack", "at least one"]),
    ("stack axis", lambda: ndl.stack([T(2), T(2)], 3), ValueError, ["stack", "axis 3"]),
    ("stack negative axis", lambda: ndl.stack([T(2), T(2)], -3), ValueError, ["stack", "axis -3"]),
    ("split axis", lambda: ndl.split(T(2, 3), 2), ValueError, ["split", "axis 2", "(2, 3)"]),
    ("split negative axis", lambda: ndl.split(T(2, 3), -3), ValueError, ["split", "axis -3"]),
    ("flip axis", lambda: ndl.flip(T(2, 3), (0, 2)), ValueError, ["flip", "axis 2"]),
    ("dilate negative", lambda: ndl.dilate(T(2, 3), (0,), -1), ValueError, ["dilate", "-1"]),
    ("dilate non-int", lambda: ndl.dilate(T(2, 3), (0,), 1.5), ValueError, ["dilate", "1.5"]),
    ("dilate axis", lambda: ndl.dilate(T(2, 3), (2,), 1), ValueError, ["dilate", "axis 2"]),
    (
        "undilate non-multiple",
        lambda: ndl.undilate(T(5, 3), (0,), 1),
        ValueError,
        ["undilate", "(5, 3)", "multiple", "2"],
    ),
    ("undilate negative", lambda: ndl.undilate(T(4), (0,), -2), ValueError, ["undilate", "-2"]),
    (
        "tuple_get_item range",
        lambda: ndl.tuple_get_item(ndl.make_tuple(T(1), T(2)), 2),
        IndexError,
        ["tuple_get_item", "2", "tuple of 2"],
    ),
    (
        "TensorTuple + length",
        lambda: ndl.make_tuple(T(1)) + ndl.make_tuple(T(1), T(1)),
        TypeError,
        ["TensorTuple", "equal length"],
    ),
    # scalar ops given something that is not a real number
    ("add_scalar str", lambda: ndl.add_scalar(T(2), "1"), TypeError, ["add_scalar", "str"]),
    ("+ str", lambda: T(2) + "1", TypeError, ["add_scalar", "str"]),
    ("mul_scalar list", lambda: ndl.mul_scalar(T(2), [2.0]), TypeError, ["mul_scalar", "list"]),
    ("* ndarray", lambda: T(2) * np.ones(2), TypeError, ["mul_scalar", "ndarray"]),
    (
        "power_scalar None",
        lambda: ndl.power_scalar(T(2), None),
        TypeError,
        ["power_scalar", "NoneType"],
    ),
    (
        "divide_scalar complex",
        lambda: ndl.divide_scalar(T(2), 1j),
        TypeError,
        ["divide_scalar", "complex"],
    ),
    ("/ bool", lambda: T(2) / True, TypeError, ["divide_scalar", "bool"]),
    (
        "fused_add_scalars str",
        lambda: ndl.fused_add_scalars(T(2), 1.0, "x"),
        TypeError,
        ["fused_add_scalars", "str"],
    ),
    # misc tensor API
    ("item of many", lambda: T(2).item(), ValueError, ["item", "(2,)"]),
    ("len of scalar", lambda: len(T()), TypeError, ["0-d"]),
    # indexing: the axis, the index and the size; the key and the shape
    ("index out of range", lambda: T(2, 3)[:, 5], IndexError, ["getitem", "5", "axis 1", "size 3"]),
    ("negative index out of range", lambda: T(2, 3)[-3], IndexError, ["-3", "axis 0", "size 2"]),
    ("array index out of range", lambda: T(2, 3)[[0, 2]], IndexError, ["index 2", "axis 0"]),
    ("too many indices", lambda: T(2, 3)[0, 1, 2], IndexError, ["too many indices", "(2, 3)"]),
    ("two ellipses", lambda: T(2, 3)[..., ...], IndexError, ["single ellipsis"]),
    (
        "mask of the wrong shape",
        lambda: T(2, 3)[np.ones((3,), bool)],
        IndexError,
        ["mask of shape (3,)", "(2, 3)", "sizes (2,)"],
    ),
    ("float index array", lambda: T(2, 3)[np.array([0.5])], IndexError, ["integers", "float64"]),
    ("float index", lambda: T(2, 3)[1.0], TypeError, ["getitem", "float"]),
    ("slice step 0", lambda: T(2, 3)[::0], ValueError, ["step cannot be zero"]),
    (
        "setitem value shape",
        lambda: _set(T(2, 3), 0, np.ones(4)),
        ValueError,
        ["setitem", "(4,)", "(3,)"],
    ),
    (
        "gather index ndim",
        lambda: ndl.gather(T(2, 3), 1, np.zeros(2, int)),
        ValueError,
        ["gather", "(2,)", "(2, 3)"],
    ),
    (
        "gather index out of range",
        lambda: ndl.gather(T(2, 3), 1, np.full((2, 1), 3)),
        IndexError,
        ["gather", "3", "axis 1", "size 3"],
    ),
    # joining: every shape
    (
        "cat shapes",
        lambda: ndl.cat([T(2, 3), T(2, 4), T(1, 3)], dim=0),
        ValueError,
        ["cat", "(2, 3)", "(2, 4)", "(1, 3)"],
    ),
    ("cat ndim", lambda: ndl.cat([T(2, 3), T(3)]), ValueError, ["cat", "(2, 3)", "(3,)"]),
    (
        "cat dim out of range",
        lambda: ndl.cat([T(2, 3), T(2, 3)], dim=2),
        ValueError,
        ["cat", "axis 2", "out of range"],
    ),
    (
        "split sizes",
        lambda: ndl.split_with_sizes(T(5), [2, 2]),
        ValueError,
        ["split_with_sizes", "[2, 2]", "5"],
    ),
    # dims and where
    (
        "reduction dim out of range",
        lambda: ndl.mean(T(2, 3), dim=2),
        ValueError,
        ["mean", "axis 2", "out of range"],
    ),
    ("argmax dim out of range", lambda: ndl.argmax(T(2, 3), -3), ValueError, ["argmax", "-3"]),
    ("axis and dim", lambda: ndl.amax(T(2, 3), 0, dim=1), TypeError, ["amax", "not both"]),
    ("unsqueeze dim", lambda: ndl.unsqueeze(T(2, 3), 4), ValueError, ["unsqueeze", "4"]),
    ("permute", lambda: ndl.permute(T(2, 3), 0, 0), ValueError, ["permute", "repeated"]),
    (
        "where shapes",
        lambda: ndl.where(T(2, 3) > 0, T(2, 3), T(4)),
        ValueError,
        ["where", "(2, 3)", "(4,)"],
    ),
    (
        "where condition dtype",
        lambda: ndl.where(T(2), T(2), T(2)),
        TypeError,
        ["where", "bool", "float"],
    ),
    ("compare shapes", lambda: T(2, 3) > T(2), ValueError, ["gt", "(2, 3)", "(2,)"]),
    ("maximum shapes", lambda: ndl.maximum(T(2, 3), T(2)), ValueError, ["maximum", "(2,)"]),
    (
        "sin of integers",
        lambda: ndl.sin(ndl.Tensor([1], dtype="int32")),
        TypeError,
        ["Sin", "int32"],
    ),
]


@pytest.mark.parametrize("call, exc, words", [pytest.param(*e[1:], id=e[0]) for e in ERRORS])
def test_error_message(call, exc, words):
    with pytest.raises(exc) as info:
        call()
    message = str(info.value)
    for word in words:
        assert word in message, f"{word!r} missing from: {message}"


NON_TENSOR = np.ones((2, 2))

NEEDS_TENSORS = [
    ("add", lambda: ndl.add(NON_TENSOR, T(2, 2))),
    ("add", lambda: ndl.add(T(2, 2), [[1.0, 1.0]])),
    ("multiply", lambda: ndl.multiply(NON_TENSOR, T(2, 2))),
    ("divide", lambda: ndl.divide(T(2, 2), NON_TENSOR)),
    ("power", lambda: ndl.power(NON_TENSOR, T(2, 2))),
    ("add_scalar", lambda: ndl.add_scalar(NON_TENSOR, 1)),
    ("mul_scalar", lambda: ndl.mul_scalar(NON_TENSOR, 1)),
    ("divide_scalar", lambda: ndl.divide_scalar(NON_TENSOR, 1)),
    ("power_scalar", lambda: ndl.power_scalar(NON_TENSOR, 2)),
    ("negate", lambda: ndl.negate(NON_TENSOR)),
    ("log", lambda: ndl.log(NON_TENSOR)),
    ("exp", lambda: ndl.exp(NON_TENSOR)),
    ("relu", lambda: ndl.relu(NON_TENSOR)),
    ("tanh", lambda: ndl.tanh(NON_TENSOR)),
    ("sigmoid", lambda: ndl.sigmoid(NON_TENSOR)),
    ("transpose", lambda: ndl.transpose(NON_TENSOR)),
    ("reshape", lambda: ndl.reshape(NON_TENSOR, (4,))),
    ("broadcast_to", lambda: ndl.broadcast_to(NON_TENSOR, (2, 2))),
    ("summation", lambda: ndl.summation(NON_TENSOR)),
    ("matmul", lambda: ndl.matmul(NON_TENSOR, T(2, 2))),
    ("matmul", lambda: ndl.matmul(T(2, 2), NON_TENSOR)),
    ("logsumexp", lambda: ndl.logsumexp(NON_TENSOR)),
    ("logsoftmax", lambda: ndl.logsoftmax(NON_TENSOR)),
    ("flip", lambda: ndl.flip(NON_TENSOR, 0)),
    ("dilate", lambda: ndl.dilate(NON_TENSOR, 0, 1)),
    ("undilate", lambda: ndl.undilate(NON_TENSOR, 0, 1)),
    ("stack", lambda: ndl.stack([T(2, 2), NON_TENSOR], 0)),
    ("split", lambda: ndl.split(NON_TENSOR, 0)),
    ("make_tuple", lambda: ndl.make_tuple(T(2), NON_TENSOR)),
    ("fused_add_scalars", lambda: ndl.fused_add_scalars(NON_TENSOR, 1.0, 2.0)),
    ("tuple_get_item", lambda: ndl.tuple_get_item((T(2), T(2)), 0)),
]


@pytest.mark.parametrize(
    "name, call", NEEDS_TENSORS, ids=[f"{n}-{i}" for i, (n, _) in enumerate(NEEDS_TENSORS)]
)
def test_non_tensor_argument_raises_type_error(name, call):
    with pytest.raises(TypeError, match=rf"^{re.escape(name)}: .*Tensor"):
        call()


# ----- the engine's invariant --------------------------------------------------------------------


class SumsTooMuch(ndl.autograd.TensorOp):
    """Identity whose gradient forgets the input's shape (returns a scalar)."""

    def compute(self, a):
        return a + 0

    def gradient(self, out_grad, node):
        return ndl.summation(out_grad)


def test_gradient_of_the_wrong_shape_names_the_op_class():
    x = T(2, 3)
    y = SumsTooMuch()(x)
    with pytest.raises(RuntimeError, match=r"SumsTooMuch\.gradient.*shape \(\).*\(2, 3\)"):
        y.backward()


def test_errors_are_raised_before_anything_is_computed():
    """A rejected call builds no node: the engine's counter does not move."""
    import gc

    import needle.autograd as autograd

    a, b = T(2, 3), T(4, 5)
    gc.collect()
    start = autograd.TENSOR_COUNTER
    for call in (lambda: a @ b, lambda: ndl.reshape(a, (5,)), lambda: ndl.summation(a, 7)):
        with pytest.raises(ValueError):
            call()
    gc.collect()
    assert autograd.TENSOR_COUNTER == start


def test_subtracting_a_non_number_names_the_op():
    with pytest.raises(TypeError, match="subtract: expected a real scalar, got str"):
        ndl.Tensor([1.0]) - "a"


def test_ndarray_plus_tensor_is_refused_with_a_hint():
    with pytest.raises(
        TypeError, match=r"add_scalar: expected a real scalar, got ndarray of shape \(2,\)"
    ):
        np.array([1.0, 2.0]) + ndl.Tensor([1.0])


@pytest.mark.parametrize("scalar", [np.float64(0.5), np.array([0.5]), np.array([[0.5]])])
@pytest.mark.parametrize("op", ["add_scalar", "mul_scalar", "divide_scalar", "power_scalar"])
def test_scalar_ops_take_numpy_scalars_and_size_one_arrays(op, scalar):
    x = np.array([[1.0, 2.0, 3.0]], dtype=np.float32)
    reference = {
        "add_scalar": x + 0.5,
        "mul_scalar": x * 0.5,
        "divide_scalar": x / 0.5,
        "power_scalar": x**0.5,
    }[op]
    out = getattr(ndl, op)(ndl.Tensor(x), scalar=scalar)
    assert out.shape == x.shape and out.dtype == "float32"
    np.testing.assert_allclose(out.numpy(), reference, rtol=1e-6)


def test_one_hot_rejects_labels_out_of_range():
    with pytest.raises(
        ValueError, match=r"one_hot: labels must be in \[0, 3\), got \[-1\] \(out of range\)"
    ):
        ndl.init.one_hot(3, np.array([-1, 1]))
    assert ndl.init.one_hot(3, [2, 0]).numpy().tolist() == [[0, 0, 1], [1, 0, 0]]
