"""The default ``backward()``: the course's differentiable gradients, recorded on demand.

Gradients are computed as constants flagged like recorded ones; differentiating one replays
the backward pass with recording on. These tests pin the three promises: the values are the
bits of an eagerly recorded backward (``create_graph=True``), differentiating a gradient gives
the eager second derivatives, and a training loop does not keep the previous step's forward
graph alive through its gradients.
"""

from __future__ import annotations

import gc
import weakref

import numpy as np
import pytest
from helpers import tensor

import needle as ndl
from needle import nn
from needle.autograd import find_topo_sort, release_gradient_graphs

FUNCTIONS = {
    "polynomial": (lambda x, z: x * x * z + x**3, [(3,), (3,)]),
    "broadcast": (lambda x, z: ndl.exp(x * z) / (z + 3.0), [(2, 3), (3,)]),
    "matmul tanh": (lambda x, z: ndl.tanh(x @ z) * (x @ z), [(2, 3), (3, 2)]),
    "logsumexp": (lambda x, z: ndl.logsumexp(x * z, 1) ** 2, [(2, 3), (2, 3)]),
    "sigmoid sum": (lambda x, z: ndl.summation(ndl.sigmoid(x) * z, 1) ** 2, [(2, 3), (2, 3)]),
}


def _inputs(shapes, seed=0):
    rng = np.random.default_rng(seed)
    return [tensor(rng.uniform(0.5, 1.5, s)) for s in shapes]


def _first_and_second(f, shapes, create_graph):
    """Gradients of sum(f) and of sum(grad_x * v), with the given create_graph."""
    x, z = _inputs(shapes)
    y = f(x, z)
    y.backward(create_graph=create_graph)
    first = [x.grad.numpy(), z.grad.numpy()]
    flags = [x.grad.requires_grad, z.grad.requires_grad]
    v = tensor(np.linspace(-1, 1, int(np.prod(x.shape))).reshape(x.shape))
    (x.grad * v).sum().backward()
    return first, flags, [x.grad.numpy(), z.grad.numpy()]


@pytest.mark.parametrize("name", list(FUNCTIONS))
def test_default_gradients_are_the_bits_of_a_recorded_backward(name):
    f, shapes = FUNCTIONS[name]
    eager = _first_and_second(f, shapes, create_graph=True)
    default = _first_and_second(f, shapes, create_graph=None)
    for a, b in zip(eager[0] + eager[2], default[0] + default[2]):
        np.testing.assert_array_equal(a, b)
    assert eager[1] == default[1]


def test_requires_grad_flags_match_a_recorded_backward_on_every_node():
    def run(create_graph):
        x, z = _inputs([(2, 3), (3,)])
        y = (x * 2.0 + z).sum() + (x * x).sum()
        y.backward(create_graph=create_graph)
        return [n.grad.requires_grad for n in find_topo_sort([y])]

    assert run(None) == run(True)
    assert run(None)[0] is True and False in run(None)  # x.grad needs x; z.grad is constant


def test_gradient_of_a_gradient_of_a_temporary():
    x = tensor(np.array([2.0]))
    (x**3).backward()  # the output is not kept by the caller
    x.grad.backward()
    assert x.grad.numpy().tolist() == [12.0]


def test_a_gradient_kept_across_another_backward_still_differentiates():
    x = tensor(np.array([1.0, 2.0]))
    y = (x**3).sum()
    y.backward()
    g = x.grad
    (x * 5.0).sum().backward()  # replaces x.grad and releases y's record
    np.testing.assert_array_equal(x.grad.numpy(), [5.0, 5.0])
    g.backward()  # y is still alive here, so its pass can be replayed
    np.testing.assert_array_equal(x.grad.numpy(), [6.0, 12.0])


def test_a_freed_graph_gives_a_clear_error():
    x = tensor(np.array([1.0, 2.0]))
    (x**3).sum().backward()
    g = x.grad
    release_gradient_graphs()  # what an optimizer step does; nobody holds the output
    gc.collect()
    with pytest.raises(RuntimeError, match="create_graph=True"):
        g.backward()


def _step(model, opt, X, y, create_graph):
    out = model(X)
    loss = nn.SoftmaxLoss()(out, y)
    loss.backward(create_graph=create_graph)
    opt.step()
    return weakref.ref(out)


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("create_graph, kept", [(None, False), (False, False), (True, True)])
def test_a_training_step_does_not_keep_its_forward_graph(create_graph, kept, fused):
    np.random.seed(0)
    model = nn.Sequential(
        nn.Linear(4, 8, fused=fused), nn.ReLU(), nn.Linear(8, 3, bias=False, fused=fused)
    )
    opt = ndl.optim.SGD(model.parameters(), lr=0.1)
    X = ndl.Tensor(np.random.randn(5, 4), dtype="float32")
    y = ndl.Tensor([0, 1, 2, 0, 1], dtype="int64")
    previous = _step(model, opt, X, y, create_graph)
    if create_graph:
        gc.collect()  # recorded gradients form cycles with the graph: only gc could free it
    assert (previous() is not None) == kept
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None for g in grads)
    if create_graph is None:
        assert all(g.requires_grad for g in grads), "still flagged as differentiable"


def test_default_training_matches_the_fast_path_bit_for_bit():
    def train(create_graph):
        np.random.seed(1)
        model = nn.Sequential(nn.Linear(6, 10), nn.ReLU(), nn.Linear(10, 4))
        opt = ndl.optim.Adam(model.parameters(), lr=0.01)
        for _ in range(3):
            X = ndl.Tensor(np.random.randn(8, 6), dtype="float32")
            y = ndl.Tensor(np.random.randint(0, 4, 8), dtype="int64")
            opt.reset_grad()
            nn.SoftmaxLoss()(model(X), y).backward(create_graph=create_graph)
            opt.step()
        return [p.numpy() for p in model.parameters()]

    for a, b, c in zip(train(None), train(False), train(True)):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c)
