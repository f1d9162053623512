"""Hooks: on tensors (gradient, post-accumulate), on modules (forward, forward-pre), and the
end-of-backward callback they can queue — PyTorch's meanings, in every backward mode."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import tensor

import needle as ndl
from needle import nn
from needle.autograd import backward_accumulates, queue_callback

MODES = [None, True, False]


@pytest.mark.parametrize("create_graph", MODES)
def test_gradient_hook_sees_the_complete_gradient_and_can_replace_it(create_graph):
    x = tensor(np.array([1.0, 2.0]))
    y = x * 3.0
    seen = []

    def double(grad):
        seen.append(grad.numpy().copy())
        return grad * 2.0

    y.register_hook(double)
    (y * y + y).sum().backward(create_graph=create_graph)  # y has two users: 2y + 1
    np.testing.assert_array_equal(seen, [2 * y.numpy() + 1])
    np.testing.assert_array_equal(y.grad.numpy(), 2 * (2 * y.numpy() + 1))
    np.testing.assert_array_equal(x.grad.numpy(), 3 * 2 * (2 * y.numpy() + 1))


def test_hooks_run_in_registration_order_and_are_removable():
    x = tensor(np.array([1.0]))
    calls = []
    first = x.register_hook(lambda g: calls.append("first"))
    x.register_hook(lambda g: calls.append("second"))
    (x * 2.0).sum().backward()
    assert calls == ["first", "second"]
    first.remove()
    calls.clear()
    (x * 2.0).sum().backward()
    assert calls == ["second"]
    with pytest.raises(RuntimeError, match="already removed"):
        first.remove()


def test_the_same_function_registered_twice_runs_twice():
    x = tensor(np.array([1.0]))
    calls = []
    hook = calls.append
    x.register_hook(hook)
    handle = x.register_hook(hook)
    (x * 2.0).sum().backward()
    assert len(calls) == 2
    handle.remove()
    (x * 2.0).sum().backward()
    assert len(calls) == 3


@pytest.mark.parametrize("create_graph", MODES)
def test_post_accumulate_hook_runs_after_the_leaf_grad_is_set(create_graph):
    w = tensor(np.array([1.0, -1.0]))
    seen = []
    w.register_post_accumulate_grad_hook(lambda t: seen.append((t is w, t.grad.numpy().copy())))
    (w * w).sum().backward(create_graph=create_graph)
    assert len(seen) == 1 and seen[0][0]
    np.testing.assert_array_equal(seen[0][1], [2.0, -2.0])


def test_queued_callbacks_run_after_every_grad_is_set():
    a, b = tensor(np.array([1.0])), tensor(np.array([2.0]))
    order = []

    def on_a(t):
        order.append("a")
        queue_callback(lambda: order.append(("end", a.grad is not None, b.grad is not None)))

    a.register_post_accumulate_grad_hook(on_a)
    b.register_post_accumulate_grad_hook(lambda t: order.append("b"))
    (a * b).sum().backward()
    assert sorted(order[:2]) == ["a", "b"] and order[2] == ("end", True, True)
    with pytest.raises(RuntimeError, match="no backward"):
        queue_callback(lambda: None)


def test_backward_accumulates_tells_hooks_whether_grads_are_added():
    w = tensor(np.array([1.0, -1.0]))
    seen = []
    w.register_post_accumulate_grad_hook(lambda t: seen.append(backward_accumulates()))
    (w * w).sum().backward(create_graph=False)
    (w * w).sum().backward(create_graph=False, accumulate=True)
    assert seen == [False, True]
    assert backward_accumulates() is False  # outside a backward
    np.testing.assert_array_equal(w.grad.numpy(), [4.0, -4.0])


def test_second_derivatives_after_a_replacing_hook_match_eager_recording():
    def run(create_graph):
        x = tensor(np.array([0.5, 1.5]))
        y = x**3
        y.register_hook(lambda g: g * 2.0)
        y.sum().backward(create_graph=create_graph)
        first = x.grad.numpy().copy()
        x.grad.sum().backward()
        return first, x.grad.numpy()

    for a, b in zip(run(True), run(None)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    "make, error, match",
    [
        (
            lambda t: t.register_hook(3),
            TypeError,
            "register_hook: the hook must be callable, got int",
        ),
        (
            lambda t: ndl.Tensor([1.0], requires_grad=False).register_hook(print),
            RuntimeError,
            "does not require grad",
        ),
        (
            lambda t: (t * 2).register_post_accumulate_grad_hook(print),
            RuntimeError,
            "only leaf tensors",
        ),
    ],
)
def test_bad_registrations_raise_at_the_call(make, error, match):
    with pytest.raises(error, match=match):
        make(tensor(np.array([1.0])))


@pytest.mark.parametrize(
    "returned, error, match",
    [
        (
            lambda g: ndl.Tensor(np.ones(3), dtype=g.dtype),
            ValueError,
            r"returned a gradient of shape \(3,\).*for a tensor of shape \(2,\)",
        ),
        (lambda g: g.numpy(), TypeError, "returned ndarray; return a Tensor of shape"),
        (lambda g: g.astype("float32" if g.dtype == "float64" else "float64"), ValueError, "dtype"),
    ],
)
def test_a_hook_returning_a_bad_gradient_is_named(returned, error, match):
    x = tensor(np.array([1.0, 2.0]))
    x.register_hook(returned)
    with pytest.raises(error, match=match):
        (x * 2.0).sum().backward()


def test_forward_hooks_inspect_and_replace():
    np.random.seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    activations = {}
    relu = model.modules[1]
    handle = relu.register_forward_hook(lambda m, args, out: activations.update(relu=out))
    pre = model.modules[0].register_forward_pre_hook(lambda m, args: (args[0] * 0.0,))
    x = ndl.Tensor(np.ones((5, 3)), dtype="float32")
    out = model(x)
    np.testing.assert_array_equal(
        activations["relu"].numpy(), np.maximum(model.modules[0].bias.numpy(), 0).repeat(5, 0)
    )
    pre.remove()
    handle.remove()
    activations.clear()
    replaced = model.modules[2].register_forward_hook(lambda m, args, out: out * 0.0)
    assert not model(x).numpy().any() and activations == {}
    replaced.remove()
    np.testing.assert_allclose(
        model(x).numpy(), model.modules[2](model.modules[1](model.modules[0](x))).numpy()
    )
    assert out.shape == (5, 2)
    with pytest.raises(TypeError, match="register_forward_hook: the hook must be callable"):
        model.register_forward_hook("no")
    assert len(model.parameters()) == 4, "hooks are not parameters or sub-modules"
