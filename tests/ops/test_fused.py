"""Fused layers and the flat optimizer step: checked against the unfused compositions."""

import numpy as np
import pytest
from helpers import tensor

import needle as ndl
import needle.nn as nn
from needle.apps.mlp_resnet import MLPResNet
from needle.testing import gradcheck

SHAPES = [(4, 3), (1, 5), (7, 1), (2, 2)]


@pytest.mark.parametrize("shape", SHAPES)
def test_fused_linear_gradcheck(shape, rng):
    n, k = shape
    assert gradcheck(
        ndl.fused_linear,
        rng.standard_normal((n, k)),
        rng.standard_normal((k, 3)),
        rng.standard_normal((1, 3)),
    )
    assert gradcheck(ndl.fused_linear, rng.standard_normal((n, k)), rng.standard_normal((k, 2)))


@pytest.mark.parametrize("shape", [(4, 3), (2, 5), (6, 1)])
def test_fused_norms_gradcheck(shape, rng):
    x, w, b = (
        rng.standard_normal(shape),
        rng.standard_normal(shape[1]),
        rng.standard_normal(shape[1]),
    )
    assert gradcheck(lambda *a: ndl.fused_batch_norm(*a)[0], x, w, b)
    if shape[1] > 1:  # a row of one element has zero variance: output = bias, gradient 0
        assert gradcheck(ndl.fused_layer_norm, x, w, b)


@pytest.mark.parametrize("shape", [(4, 3), (1, 5), (3, 1)])
def test_fused_softmax_cross_entropy_gradcheck(shape, rng):
    labels = rng.integers(0, shape[1], shape[0])
    assert gradcheck(
        lambda z: ndl.fused_softmax_cross_entropy(z, labels), rng.standard_normal(shape)
    )


@pytest.mark.parametrize(
    "labels, match",
    [
        (np.array([0, 3]), r"labels must be in \[0, 3\), got \[3\] \(out of range\)"),
        (np.array([0]), r"labels of shape \(1,\) for logits of shape \(2, 3\)"),
    ],
)
def test_fused_softmax_cross_entropy_rejects_bad_labels(labels, match):
    with pytest.raises(ValueError, match=match):
        ndl.fused_softmax_cross_entropy(ndl.init.zeros(2, 3), labels)
    with pytest.raises(TypeError, match="labels must be integers"):
        ndl.fused_softmax_cross_entropy(ndl.init.zeros(2, 3), np.array([0.5, 1.0]))


# ----- the one-pass kernels give the composition's bits ------------------------------------


def _device_ops():
    from needle.backends import BACKEND

    if BACKEND != "nd":
        pytest.skip("the one-pass kernels belong to the NDArray backend")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_dropout_layer_gives_the_course_expressions_bits(dtype):
    """nn.Dropout under nd (one kernel pass) against the course's randb expression."""
    _device_ops()
    device = ndl.cpu()
    x = ndl.Tensor(
        np.random.default_rng(0).standard_normal((50, 40)), dtype=dtype, requires_grad=True
    )
    for p in (0.1, 0.5):
        np.random.seed(3)
        out = nn.Dropout(p)(x)
        np.random.seed(3)
        draws = device.rand(50, 40)  # the course's randb: float32 draws, compared in float32
        mask = ((draws <= 1 - p) / (1 - p)).astype(dtype)
        np.testing.assert_array_equal(out.numpy(), x.numpy() * mask.numpy())
        out.backward(ndl.Tensor(np.full((50, 40), 3.0), dtype=dtype))
        np.testing.assert_array_equal(x.grad.numpy(), 3.0 * mask.numpy().astype(dtype))


def _layer_pair(make):
    np.random.seed(0)
    fused = make(True)
    np.random.seed(0)
    return fused, make(False)


LAYERS = {
    "Linear": (lambda f: nn.Linear(5, 3, dtype="float64", fused=f), (6, 5)),
    "LayerNorm1d": (lambda f: nn.LayerNorm1d(5, dtype="float64", fused=f), (6, 5)),
    "BatchNorm1d": (lambda f: nn.BatchNorm1d(5, dtype="float64", fused=f), (6, 5)),
}


@pytest.mark.parametrize("name", list(LAYERS))
def test_fused_layer_matches_unfused(name, rng):
    make, shape = LAYERS[name]
    fused, plain = _layer_pair(make)
    for p in fused.parameters() + plain.parameters():  # non-trivial weights
        p.data = tensor(np.linspace(-1, 2, p.size).reshape(p.shape))
    for _step in range(3):
        x = rng.standard_normal(shape) * 3 + 1
        outs, grads = [], []
        for layer in (fused, plain):
            xt = tensor(x)
            out = layer(xt)
            (out * tensor(np.arange(out.size).reshape(out.shape))).sum().backward()
            outs.append(out.numpy())
            grads.append([xt.grad.numpy()] + [p.grad.numpy() for p in layer.parameters()])
        np.testing.assert_allclose(outs[0], outs[1], rtol=1e-10, atol=1e-12)
        for a, b in zip(*grads):
            np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-10)
    for a, b in zip(fused.state_dict().values(), plain.state_dict().values()):
        np.testing.assert_allclose(a, b, rtol=1e-12)  # includes BatchNorm's running statistics


