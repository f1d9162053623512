"""The everyday tensor with PyTorch habits: indexing, comparisons, reductions' tie rules,
``t[key] = v``, the functional losses' options and interop with NumPy and PyTorch.

Forward values and gradients of every op are in ``test_ops.py``'s table; this file checks
the behaviour around them. It runs on whichever backend ``NEEDLE_BACKEND`` selects.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import ND, tensor

import needle as ndl
import needle.nn.functional as F
from needle.testing import gradcheck


def _x() -> ndl.Tensor:
    return tensor(np.arange(12.0).reshape(3, 4))


# ----- the snippets a PyTorch user types first -----------------------------------------------


def test_pytorch_habit_snippets():
    x = _x()
    a = x.numpy()
    np.testing.assert_array_equal(x[:, 1:3].numpy(), a[:, 1:3])
    mask = x > 5
    np.testing.assert_array_equal(x[mask].numpy(), a[a > 5])
    idx = ndl.Tensor([2, 0, 2], dtype="int64")
    np.testing.assert_array_equal(x[idx].numpy(), a[[2, 0, 2]])
    logits = tensor(np.array([[0.1, 2.0, -1.0], [3.0, 0.0, 0.5], [0.0, 0.2, 0.1]]))
    y = ndl.Tensor([1, 2, 1], dtype="int64")
    accuracy = (logits.argmax(1) == y).float().mean()
    assert accuracy.dtype == "float32" and accuracy.item() == pytest.approx(2 / 3)
    np.testing.assert_array_equal(ndl.cat([x, x[:1]], dim=0).numpy(), np.concatenate([a, a[:1]]))
    loss = F.cross_entropy(logits, y, label_smoothing=0.1)
    assert loss.shape == () and np.isfinite(loss.item())
    np.testing.assert_array_equal(np.asarray(x), a)


# ----- indexing ------------------------------------------------------------------------------


def test_basic_index_is_a_view_and_int_drops_the_axis():
    x = _x()
    row = x[1]
    assert row.shape == (4,) and x[1, 2].shape == () and x[:, 0].shape == (3,)
    assert x[None, 1:, ..., None].shape == (1, 2, 4, 1)
    with ndl.no_grad():
        row[0] = 100.0  # writes through the view, as in PyTorch
    assert x.numpy()[1, 0] == 100.0


def test_iteration_walks_the_first_axis():
    x = _x()
    assert [r.numpy().tolist() for r in x] == x.numpy().tolist()
    with pytest.raises(TypeError, match="0-d"):
        iter(tensor(1.0))


def test_repeated_indices_add_their_gradients():
    x = tensor(np.arange(4.0), requires_grad=True)
    x[[0, 0, 3, 0]].sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [3.0, 0.0, 0.0, 1.0])


def test_integer_tensors_index_and_are_indexed():
    labels = ndl.Tensor([3, 1, 2], dtype="int64")
    assert labels[1:].numpy().tolist() == [1, 2]
    assert labels[labels > 1].numpy().tolist() == [3, 2]
    assert labels[ndl.Tensor([2, 2], dtype="int32")].dtype == "int64"


def test_second_derivative_through_getitem():
    assert gradcheck(
        lambda a: _grad(lambda t: (t[[0, 1, 0]] ** 3).sum(), a), np.array([0.5, -1.5, 2.0])
    )


def _grad(f, a: ndl.Tensor) -> ndl.Tensor:
    a = a if a.requires_grad else tensor(a, requires_grad=True)
    f(a).backward(create_graph=True)
    grad, a.grad = a.grad, None
    return grad


# ----- t[key] = value ----------------------------------------------------------------------------


def test_setitem_on_a_constant_writes_in_place():
    x = ndl.zeros(3, 4, dtype="float64")
    x[0, 1] = 5.0
    x[x > 1] = 7.0
    x[:, 0] = ndl.Tensor([1.0, 2.0, 3.0], dtype="float64", requires_grad=False)
    x[[2, 2], [3, 2]] = np.array([8.0, 9.0])
    expected = np.zeros((3, 4))
    expected[0, 1] = 7.0
    expected[:, 0] = [1, 2, 3]
    expected[2, 3], expected[2, 2] = 8.0, 9.0
    np.testing.assert_array_equal(x.numpy(), expected)


def test_setitem_with_a_value_that_requires_grad_joins_the_graph():
    w = tensor(np.array([1.0, 2.0]), requires_grad=True)
    out = ndl.zeros(2, 2, dtype="float64")
    out[:, 1] = w * 3.0
    assert out.requires_grad
    (out * tensor(np.array([[1.0, 2.0], [3.0, 4.0]]))).sum().backward()
    np.testing.assert_array_equal(w.grad.numpy(), [6.0, 12.0])


def test_setitem_on_a_tensor_that_requires_grad_raises_and_says_what_to_do():
    w = tensor(np.ones(3), requires_grad=True)
    with pytest.raises(RuntimeError, match=r"requires grad.*index_put"):
        w[0] = 2.0
    with ndl.no_grad():
        w[0] = 2.0  # allowed: no graph is being built
    assert w.numpy().tolist() == [2.0, 1.0, 1.0]
    v = w.index_put(1, tensor(np.array(5.0)))
    assert v.numpy().tolist() == [2.0, 5.0, 1.0] and w.numpy().tolist() == [2.0, 1.0, 1.0]


# ----- comparisons ---------------------------------------------------------------------------


@pytest.mark.parametrize("op", ["__eq__", "__ne__", "__lt__", "__le__", "__gt__", "__ge__"])
def test_comparisons_give_bool_tensors_without_gradient(op):
    a = tensor(np.array([[1.0, 2.0, 3.0]]), requires_grad=True)
    b = tensor(np.array([[2.0], [1.0]]))
    for other, other_np in [(b, b.numpy()), (2.0, 2.0), (2, 2)]:
        out = getattr(a, op)(other)
        assert out.dtype == "bool" and not out.requires_grad
        np.testing.assert_array_equal(out.numpy(), getattr(a.numpy(), op)(other_np))


def test_tensors_stay_hashable_by_identity():
    a, b = _x(), _x()
    assert {a: 1, b: 2}[a] == 1 and a in {a} and b not in {a}
    assert a in [a] and a is not b


def test_truth_value_of_a_tensor():
    assert bool(tensor([2.0]) > 1) and not bool(tensor(0.0))
    assert bool((_x() == _x()).all()) and not bool((_x() > 100).any())
    with pytest.raises(RuntimeError, match="ambiguous"):
        bool(_x() > 1)


def test_comparison_with_other_objects_falls_back_to_identity():
    x = _x()
    assert (x == None) is False and (x != "a") is True  # noqa: E711


# ----- reductions: ties and indices ---------------------------------------------------------------


def test_amax_splits_the_gradient_among_ties():
    x = tensor(np.array([[1.0, 3.0, 3.0], [2.0, 2.0, 2.0]]), requires_grad=True)
    ndl.amax(x, 1).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [[0, 0.5, 0.5], [1 / 3, 1 / 3, 1 / 3]])
    x.max().backward()
    np.testing.assert_allclose(x.grad.numpy(), [[0, 0.5, 0.5], [0, 0, 0]])


def test_max_along_a_dim_returns_values_and_first_indices_and_sends_the_gradient_there():
    x = tensor(np.array([[1.0, 3.0, 3.0], [2.0, 2.0, 0.0]]), requires_grad=True)
    values, indices = x.max(1)
    assert indices.dtype == "int64" and indices.numpy().tolist() == [1, 0]
    assert values.numpy().tolist() == [3.0, 2.0]
    values.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [[0, 1, 0], [1, 0, 0]])
    values, indices = ndl.min(x, 0, keepdim=True)
    assert values.shape == (1, 3) and indices.numpy().tolist() == [[0, 1, 1]]


def test_argmax_argmin_and_empty_reductions():
    x = tensor(np.array([[1.0, 5.0, 5.0], [7.0, 0.0, 7.0]]))
    assert x.argmax().item() == 3 and x.argmin(dim=1).numpy().tolist() == [0, 1]
    assert x.argmax(-1, keepdim=True).shape == (2, 1)
    with pytest.raises(ValueError, match="amax"):
        ndl.amax(tensor(np.zeros((2, 0))), 1)


def test_prod_gradient_with_zeros():
    x = tensor(np.array([[2.0, 0.0, 3.0], [0.0, 0.0, 4.0], [1.0, 2.0, 3.0]]), requires_grad=True)
    x.prod(1).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [[0, 6, 0], [0, 0, 0], [6, 3, 2]])


def test_minimum_and_maximum_split_ties_evenly():
    a, b = (
        tensor(np.array([1.0, 2.0]), requires_grad=True),
        tensor(np.array([1.0, 3.0]), requires_grad=True),
    )
    ndl.maximum(a, b).sum().backward()
    assert a.grad.numpy().tolist() == [0.5, 0.0] and b.grad.numpy().tolist() == [0.5, 1.0]


# ----- functional losses ------------------------------------------------------------------------


def test_cross_entropy_matches_pytorch(torch):
    rng = np.random.default_rng(0)
    logits, y = rng.standard_normal((5, 4)), np.array([0, 3, -1, 2, 3])
    for kwargs in [
        {},
        {"label_smoothing": 0.2},
        {"ignore_index": -1, "reduction": "sum"},
        {"ignore_index": -1, "reduction": "none", "label_smoothing": 0.1},
    ]:
        mine = tensor(logits, requires_grad=True)
        loss = F.cross_entropy(mine, np.where(y < 0, kwargs.get("ignore_index", 0), y), **kwargs)
        theirs = torch.tensor(logits, requires_grad=True)
        expected = torch.nn.functional.cross_entropy(
            theirs, torch.tensor(np.where(y < 0, kwargs.get("ignore_index", 0), y)), **kwargs
        )
        np.testing.assert_allclose(loss.numpy(), expected.detach().numpy(), rtol=1e-12)
        loss.sum().backward()
        expected.sum().backward()
        np.testing.assert_allclose(mine.grad.numpy(), theirs.grad.numpy(), rtol=1e-10, atol=1e-14)


def test_activations_match_pytorch(torch):
    a = np.linspace(-4, 4, 17)
    tf = torch.nn.functional
    pairs = [
        (F.silu, tf.silu),
        (F.elu, tf.elu),
        (F.softplus, tf.softplus),
        (lambda t: F.leaky_relu(t, 0.2), lambda t: tf.leaky_relu(t, 0.2)),
        (F.gelu, lambda t: tf.gelu(t, approximate="tanh")),
    ]
    for mine, theirs in pairs:
        np.testing.assert_allclose(
            mine(tensor(a)).numpy(), theirs(torch.tensor(a)).numpy(), rtol=1e-12, atol=1e-15
        )


def test_cross_entropy_all_ignored_is_nan_and_bad_targets_raise():
    logits = tensor(np.zeros((2, 3)))
    assert np.isnan(F.cross_entropy(logits, np.array([-100, -100])).item())
    with pytest.raises(ValueError, match="target 3 is out of range for 3 classes"):
        F.cross_entropy(logits, np.array([0, 3]))
    with pytest.raises(TypeError, match="integers"):
        F.cross_entropy(logits, np.array([0.5, 1.0]))
    with pytest.raises(ValueError, match="reduction"):
        F.cross_entropy(logits, np.array([0, 1]), reduction="avg")


def test_loss_modules_wrap_the_functions():
    logits, y = tensor(np.array([[1.0, 2.0], [0.5, -1.0]])), np.array([1, 0])
    assert ndl.nn.CrossEntropyLoss(label_smoothing=0.1)(logits, y).item() == pytest.approx(
        F.cross_entropy(logits, y, label_smoothing=0.1).item()
    )
    assert ndl.nn.MSELoss(reduction="sum")(logits, logits * 0).item() == pytest.approx(6.25)
    assert ndl.nn.Softmax(dim=0)(logits).numpy().sum(0) == pytest.approx([1.0, 1.0])


def test_softmax_loss_is_still_the_course_op():
    assert ndl.nn.SoftmaxLoss()(
        tensor(np.zeros((2, 4))), ndl.Tensor([0, 3])
    ).item() == pytest.approx(np.log(4))


# ----- interop ------------------------------------------------------------------------------


def test_numpy_interop_and_memory_sharing():
    a = np.arange(6.0).reshape(2, 3)
    t = ndl.from_numpy(a)
    assert t.dtype == "float64" and not t.requires_grad and t.tolist() == a.tolist()
    a[0, 0] = 42.0
    assert (t.numpy()[0, 0] == 42.0) == (not ND)  # shared under np, a copy under nd
    assert np.asarray(t, dtype=np.float32).dtype == np.float32
    assert tensor([3.5]).item() == 3.5


def test_dlpack_round_trip_through_numpy():
    t = tensor(np.arange(4.0))
    assert t.__dlpack_device__() == (1, 0)
    np.testing.assert_array_equal(np.from_dlpack(t), t.numpy())
    np.testing.assert_array_equal(ndl.from_dlpack(np.arange(3)).numpy(), [0, 1, 2])


def test_dlpack_export_shares_the_buffer_of_any_view(device):
    base = tensor(np.arange(12.0).reshape(3, 4), device=device)
    transposed = ndl.array_api.transpose(base.realize_cached_data(), (1, 0))  # a strided view
    view = ndl.Tensor.make_const(transposed[1:3])
    shared = np.from_dlpack(view)
    np.testing.assert_array_equal(shared, np.arange(12.0).reshape(3, 4).T[1:3])
    shared[0, 0] = -7.0  # one buffer: the write shows in both tensors
    assert view.numpy()[0, 0] == -7.0 and base.numpy()[0, 1] == -7.0
    del base, view  # the exported array keeps the buffer alive
    np.testing.assert_array_equal(shared[1], [2.0, 6.0, 10.0])
    assert np.from_dlpack(tensor(np.zeros((0, 3)), device=device)).shape == (0, 3)


def test_dlpack_export_to_pytorch_shares_memory(torch):
    t = tensor(np.arange(4.0, dtype=np.float32))
    received = torch.from_dlpack(t)
    received[2] = 40.0
    np.testing.assert_array_equal(t.numpy(), [0.0, 1.0, 40.0, 3.0])


def test_dlpack_round_trip_through_pytorch(torch):
    t = tensor(np.arange(4.0))
    np.testing.assert_array_equal(torch.from_dlpack(t).numpy(), t.numpy())
    np.testing.assert_array_equal(ndl.from_dlpack(torch.arange(3.0)).numpy(), [0.0, 1.0, 2.0])


def test_astype_shorthands():
    x = tensor([1.7, -2.5, 0.0])
    assert [x.float().dtype, x.double().dtype, x.long().dtype, x.int().dtype, x.bool().dtype] == [
        "float32",
        "float64",
        "int64",
        "int32",
        "bool",
    ]
    assert x.bool().numpy().tolist() == [True, True, False]
