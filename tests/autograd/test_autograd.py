"""The graph machinery: topological order, adjoint accumulation, graph lifetime, modes."""

from __future__ import annotations

import gc
import inspect

import numpy as np
import pytest
from helpers import tensor

import needle as ndl
import needle.autograd as autograd
from needle.autograd import AnomalyError, compute_gradient_of_variables, find_topo_sort
from needle.testing import GradcheckError, gradcheck

ND = ndl.backends.BACKEND == "nd"


def leaf(values, **kwargs) -> ndl.Tensor:
    return ndl.Tensor(np.asarray(values, dtype=np.float64), dtype="float64", **kwargs)


def shares_array(a: ndl.Tensor, b: ndl.Tensor) -> bool:
    """Whether two tensors hold the same memory (NDArray buffer or NumPy memory)."""
    x, y = a.realize_cached_data(), b.realize_cached_data()
    return x._handle is y._handle if ND else np.shares_memory(x, y)


def op_name(t: ndl.Value) -> str | None:
    return type(t.op).__name__ if t.op is not None else None


# ----- find_topo_sort --------------------------------------------------------------------------


def test_topo_sort_is_post_order_with_inputs_left_to_right():
    a, b = leaf([1.0]), leaf([2.0])
    c = a + b
    d = c * a
    assert find_topo_sort([d]) == [a, b, c, d]
    e = b * a
    assert find_topo_sort([e]) == [b, a, e]


def test_topo_sort_lists_each_node_once():
    a, b = leaf([1.0]), leaf([2.0])
    left, right = a * b, b * a
    out = left + right
    order = find_topo_sort([out])
    assert order == [a, b, left, right, out]
    assert len(order) == len({id(n) for n in order})


def test_topo_sort_of_several_roots_shares_nodes():
    a, b = leaf([1.0]), leaf([2.0])
    c = a + b
    d = c * c
    e = ndl.exp(a)
    assert find_topo_sort([d, e]) == [a, b, c, d, e]
    assert find_topo_sort([e, d]) == [a, e, b, c, d]
    assert find_topo_sort([d, c]) == [a, b, c, d]


def test_topo_sort_follows_operator_lowering():
    x, y = leaf([1.0]), leaf([2.0])
    out = x - y  # EWiseAdd(x, Negate(y))
    assert [op_name(n) for n in find_topo_sort([out])] == [None, None, "Negate", "EWiseAdd"]


# ----- adjoints ----------------------------------------------------------------------------------


def test_adjoint_is_complete_before_it_is_propagated():
    # b = a + a; c = b + b: b's adjoint is 2 only after both uses in c; a gets 2 + 2 = 4.
    a = leaf([3.0])
    b = a + a
    c = b + b
    c.backward()
    assert c.grad.numpy().tolist() == [1.0]
    assert b.grad.numpy().tolist() == [2.0]
    assert a.grad.numpy().tolist() == [4.0]


def test_node_used_twice_and_on_two_paths():
    x = leaf([2.0, -1.0])
    y = x * x + ndl.exp(x) * x  # x reaches the output four times through three nodes
    y.backward()
    values = np.array([2.0, -1.0])
    np.testing.assert_allclose(x.grad.numpy(), 2 * values + np.exp(values) * (values + 1))


def test_backward_sets_grad_on_every_node_in_the_input_shape():
    a, b = leaf(np.ones((2, 3))), leaf(np.ones(3))
    out = ndl.summation(ndl.exp(a * b) + b, 0)
    out.backward()
    for node in find_topo_sort([out]):
        assert node.grad is not None, f"{op_name(node)} got no .grad"
        assert node.grad.shape == node.shape, f"{op_name(node)}: {node.grad.shape} vs {node.shape}"


def test_second_backward_replaces_grad_instead_of_accumulating():
    x = leaf([1.0, 2.0])
    (x * 3.0).sum().backward()
    assert x.grad.numpy().tolist() == [3.0, 3.0]
    (x * 3.0).sum().backward()
    assert x.grad.numpy().tolist() == [3.0, 3.0], "grads must be replaced, unlike PyTorch"
    (x * 5.0).sum().backward()
    assert x.grad.numpy().tolist() == [5.0, 5.0]