def test_fused_softmax_loss_matches_unfused(rng):
    logits = rng.standard_normal((8, 5)) * np.array([1, 1e5, 1, 1, 1e5])[:, None].T[:, :5]
    labels = rng.integers(0, 5, 8)
    values, grads = [], []
    for fused in (True, False):
        z = tensor(logits)
        loss = nn.SoftmaxLoss(fused=fused)(z, tensor(labels))
        loss.backward()
        values.append(loss.numpy())
        grads.append(z.grad.numpy())
    assert np.isfinite(values[0])
    np.testing.assert_allclose(values[0], values[1], rtol=1e-12)
    np.testing.assert_allclose(grads[0], grads[1], rtol=1e-9, atol=1e-12)


def test_second_derivative_through_fused_layer_explains_the_fix():
    layer = nn.Linear(3, 2, dtype="float64")
    x = tensor(np.ones((2, 3)))
    layer(x).sum().backward(create_graph=True)
    with pytest.raises(NotImplementedError, match="fused=False"):
        (x.grad * x.grad).sum().backward()


def test_dropout_draws_match_randb():
    x = tensor(np.ones((4, 5), np.float32))
    np.random.seed(3)
    out = nn.Dropout(0.3)(x).numpy()
    np.random.seed(3)
    mask = np.random.rand(4, 5) <= 0.7
    np.testing.assert_allclose(out, mask / 0.7, rtol=1e-6)
    assert out.dtype == np.float32


def _train(model, opt, steps=4, seed=5):
    rng = np.random.default_rng(seed)
    loss_fn = nn.SoftmaxLoss(fused=getattr(model, "_fused_loss", True))
    for _ in range(steps):
        x = tensor(rng.random((20, 784), dtype=np.float32), requires_grad=False)
        y = tensor(rng.integers(0, 10, 20), requires_grad=False)
        loss = loss_fn(model(x), y)
        opt.reset_grad()
        loss.backward()
        opt.step()
    return [p.numpy() for p in model.parameters()]


def _unfuse(model):
    for module in [model] + model._children():
        if hasattr(module, "fused"):
            module.fused = False
    model._fused_loss = False
    return model


def test_mlp_resnet_fused_and_unfused_train_alike():
    results = []
    for unfused in (False, True):
        np.random.seed(4)
        model = MLPResNet(784, 32, num_blocks=2)
        if unfused:
            _unfuse(model)
        np.random.seed(1)  # the same dropout masks for both
        # SGD, not Adam: Adam divides by sqrt(v), which magnifies float32 rounding
        # differences of near-zero gradients into visible ones.
        opt = ndl.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=0.001)
        results.append(_train(model, opt))
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.skipif(
    ndl.backends.BACKEND == "nd", reason="nd keeps one compact array per parameter (no flat step)"
)
@pytest.mark.parametrize(
    "make",
    [
        lambda ps: ndl.optim.Adam(ps, lr=0.01, weight_decay=0.01),
        lambda ps: ndl.optim.SGD(ps, lr=0.1, momentum=0.9, weight_decay=0.01),
    ],
)
def test_flat_step_is_bit_identical_to_per_parameter_step(make):
    rng = np.random.default_rng(0)
    shapes = [(3, 4), (4,), (2, 2)]
    values = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    flat_params = [nn.Parameter(tensor(v)) for v in values]
    loop_params = [nn.Parameter(tensor(v)) for v in values]
    spare = nn.Parameter(tensor(np.zeros(2, np.float32)))  # no grad: forces the loop
    flat_opt, loop_opt = make(flat_params), make(loop_params + [spare])
    for _ in range(5):
        grads = [rng.standard_normal(s).astype(np.float32) for s in shapes]
        for params in (flat_params, loop_params):
            for p, g in zip(params, grads):
                p.grad = tensor(g, requires_grad=False)
        flat_opt.step()
        loop_opt.step()
    assert flat_opt._flat["views"] is not None and loop_opt._flat["views"] is None
    for a, b in zip(flat_params, loop_params):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


@pytest.mark.parametrize("fused", [True, False])
def test_softmax_loss_with_minus_inf_logits_is_finite(fused):
    logits = np.array([[0.0, -np.inf, 1.0], [-np.inf, 2.0, -np.inf]])
    z = tensor(logits)
    loss = nn.SoftmaxLoss(fused=fused)(z, tensor([2, 1]))
    loss.backward()
    expected = (np.log(1 + np.e) - 1.0 + 0.0) / 2
    np.testing.assert_allclose(loss.numpy(), expected, rtol=1e-12)
    grad = z.grad.numpy()
    assert np.all(np.isfinite(grad)) and grad[0, 1] == 0 and grad[1, 0] == 0


@pytest.mark.parametrize("scale", [1.0, 2.5, -0.5])
def test_softmax_loss_gradient_for_any_out_grad(scale, rng):
    # the backward returns the kept (softmax - one_hot) / N as is for out_grad = 1, and
    # scales it otherwise: both against the float64 formula
    logits = rng.standard_normal((6, 5))
    labels = rng.integers(0, 5, 6)
    x = ndl.Tensor(logits, dtype="float32")
    (ndl.fused_softmax_cross_entropy(x, labels) * scale).backward()
    softmax = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    expected = (softmax - np.eye(5)[labels]) / 6 * scale
    np.testing.assert_allclose(x.grad.numpy(), expected, rtol=1e-5, atol=1e-7)
