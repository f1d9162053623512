"""Pooling (MaxPool2d, AvgPool2d, AdaptiveAvgPool2d) and LayerNorm/RMSNorm/GroupNorm:
forward against NumPy and PyTorch, gradients against central differences and PyTorch."""

import numpy as np
import pytest
from helpers import tensor

import needle as ndl
from needle import nn
from needle.testing import gradcheck

# ----- NumPy references ----------------------------------------------------------------------


def _np_pool(x, kernel, stride, padding, reduce, fill):
    (kh, kw), (ph, pw) = kernel, padding
    padded = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=fill)
    ho = (padded.shape[2] - kh) // stride + 1
    wo = (padded.shape[3] - kw) // stride + 1
    out = np.empty(x.shape[:2] + (ho, wo), x.dtype)
    for i in range(ho):
        for j in range(wo):
            window = padded[:, :, i * stride : i * stride + kh, j * stride : j * stride + kw]
            out[:, :, i, j] = reduce(window, axis=(2, 3))
    return out


def _np_adaptive(x, out_hw):
    out = np.empty(x.shape[:2] + out_hw, x.dtype)
    h, w = x.shape[2:]
    for i in range(out_hw[0]):
        for j in range(out_hw[1]):
            rows = slice(i * h // out_hw[0], -(-(i + 1) * h // out_hw[0]))
            cols = slice(j * w // out_hw[1], -(-(j + 1) * w // out_hw[1]))
            out[:, :, i, j] = x[:, :, rows, cols].mean(axis=(2, 3))
    return out


# (input shape, kernel, stride, padding)
POOLS = [
    ((2, 3, 6, 6), (2, 2), 2, (0, 0)),
    ((1, 2, 7, 5), (3, 3), 2, (1, 1)),
    ((2, 1, 5, 8), (2, 3), 1, (1, 0)),
    ((1, 4, 4, 4), (4, 4), 4, (0, 0)),
]


@pytest.mark.parametrize("shape, kernel, stride, padding", POOLS)
def test_pooling_matches_numpy(shape, kernel, stride, padding, device, rng):
    x = rng.standard_normal(shape).astype(np.float32)
    t = tensor(x, device=device)
    got = ndl.max_pool2d(t, kernel, stride, padding).numpy()
    np.testing.assert_array_equal(got, _np_pool(x, kernel, stride, padding, np.max, -np.inf))
    got = nn.AvgPool2d(kernel, stride, padding)(t).numpy()
    np.testing.assert_allclose(
        got, _np_pool(x, kernel, stride, padding, np.mean, 0.0), rtol=1e-5, atol=1e-6
    )


@pytest.mark.parametrize(
    "shape, out_hw", [((2, 3, 6, 6), (1, 1)), ((1, 2, 7, 5), (3, 2)), ((2, 2, 5, 9), (5, 4))]
)
def test_adaptive_avg_pool_matches_numpy(shape, out_hw, device, rng):
    x = rng.standard_normal(shape).astype(np.float32)
    got = nn.AdaptiveAvgPool2d(out_hw)(tensor(x, device=device)).numpy()
    np.testing.assert_allclose(got, _np_adaptive(x, out_hw), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("shape, kernel, stride, padding", POOLS[:3])
def test_pooling_gradients(shape, kernel, stride, padding, device, rng):
    x = rng.standard_normal(shape)
    gradcheck(lambda t: ndl.max_pool2d(t, kernel, stride, padding), x, device=device)
    gradcheck(lambda t: ndl.avg_pool2d(t, kernel, stride, padding), x, device=device)
    gradcheck(lambda t: ndl.adaptive_avg_pool2d(t, (2, 2)), x, device=device)


def test_pooling_matches_pytorch_with_gradients(device, rng, torch):
    F = torch.nn.functional
    x = rng.standard_normal((2, 3, 9, 7)).astype(np.float32)
    cases = [
        (lambda t: ndl.max_pool2d(t, 3, 2, 1), lambda t: F.max_pool2d(t, 3, 2, 1)),
        (
            lambda t: ndl.avg_pool2d(t, (3, 2), 1, (1, 1)),
            lambda t: F.avg_pool2d(t, (3, 2), 1, (1, 1)),
        ),
        (lambda t: ndl.adaptive_avg_pool2d(t, (4, 3)), lambda t: F.adaptive_avg_pool2d(t, (4, 3))),
    ]
    for ours, theirs in cases:
        t, tt = tensor(x, device=device), torch.tensor(x, requires_grad=True)
        out, tout = ours(t), theirs(tt)
        np.testing.assert_allclose(out.numpy(), tout.detach().numpy(), rtol=1e-5, atol=1e-6)
        weights = rng.standard_normal(out.shape).astype(np.float32)
        out.backward(tensor(weights, device=device))
        tout.backward(torch.tensor(weights))
        np.testing.assert_allclose(t.grad.numpy(), tt.grad.numpy(), rtol=1e-5, atol=1e-6)


def test_max_pool_splits_the_gradient_between_tied_maxima():
    x = tensor(np.ones((1, 1, 2, 2), np.float32))
    ndl.max_pool2d(x, 2).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), np.full((1, 1, 2, 2), 0.25, np.float32))


@pytest.mark.parametrize(
    "build, words",
    [
        (
            lambda x: ndl.max_pool2d(x, 5),
            r"max_pool2d: kernel \(5, 5\) is larger than the padded "
            r"input: 4×4 with padding \(0, 0\) gives 4×4",
        ),
        (lambda x: nn.AvgPool2d(2, padding=2)(x), r"padding \(2, 2\) must be at most half"),
        (lambda x: ndl.max_pool2d(x, 2, stride=(1, 2)), "stride must be the same along H and W"),
        (lambda x: ndl.max_pool2d(x, 0), "kernel_size must be an int >= 1"),
        (lambda x: ndl.max_pool2d(x.reshape((4, 4)), 2), r"expected an NCHW input .* \(4, 4\)"),
        (lambda x: nn.AdaptiveAvgPool2d(5)(x), r"output_size \(5, 5\) is larger than the input's"),
    ],
)
def test_pooling_errors(build, words):
    with pytest.raises(ValueError, match=words):
        build(tensor(np.zeros((1, 1, 4, 4), np.float32)))


# ----- normalisation -------------------------------------------------------------------------


def _np_layer_norm(x, eps):
    mean = x.mean(axis=-1, keepdims=True)
    return (x - mean) / np.sqrt(x.var(axis=-1, keepdims=True) + eps)


@pytest.mark.parametrize("shape", [(5, 4), (2, 3, 4), (2, 1, 3, 4)])
def test_layer_norm_and_rms_norm_over_the_last_axis(shape, device, rng):
    x = rng.standard_normal(shape).astype(np.float32)
    got = nn.LayerNorm(4, device=device)(tensor(x, device=device)).numpy()
    np.testing.assert_allclose(got, _np_layer_norm(x, 1e-5), rtol=1e-4, atol=1e-5)
    got = nn.RMSNorm(4, eps=1e-6, device=device)(tensor(x, device=device)).numpy()
    expected = x / np.sqrt((x * x).mean(axis=-1, keepdims=True) + 1e-6)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("shape, groups", [((2, 6, 3, 3), 3), ((3, 4, 5), 2), ((2, 4), 4)])
def test_group_norm_matches_numpy(shape, groups, device, rng):
    x = rng.standard_normal(shape).astype(np.float32)
    layer = nn.GroupNorm(groups, shape[1], device=device)
    weight = rng.standard_normal(shape[1]).astype(np.float32)
    layer.weight.data = tensor(weight, device=device)
    grouped = x.reshape((shape[0], groups, -1))
    normed = _np_layer_norm(grouped, 1e-5).reshape(shape)
    expected = normed * weight.reshape((1, -1) + (1,) * (len(shape) - 2))
    got = layer(tensor(x, device=device)).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "make, shape",
    [
        (lambda d: nn.LayerNorm(3, device=d, dtype="float64"), (2, 2, 3)),
        (lambda d: nn.RMSNorm(3, eps=1e-5, device=d, dtype="float64"), (4, 3)),
        (lambda d: nn.RMSNorm(3, eps=1e-5, device=d, dtype="float64"), (2, 2, 3)),
        (lambda d: nn.GroupNorm(2, 4, device=d, dtype="float64"), (2, 4, 3)),
        (lambda d: nn.GroupNorm(1, 2, device=d, dtype="float64"), (3, 2, 2, 2)),
        (lambda d: nn.GroupNorm(2, 4, device=d, dtype="float64", fused=False), (2, 4, 3)),
    ],
)
def test_norm_gradients(make, shape, device, rng):
    layer = make(device)
    for p in layer.parameters():  # away from ones/zeros, so that every term is exercised
        p.data = tensor(rng.standard_normal(p.shape), device=device, dtype="float64")
    params = layer.parameters()
    gradcheck(
        lambda x, *values: _with_params(layer, x, values),
        rng.standard_normal(shape),
        *[p.numpy() for p in params],
        device=device,
    )