def test_compute_gradient_of_variables_with_explicit_out_grad():
    x = leaf([1.0, 2.0])
    y = x * x
    compute_gradient_of_variables(y, leaf([10.0, 100.0], requires_grad=False))
    assert x.grad.numpy().tolist() == [20.0, 400.0]
    y.backward(leaf([1.0, -1.0], requires_grad=False))
    assert x.grad.numpy().tolist() == [2.0, -4.0]


def test_default_out_grad_is_ones():
    x = leaf(np.arange(6.0).reshape(2, 3))
    (x * 2.0).backward()
    np.testing.assert_array_equal(x.grad.numpy(), np.full((2, 3), 2.0))


def test_input_that_does_not_require_grad_gets_no_grad():
    x, c = leaf([1.0]), leaf([2.0], requires_grad=False)
    (x * c).backward()
    assert x.grad.numpy().tolist() == [2.0]
    assert c.grad is None


# ----- detach, data, no_grad -------------------------------------------------------------------


def test_detach_shares_the_array_outside_the_graph():
    x = leaf([1.0, 2.0])
    y = x * 2.0
    d = y.detach()
    assert not d.requires_grad and d.op is None and d.inputs == () and d.is_leaf()
    assert shares_array(d, y)
    with pytest.raises(RuntimeError):
        (d * 2.0).backward()


def test_data_getter_and_setter():
    x = leaf([1.0, 2.0])
    data = x.data
    assert not data.requires_grad and data.op is None
    assert shares_array(data, x)
    x.data = leaf([5.0, 6.0], requires_grad=False)
    assert x.numpy().tolist() == [5.0, 6.0]
    assert x.requires_grad, "setting .data keeps the tensor a parameter"


def test_data_setter_rejects_wrong_dtype_and_non_tensors():
    x = leaf([1.0, 2.0])
    with pytest.raises(TypeError, match="float32.*float64"):
        x.data = ndl.Tensor(np.array([1.0, 2.0], np.float32))
    with pytest.raises(TypeError, match="expected a Tensor"):
        x.data = np.array([1.0, 2.0])


def test_no_grad_builds_no_graph_and_restores_the_mode():
    x = leaf([1.0, 2.0])
    assert ndl.is_grad_enabled()
    with ndl.no_grad():
        assert not ndl.is_grad_enabled()
        y = ndl.exp(x * 2.0) + x
    assert not y.requires_grad and y.op is None and y.inputs == ()
    assert ndl.is_grad_enabled()
    with pytest.raises(ZeroDivisionError):
        with ndl.no_grad():
            _ = 1 / 0
    assert ndl.is_grad_enabled(), "no_grad must restore the mode after an exception"


def test_ops_on_constants_keep_no_graph():
    c = leaf([1.0], requires_grad=False)
    y = ndl.log(c + 1.0)
    assert not y.requires_grad and y.op is None


# ----- graph lifetime ---------------------------------------------------------------------------


def test_tensor_counter_returns_to_start_after_graph_is_dropped():
    gc.collect()
    start = autograd.TENSOR_COUNTER
    x = leaf(np.ones((3, 4)))
    w = leaf(np.ones((4, 2)))
    loss = ndl.logsumexp(ndl.relu(x @ w), 1).sum()
    loss.backward()
    assert autograd.TENSOR_COUNTER > start
    del x, w, loss
    gc.collect()
    assert autograd.TENSOR_COUNTER == start


def test_tensor_counter_ignores_a_failed_constructor():
    gc.collect()
    start = autograd.TENSOR_COUNTER
    with pytest.raises(ValueError):
        ndl.Tensor([[1.0, 2.0], [3.0]])  # ragged
    gc.collect()
    assert autograd.TENSOR_COUNTER == start


def test_deep_graph_backpropagates_without_recursion_error():
    x = leaf([1.0])
    y = x
    for _ in range(10_000):
        y = y * 1.0001 + 0.0
    y.backward()
    np.testing.assert_allclose(x.grad.numpy(), [1.0001**10_000])
    gc.collect()
    start = autograd.TENSOR_COUNTER
    del y
    gc.collect()
    assert autograd.TENSOR_COUNTER < start, "a deep graph must be freeable"


# ----- operator lowering ----------------------------------------------------------------------


def test_operator_lowering():
    x, y = leaf([2.0]), leaf([4.0])
    assert op_name(x + y) == "EWiseAdd"
    assert op_name(x * y) == "EWiseMul"
    assert op_name(x / y) == "EWiseDiv"
    assert op_name(x**y) == "EWisePow"
    assert op_name(-x) == "Negate"
    sub = x - y
    assert op_name(sub) == "EWiseAdd" and sub.inputs[0] is x
    assert op_name(sub.inputs[1]) == "Negate" and sub.inputs[1].inputs[0] is y


