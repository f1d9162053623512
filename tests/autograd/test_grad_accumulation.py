"""backward(accumulate=True): gradients summed over micro-batches, the default unchanged."""

import numpy as np
import pytest
from helpers import tensor

import needle as ndl
from needle import nn, optim


def _mlp(device, seed=0):
    """A small MLP whose weights are multiples of 1/4 (so that small sums are exact)."""
    np.random.seed(seed)
    model = nn.Sequential(nn.Linear(5, 6, device=device), nn.ReLU(), nn.Linear(6, 3, device=device))
    for p in model.parameters():
        p.data = tensor(np.round(p.numpy() * 8) / 4, device=device, dtype="float32")
    return model


def _integer_batch(rows, seed=1):
    rng = np.random.default_rng(seed)
    return (
        rng.integers(-3, 4, size=(rows, 5)).astype(np.float32),
        rng.integers(-2, 3, size=(rows, 3)).astype(np.float32),
    )


def _grads(model):
    return [p.grad.numpy() for p in model.parameters()]


def test_micro_batches_give_the_big_batch_gradient_exactly(device):
    x, w = _integer_batch(12)
    big = _mlp(device)
    (big(tensor(x, device=device)) * tensor(w, device=device)).sum().backward()
    micro = _mlp(device)
    for rows in np.split(np.arange(12), 4):
        out = micro(tensor(x[rows], device=device)) * tensor(w[rows], device=device)
        out.sum().backward(accumulate=True)
    for a, b in zip(_grads(big), _grads(micro)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    "make",
    [
        lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9),
        lambda ps: optim.AdamW(ps, lr=0.01),
    ],
)
def test_accumulated_mean_losses_give_the_big_batch_update(make, device):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((16, 5)).astype(np.float32)
    y = rng.integers(0, 3, size=16)
    loss_fn = nn.SoftmaxLoss()
    big, micro = _mlp(device), _mlp(device)
    big_opt, micro_opt = make(big.parameters()), make(micro.parameters())
    for _ in range(3):
        big_opt.reset_grad()
        loss_fn(big(tensor(x, device=device)), tensor(y, device=device)).backward()
        big_opt.step()
        micro_opt.reset_grad()
        for rows in np.split(np.arange(16), 4):
            loss = loss_fn(micro(tensor(x[rows], device=device)), tensor(y[rows], device=device))
            (loss / 4).backward(accumulate=True)
        micro_opt.step()
    for a, b in zip(big.parameters(), micro.parameters()):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6)


def test_default_backward_still_replaces_the_gradient():
    x = ndl.Tensor([2.0])
    (x * 3).backward()
    (x * 5).backward()
    assert x.grad.numpy().tolist() == [5.0]
    (x * 7).backward(accumulate=True)
    assert x.grad.numpy().tolist() == [12.0]
    assert not x.grad.requires_grad  # the sum is a constant
    x.grad = None
    (x * 2).backward(accumulate=True)  # a leaf without a gradient just gets it
    assert x.grad.numpy().tolist() == [2.0]


def test_post_accumulate_hooks_see_the_sum():
    x = ndl.Tensor([1.0, 2.0])
    seen = []
    x.register_post_accumulate_grad_hook(lambda t: seen.append(t.grad.numpy().tolist()))
    (x * 2).sum().backward()
    (x * x).sum().backward(accumulate=True)
    assert seen == [[2.0, 2.0], [4.0, 6.0]]


def test_accumulate_refuses_create_graph():
    x = ndl.Tensor([1.0])
    with pytest.raises(ValueError, match="accumulate=True sums gradients as constants"):
        (x * x).backward(create_graph=True, accumulate=True)