def _with_params(layer, x, values):
    """``layer(x)`` with its parameters replaced by the tensors ``values`` (for gradcheck)."""
    names = [name for name in ("weight", "bias") if getattr(layer, name, None) is not None]
    for name, value in zip(names, values):
        setattr(layer, name, value)
    return layer(x)


@pytest.mark.parametrize("shape, groups", [((2, 6, 3, 3), 3), ((3, 4, 5), 2), ((2, 4), 4)])
def test_fused_group_norm_matches_the_composition(shape, groups, device, rng):
    x = rng.standard_normal(shape) * 3 + 1
    outs, grads = [], []
    for fused in (True, False):
        layer = nn.GroupNorm(groups, shape[1], device=device, dtype="float64", fused=fused)
        layer.weight.data = tensor(np.linspace(-1, 2, shape[1]), device=device)
        xt = tensor(x, device=device)
        out = layer(xt)
        (out * tensor(np.cos(np.arange(out.size)).reshape(shape), device=device)).sum().backward()
        outs.append(out.numpy())
        grads.append([xt.grad.numpy(), layer.weight.grad.numpy(), layer.bias.grad.numpy()])
    np.testing.assert_allclose(outs[0], outs[1], rtol=1e-12, atol=1e-12)
    for got, want in zip(*grads):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