@pytest.mark.parametrize(
    "expr, op, scalar",
    [
        (lambda x: x + 3, "AddScalar", 3),
        (lambda x: 3 + x, "AddScalar", 3),
        (lambda x: x - 3, "AddScalar", -3),
        (lambda x: x * 3, "MulScalar", 3),
        (lambda x: 3 * x, "MulScalar", 3),
        (lambda x: x / 3, "DivScalar", 3),
        (lambda x: x**3, "PowerScalar", 3),
        (lambda x: x**0.5, "PowerScalar", 0.5),
    ],
)
def test_scalar_operator_lowering(expr, op, scalar):
    x = leaf([2.0])
    out = expr(x)
    assert op_name(out) == op and out.op.scalar == scalar and out.inputs == (x,)


def test_reflected_sub_and_div_lowering():
    x = leaf([2.0])
    rsub = 3 - x  # AddScalar(3) of Negate(x)
    assert op_name(rsub) == "AddScalar" and rsub.op.scalar == 3
    assert op_name(rsub.inputs[0]) == "Negate"
    assert rsub.numpy().tolist() == [1.0]
    rdiv = 3 / x  # MulScalar(3) of PowerScalar(-1)
    assert op_name(rdiv) == "MulScalar" and rdiv.op.scalar == 3
    assert op_name(rdiv.inputs[0]) == "PowerScalar" and rdiv.inputs[0].op.scalar == -1
    assert rdiv.numpy().tolist() == [1.5]


def test_matmul_method_and_operator():
    a, b = leaf(np.ones((2, 3))), leaf(np.ones((3, 1)))
    assert op_name(a @ b) == "MatMul" and op_name(a.matmul(b)) == "MatMul"


# ----- dtypes -----------------------------------------------------------------------------------


@pytest.mark.skipif(ND, reason="NumPy's dtype inference is the np backend's rule")
def test_dtype_inference():
    assert ndl.Tensor([1.0]).dtype == np.float64
    assert ndl.Tensor([1, 2]).dtype == np.int64
    assert ndl.Tensor(np.ones(2, np.float32)).dtype == np.float32
    assert ndl.Tensor([1.0], dtype="float32").dtype == np.float32
    t32 = ndl.Tensor(np.ones(2, np.float32))
    assert ndl.Tensor(t32).dtype == np.float32, "Tensor(tensor) keeps the dtype"
    assert ndl.Tensor(t32, dtype="float64").dtype == np.float64


@pytest.mark.skipif(not ND, reason="the nd backend's dtype rule (spec: float32 by default)")
def test_dtype_is_float32_unless_given_under_nd():
    for data in ([1.0], [1, 2], np.ones(2), np.ones(2, np.int64), np.float64(2.0), [True]):
        assert ndl.Tensor(data).dtype == "float32", data
    assert ndl.Tensor(np.ones(2), dtype="float64").dtype == np.float64
    t64 = ndl.Tensor([1.0], dtype="float64")
    assert ndl.Tensor(t64).dtype == np.float64, "Tensor(tensor) keeps the dtype"
    assert ndl.Tensor(t64.realize_cached_data()).dtype == np.float64, "an NDArray keeps its own"
    assert ndl.Tensor([1.0, 0.0], dtype="bool").dtype == "bool", "bool is stored as bool"
    assert ndl.Tensor([1], dtype="int64").dtype == "int64", "an explicit integer dtype is kept"
    with pytest.raises(TypeError, match="float16.*not supported"):
        ndl.Tensor([1], dtype="float16")


@pytest.mark.parametrize("scalar", [2, 2.5, np.float64(2.5), np.float32(2.5), np.int64(2)])
def test_float32_with_scalars_stays_float32(scalar):
    x = ndl.Tensor(np.ones(3, np.float32))
    for out in [
        x + scalar,
        scalar + x,
        x - scalar,
        scalar - x,
        x * scalar,
        scalar * x,
        x / scalar,
        scalar / x,
        x**scalar,
    ]:
        assert out.dtype == np.float32, f"{op_name(out)} with {scalar!r} gave {out.dtype}"


def test_repr():
    assert repr(leaf([1.0])).startswith("needle.Tensor(")


# ----- backward errors ---------------------------------------------------------------------------


def test_backward_without_requires_grad_raises():
    with pytest.raises(RuntimeError, match="does not require grad"):
        leaf([1.0], requires_grad=False).backward()
    with pytest.raises(RuntimeError, match="does not require grad"):
        (leaf([1.0], requires_grad=False) * 2.0).backward()


def test_backward_with_wrong_out_grad_shape_raises():
    y = leaf(np.ones((2, 3))) * 2.0
    with pytest.raises(ValueError, match=r"out_grad.shape=\(3, 2\).*\(2, 3\)"):
        y.backward(leaf(np.ones((3, 2)), requires_grad=False))


# ----- lazy mode ---------------------------------------------------------------------------------


def test_lazy_mode_computes_only_on_realize(monkeypatch):
    monkeypatch.setattr(autograd, "LAZY_MODE", True)
    x = leaf([1.0, 2.0])
    y = ndl.exp(x)
    z = y * 2.0 + 1.0
    assert y.cached_data is None and z.cached_data is None
    np.testing.assert_allclose(z.realize_cached_data(), 2 * np.exp([1.0, 2.0]) + 1)
    assert y.cached_data is not None
    z.backward()
    np.testing.assert_allclose(x.grad.numpy(), 2 * np.exp([1.0, 2.0]))


def test_lazy_mode_flag_via_try_finally():
    autograd.LAZY_MODE = True
    try:
        y = ndl.negate(leaf([1.0]))
        assert y.cached_data is None
        assert y.numpy().tolist() == [-1.0]
    finally:
        autograd.LAZY_MODE = False
    assert ndl.negate(leaf([1.0])).cached_data is not None


# ----- TensorTuple -------------------------------------------------------------------------------


def test_tensor_tuple_protocol():
    a, b = leaf([1.0]), leaf([2.0, 3.0])
    t = ndl.make_tuple(a, b)
    assert isinstance(t, ndl.TensorTuple) and len(t) == 2
    assert t[0].numpy().tolist() == [1.0] and t[-1].numpy().tolist() == [2.0, 3.0]
    items = t.tuple()
    assert isinstance(items, tuple) and all(isinstance(i, ndl.Tensor) for i in items)
    assert [i.numpy().tolist() for i in tuple(t)] == [[1.0], [2.0, 3.0]]
    doubled = t + t
    assert isinstance(doubled, ndl.TensorTuple)
    assert [i.numpy().tolist() for i in doubled] == [[2.0], [4.0, 6.0]]
    detached = t.detach()
    assert isinstance(detached, ndl.TensorTuple) and not detached.requires_grad
    assert detached.op is None and len(detached) == 2
    assert repr(t).startswith("needle.TensorTuple")
    with pytest.raises(IndexError):
        t[2]


def test_gradient_through_a_tensor_tuple():
    x = leaf([1.0, 2.0, 3.0])
    parts = ndl.split(x, 0)
    (parts[0] * parts[2] + parts[1]).backward()
    assert x.grad.numpy().tolist() == [3.0, 1.0, 1.0]


# ----- detect_anomaly ----------------------------------------------------------------------------


def test_anomaly_in_forward_names_the_op_and_the_line():
    x = leaf([1.0, -1.0])
    with ndl.detect_anomaly(), np.errstate(invalid="ignore"):
        with pytest.raises(AnomalyError) as info:
            line = inspect.currentframe().f_lineno + 1
            ndl.log(x)
    message = str(info.value)
    assert "Log" in message and "NaN" in message and "(2,)" in message
    assert f"{__file__}:{line}" in message


def test_anomaly_only_in_backward_is_caught():
    x = leaf([0.0, 4.0])
    with ndl.detect_anomaly(), np.errstate(divide="ignore"):
        y = (x**0.5).sum()  # forward is finite: sqrt(0) = 0
        with pytest.raises(AnomalyError, match="Inf"):
            y.backward()  # d sqrt(x)/dx = 0.5 / sqrt(x) is inf at 0


def test_anomaly_detection_is_off_by_default():
    if autograd._anomaly_enabled:
        pytest.skip("NEEDLE_DETECT_ANOMALY is set in the environment")
    with np.errstate(invalid="ignore"):
        out = ndl.log(leaf([-1.0]))
    assert np.isnan(out.numpy()).all()


# ----- gradcheck ---------------------------------------------------------------------------------