def test_norms_match_pytorch_with_gradients(rng, torch):
    x = rng.standard_normal((2, 6, 5)).astype(np.float32)
    cases = [
        (nn.LayerNorm(5), torch.nn.LayerNorm(5)),
        (nn.RMSNorm(5), torch.nn.RMSNorm(5)),
        (nn.GroupNorm(3, 6), torch.nn.GroupNorm(3, 6)),
    ]
    for ours, theirs in cases:
        t, tt = tensor(x), torch.tensor(x, requires_grad=True)
        out, tout = ours(t), theirs(tt)
        np.testing.assert_allclose(out.numpy(), tout.detach().numpy(), rtol=1e-4, atol=1e-5)
        weights = rng.standard_normal(out.shape).astype(np.float32)
        out.backward(tensor(weights))
        tout.backward(torch.tensor(weights))
        np.testing.assert_allclose(t.grad.numpy(), tt.grad.numpy(), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(
            ours.weight.grad.numpy(), theirs.weight.grad.numpy(), rtol=1e-4, atol=1e-5
        )


@pytest.mark.parametrize(
    "build, words",
    [
        (lambda: nn.GroupNorm(4, 6), "GroupNorm: num_groups=4 does not divide num_channels=6"),
        (
            lambda: nn.LayerNorm(3)(tensor(np.zeros((2, 4)))),
            r"LayerNorm\(dim=3\): expected an "
            r"input whose last axis has 3",
        ),
        (lambda: nn.GroupNorm(2, 4)(tensor(np.zeros((2, 3, 5)))), r"expected an input \(N, 4, "),
        (lambda: nn.RMSNorm(2, eps=0), "RMSNorm: eps must be in"),
    ],
)
def test_norm_errors(build, words):
    with pytest.raises(ValueError, match=words):
        build()