class WrongDouble(ndl.autograd.TensorOp):
    """Computes 2a but claims the gradient is 3 (and is off at element (1, 2) only, if asked)."""

    def __init__(self, only_one_element: bool = False):
        self.only_one_element = only_one_element

    def compute(self, a):
        return a * 2

    def gradient(self, out_grad, node):
        if self.only_one_element:
            wrong = np.full(node.shape, 2.0)
            wrong[1, 2] = 2.5
            return out_grad * ndl.Tensor(wrong, requires_grad=False)
        return out_grad * 3


class WrongSecondInput(ndl.autograd.TensorOp):
    """a * b with the gradient of b wrong."""

    def compute(self, a, b):
        return a * b

    def gradient(self, out_grad, node):
        a, b = node.inputs
        return out_grad * b, out_grad * b


def test_gradcheck_accepts_correct_ops():
    x = np.array([[0.5, -1.0, 2.0]])
    assert gradcheck(lambda t: (t * t).sum(), x) is True
    assert gradcheck(lambda a, b: ndl.logsumexp(a @ b, 1), np.ones((2, 3)), np.eye(3)) is True


def test_gradcheck_names_input_and_element_of_a_wrong_gradient():
    with pytest.raises(GradcheckError, match=r"input 0 \(shape \(2, 3\)\) element \(1, 2\)"):
        gradcheck(lambda a: WrongDouble(only_one_element=True)(a), np.ones((2, 3)))
    with pytest.raises(GradcheckError, match=r"input 0 .*analytic .*3.* vs numeric .*2"):
        gradcheck(lambda a: WrongDouble()(a), np.ones(1))
    with pytest.raises(GradcheckError, match=r"input 1 \(shape \(3,\)\)"):
        gradcheck(lambda a, b: WrongSecondInput()(a, b), np.ones(3), np.full(3, 2.0))


def test_gradcheck_runs_in_float64_and_leaves_the_global_seed_alone():
    np.random.seed(123)
    expected = np.random.rand()
    np.random.seed(123)
    gradcheck(lambda t: ndl.exp(t).sum(), np.ones(3, np.float32))
    assert np.random.rand() == expected


def test_device_is_spelled_as_in_the_course():
    # Course code branches on str(device) and builds file names from it.
    assert str(ndl.cpu()) == "cpu()" and repr(ndl.cpu()) == "cpu()"
    assert str(ndl.Tensor([1.0]).device) == "cpu()"


def _ops_made_by_backward(monkeypatch, steps: int) -> int:
    """How many ops one backward through a split into ``steps`` parts creates."""
    x = tensor(np.arange(steps * 3, dtype=np.float64).reshape(steps, 3))
    loss = ndl.ops.summation(
        ndl.ops.stack([p * float(i + 1) for i, p in enumerate(ndl.ops.split(x, 0))], 0)
    )
    made = []
    original = ndl.Tensor.make_from_op.__func__
    monkeypatch.setattr(
        ndl.Tensor,
        "make_from_op",
        classmethod(lambda cls, op, ins: made.append(op) or original(cls, op, ins)),
    )
    loss.backward()
    monkeypatch.undo()
    return len(made)


def test_backward_through_a_split_makes_ops_linear_in_the_parts(monkeypatch):
    """Each element taken from a split hands its adjoint to that element alone: no tuple of
    zeros per element (T parts used to make T² additions)."""
    small, large = _ops_made_by_backward(monkeypatch, 10), _ops_made_by_backward(monkeypatch, 40)
    assert large < 5 * small, (small, large)


@pytest.mark.parametrize("create_graph", [None, True])
def test_split_gradients_with_unused_parts_and_their_second_derivatives(create_graph):
    x = tensor(np.array([[1.0, 2.0], [3.0, -1.0], [0.5, 4.0], [2.0, 2.0]]))
    parts = ndl.ops.split(x, 0)
    loss = ndl.ops.summation(parts[0] * parts[0] + parts[2] * parts[2] * 3.0 + parts[0])
    loss.backward(create_graph=create_graph)
    expected = np.array([[3.0, 5.0], [0.0, 0.0], [3.0, 24.0], [0.0, 0.0]])  # 2x+1, 0, 6x, 0
    np.testing.assert_array_equal(x.grad.numpy(), expected)
    ndl.ops.summation(x.grad).backward()
    np.testing.assert_array_equal(x.grad.numpy(), [[2.0, 2.0], [0.0, 0.0], [6.0, 6.0], [0.0, 0.0]])
