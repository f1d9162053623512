"""nn.Conv, nn.Conv2d, nn.ConvTranspose2d, nn.Upsample, nn.BatchNorm2d, nn.Flatten, ConvBN
and ResNet9: shapes, the course's draw order and bounds, NumPy/PyTorch references (forward
and backward), and bad input.
"""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
from helpers import scaled_draws

import needle as ndl
from needle import nn
from needle.apps.models import ConvBN, ResNet9


def _tensor(array: np.ndarray, requires_grad: bool = False) -> ndl.Tensor:
    return ndl.Tensor(array.astype(np.float32), requires_grad=requires_grad)


# ----- nn.Conv ------------------------------------------------------------------------------


def test_conv_draws_weight_then_bias_with_course_bounds():
    np.random.seed(3)
    layer = nn.Conv(3, 4, 5, stride=2)
    np.random.seed(3)
    fan_in = 3 * 25
    bound = math.sqrt(2) * math.sqrt(3 / fan_in)
    weight = scaled_draws(np.random.rand(5, 5, 3, 4), 2 * bound, -bound)
    bias = scaled_draws(np.random.rand(4), 2 / math.sqrt(fan_in), -1 / math.sqrt(fan_in))
    np.testing.assert_array_equal(layer.weight.numpy(), weight)
    np.testing.assert_array_equal(layer.bias.numpy(), bias)
    assert (layer.padding, layer.stride, layer.kernel_size) == (2, 2, 5)


def test_conv_without_bias_draws_only_the_weight():
    np.random.seed(5)
    layer = nn.Conv(2, 3, 3, bias=False)
    after = np.random.rand()
    np.random.seed(5)
    np.random.rand(3 * 3 * 2 * 3)
    assert layer.bias is None and after == np.random.rand()


def test_conv_tuple_arguments_use_their_first_element():
    layer = nn.Conv(2, 3, (3, 5), stride=(2, 1))
    assert layer.kernel_size == 3 and layer.stride == 2 and layer.weight.shape == (3, 3, 2, 3)


@pytest.mark.parametrize(
    "k, stride, hw",
    [(3, 1, (6, 6)), (3, 2, (7, 5)), (7, 4, (32, 32)), (4, 2, (6, 7)), (1, 1, (3, 3))],
)
def test_conv_layer_agrees_with_torch(k, stride, hw, rng, torch):
    layer = nn.Conv(3, 4, k, stride=stride)
    x_np = rng.standard_normal((2, 3) + hw).astype(np.float32)
    x = _tensor(x_np, requires_grad=True)
    out = layer(x)
    g = rng.standard_normal(out.shape).astype(np.float32)
    out.backward(_tensor(g))

    ref = torch.nn.Conv2d(3, 4, k, stride=stride, padding=k // 2)
    with torch.no_grad():
        ref.weight.copy_(torch.tensor(layer.weight.numpy().transpose(3, 2, 0, 1)))
        ref.bias.copy_(torch.tensor(layer.bias.numpy()))
    tx = torch.tensor(x_np, requires_grad=True)
    tout = ref(tx)
    tout.backward(torch.tensor(g))
    assert out.shape == tuple(tout.shape)
    np.testing.assert_allclose(out.numpy(), tout.detach().numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(x.grad.numpy(), tx.grad.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(
        layer.weight.grad.numpy(),
        ref.weight.grad.numpy().transpose(2, 3, 1, 0),
        rtol=1e-4,
        atol=1e-4,
    )
    np.testing.assert_allclose(layer.bias.grad.numpy(), ref.bias.grad.numpy(), rtol=1e-4, atol=1e-4)


def test_conv_layer_matches_numpy_reference(rng):
    """Independent of torch: out[n,o,i,j] = Σ x_pad[n,c,i+u,j+v]·W[u,v,c,o] + bias[o]."""
    layer = nn.Conv(2, 3, 3)
    x = rng.standard_normal((1, 2, 4, 5)).astype(np.float32)
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    w, b = layer.weight.numpy(), layer.bias.numpy()
    expected = np.zeros((1, 3, 4, 5))
    for i in range(4):
        for j in range(5):
            expected[0, :, i, j] = np.einsum("cuv,uvco->o", xp[0, :, i : i + 3, j : j + 3], w) + b
    np.testing.assert_allclose(layer(_tensor(x)).numpy(), expected, rtol=1e-5, atol=1e-5)


def test_conv_reads_replaced_weight_at_call_time(rng):
    layer = nn.Conv(1, 1, 1, bias=False)
    layer.weight = ndl.Tensor(np.full((1, 1, 1, 1), 2.0, dtype=np.float32))
    np.testing.assert_allclose(layer(ndl.init.ones(1, 1, 2, 2)).numpy(), np.full((1, 1, 2, 2), 2))


CONV_LAYER_ERRORS = [
    (
        "NHWC given",
        lambda: nn.Conv(3, 8, 3)(ndl.init.ones(2, 5, 5, 3)),
        ["Conv", "(2, 5, 5, 3)", "NHWC", "(N, 3, H, W)"],
    ),
    (
        "channels",
        lambda: nn.Conv(3, 8, 3)(ndl.init.ones(2, 4, 5, 5)),
        ["Conv", "(2, 4, 5, 5)", "(N, 3, H, W)"],
    ),
    ("3-D", lambda: nn.Conv(3, 8, 3)(ndl.init.ones(3, 5, 5)), ["Conv", "(3, 5, 5)", "reshape"]),
    ("stride 0", lambda: nn.Conv(3, 8, 3, stride=0), ["Conv", "stride", "0"]),
    ("kernel 0", lambda: nn.Conv(3, 8, 0), ["Conv", "kernel_size", "0"]),
    (
        "bn channels",
        lambda: nn.BatchNorm2d(4)(ndl.init.ones(2, 3, 5, 5)),
        ["BatchNorm2d", "(2, 3, 5, 5)", "(N, 4, H, W)"],
    ),
    ("bn 2-D", lambda: nn.BatchNorm2d(4)(ndl.init.ones(2, 4)), ["BatchNorm2d", "(2, 4)"]),
]


@pytest.mark.parametrize(
    "name, call, words", CONV_LAYER_ERRORS, ids=[e[0] for e in CONV_LAYER_ERRORS]
)
def test_conv_layer_errors(name, call, words):
    with pytest.raises(ValueError) as info:
        call()
    for word in words:
        assert word in str(info.value), (word, str(info.value))


# ----- nn.Conv2d, nn.ConvTranspose2d, nn.Upsample --------------------------------------------


def _agree_with_torch(layer, ref, x_shape, rng, torch) -> None:
    """Forward, input gradient and parameter gradients of ``layer`` and its torch twin."""
    with torch.no_grad():  # our (K_h, K_w, ·, ·) weight is torch's permuted by (2, 3, 1, 0)
        ref.weight.copy_(torch.tensor(layer.weight.numpy().transpose(3, 2, 0, 1).copy()))
        if layer.bias is not None:
            ref.bias.copy_(torch.tensor(layer.bias.numpy()))
    x_np = rng.standard_normal(x_shape).astype(np.float32)
    x = _tensor(x_np, requires_grad=True)
    out = layer(x)
    g = rng.standard_normal(out.shape).astype(np.float32)
    out.backward(_tensor(g))
    tx = torch.tensor(x_np, requires_grad=True)
    tout = ref(tx)
    tout.backward(torch.tensor(g))
    assert out.shape == tuple(tout.shape)
    np.testing.assert_allclose(out.numpy(), tout.detach().numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(x.grad.numpy(), tx.grad.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(
        layer.weight.grad.numpy(),
        ref.weight.grad.numpy().transpose(2, 3, 1, 0),
        rtol=1e-4,
        atol=1e-4,
    )
    if layer.bias is not None:
        np.testing.assert_allclose(
            layer.bias.grad.numpy(), ref.bias.grad.numpy(), rtol=1e-4, atol=1e-4
        )


CONV2D_CASES = [  # (in, out, kernel_size, keyword arguments, input (N, C, H, W))
    (3, 4, (3, 2), {"padding": (1, 0)}, (2, 3, 6, 5)),
    (4, 6, 3, {"stride": (2, 1), "dilation": 2, "groups": 2, "padding": 2}, (1, 4, 7, 6)),
    (3, 6, 3, {"groups": 3, "padding": "same", "bias": False}, (2, 3, 5, 5)),  # depthwise
    (2, 3, 4, {"padding": "same", "dilation": (1, 2)}, (1, 2, 6, 7)),  # even kernel
    (2, 2, 3, {"padding": "valid", "stride": 2}, (1, 2, 3, 3)),
]


@pytest.mark.filterwarnings("ignore:Using padding='same'")  # torch: it pads a copy
@pytest.mark.parametrize("case", CONV2D_CASES, ids=str)
def test_conv2d_agrees_with_torch(case, rng, torch):
    c_in, c_out, k, kwargs, x_shape = case
    _agree_with_torch(
        nn.Conv2d(c_in, c_out, k, **kwargs),
        torch.nn.Conv2d(c_in, c_out, k, **kwargs),
        x_shape,
        rng,
        torch,
    )


def test_conv2d_with_courses_padding_is_conv(rng):
    """Same draws in the same order, same numbers: Conv2d(i, o, k, padding=k // 2) is Conv."""
    np.random.seed(4)
    course = nn.Conv(3, 5, 3, stride=2)
    after_course = np.random.rand()
    np.random.seed(4)
    layer = nn.Conv2d(3, 5, 3, stride=2, padding=1)
    assert np.random.rand() == after_course  # as many draws
    np.testing.assert_array_equal(layer.weight.numpy(), course.weight.numpy())
    np.testing.assert_array_equal(layer.bias.numpy(), course.bias.numpy())
    x = _tensor(rng.standard_normal((2, 3, 7, 6)))
    np.testing.assert_array_equal(layer(x).numpy(), course(x).numpy())


def test_conv2d_draws_with_the_group_fan_in():
    np.random.seed(1)
    layer = nn.Conv2d(4, 6, (3, 2), groups=2)
    np.random.seed(1)
    fan_in = 2 * 3 * 2
    bound = math.sqrt(2) * math.sqrt(3 / fan_in)
    weight = scaled_draws(np.random.rand(3, 2, 2, 6), 2 * bound, -bound)
    bias = scaled_draws(np.random.rand(6), 2 / math.sqrt(fan_in), -1 / math.sqrt(fan_in))
    np.testing.assert_array_equal(layer.weight.numpy(), weight)
    np.testing.assert_array_equal(layer.bias.numpy(), bias)
    assert (layer.kernel_size, layer.stride, layer.padding) == ((3, 2), (1, 1), ((0, 0), (0, 0)))


def test_depthwise_conv2d_by_hand():
    """Independent of torch: a depthwise 1×2 kernel [1, -1] per channel, scaled by the
    channel's index + 1, is a horizontal difference of each channel on its own."""
    layer = nn.Conv2d(2, 2, (1, 2), groups=2, bias=False)
    layer.weight = ndl.Tensor(np.array([[[[1.0, 2.0]], [[-1.0, -2.0]]]], dtype=np.float32))
    x = np.arange(2 * 2 * 3, dtype=np.float32).reshape(1, 2, 2, 3) ** 2
    expected = (x[..., :-1] - x[..., 1:]) * np.array([1.0, 2.0]).reshape(1, 2, 1, 1)
    np.testing.assert_allclose(layer(_tensor(x)).numpy(), expected)


TRANSPOSED_LAYER_CASES = [  # (in, out, kernel_size, keyword arguments, input (N, C, H, W))
    (4, 3, 3, {"stride": 2, "padding": 1, "output_padding": 1}, (2, 4, 3, 4)),
    (4, 6, (2, 3), {"stride": (1, 2), "groups": 2, "dilation": (2, 1)}, (1, 4, 3, 3)),
    (2, 2, 4, {"stride": 2, "padding": 1, "bias": False}, (1, 2, 1, 1)),
]


@pytest.mark.parametrize("case", TRANSPOSED_LAYER_CASES, ids=str)
def test_conv_transpose2d_agrees_with_torch(case, rng, torch):
    c_in, c_out, k, kwargs, x_shape = case
    _agree_with_torch(
        nn.ConvTranspose2d(c_in, c_out, k, **kwargs),
        torch.nn.ConvTranspose2d(c_in, c_out, k, **kwargs),
        x_shape,
        rng,
        torch,
    )


def test_conv_transpose2d_by_hand():
    """Independent of torch: stride 2 with a 2×2 kernel of ones copies every pixel to a
    2×2 block (nearest upsampling), plus the bias."""
    layer = nn.ConvTranspose2d(1, 1, 2, stride=2)
    layer.weight = ndl.init.ones(2, 2, 1, 1)
    layer.bias = ndl.Tensor(np.array([0.5], dtype=np.float32))
    x = ndl.Tensor(np.array([[[[1.0, 2.0], [3.0, 4.0]]]], dtype=np.float32))
    expected = nn.Upsample(2)(x).numpy() + 0.5
    np.testing.assert_array_equal(layer(x).numpy(), expected)
    assert layer.weight.shape == (2, 2, 1, 1)


def test_conv_transpose2d_undoes_the_shape_of_conv2d():
    down = nn.Conv2d(3, 8, 3, stride=2, padding=1)
    up = nn.ConvTranspose2d(8, 3, 3, stride=2, padding=1, output_padding=1)
    x = ndl.init.ones(1, 3, 8, 6)
    assert up(down(x)).shape == x.shape
    assert up.weight.shape == (3, 3, 3, 8)


@pytest.mark.parametrize("scale", [2, (3, 1)])
def test_upsample_agrees_with_torch_and_numpy(scale, rng, torch):
    x_np = rng.standard_normal((2, 3, 2, 4)).astype(np.float32)
    x = _tensor(x_np, requires_grad=True)
    out = nn.Upsample(scale_factor=scale)(x)
    s_h, s_w = (scale, scale) if isinstance(scale, int) else scale
    np.testing.assert_array_equal(out.numpy(), x_np.repeat(s_h, 2).repeat(s_w, 3))
    g = rng.standard_normal(out.shape).astype(np.float32)
    out.backward(_tensor(g))  # each pixel's gradient is the sum over its block
    block_sums = g.reshape(2, 3, 2, s_h, 4, s_w).sum(axis=(3, 5))
    np.testing.assert_allclose(x.grad.numpy(), block_sums, rtol=1e-6)
    ref = torch.nn.Upsample(scale_factor=scale, mode="nearest")(torch.tensor(x_np))
    np.testing.assert_array_equal(out.numpy(), ref.numpy())


NEW_LAYER_ERRORS = [
    (
        "Conv2d groups",
        lambda: nn.Conv2d(4, 6, 3, groups=4),
        ValueError,
        ["Conv2d", "groups=4", "in_channels=4", "out_channels=6"],
    ),
    (
        "Conv2d same stride",
        lambda: nn.Conv2d(2, 2, 3, stride=2, padding="same"),
        ValueError,
        ["Conv2d", "'same'", "stride 1"],
    ),
    (
        "Conv2d kernel triple",
        lambda: nn.Conv2d(2, 2, (3, 3, 3)),
        ValueError,
        ["Conv2d", "kernel_size", "(3, 3, 3)"],
    ),
    (
        "Conv2d channels",
        lambda: nn.Conv2d(3, 2, 3)(ndl.init.ones(1, 4, 5, 5)),
        ValueError,
        ["Conv2d(3, 2)", "(1, 4, 5, 5)", "(N, 3, H, W)"],
    ),
    (
        "Conv2d empty output",
        lambda: nn.Conv2d(1, 1, 5, dilation=2)(ndl.init.ones(1, 1, 6, 9)),
        ValueError,
        ["Conv2d(1, 1)", "(1, 1, 6, 9)", "dilated by (2, 2) to 9×9", "6×9"],
    ),
    (
        "ConvTranspose2d output_padding",
        lambda: nn.ConvTranspose2d(2, 2, 3, output_padding=1),
        ValueError,
        ["ConvTranspose2d", "output_padding=1", "smaller than the stride"],
    ),
    (
        "ConvTranspose2d same",
        lambda: nn.ConvTranspose2d(2, 2, 3, padding="same"),
        ValueError,
        ["ConvTranspose2d", "'same'"],
    ),
    (
        "ConvTranspose2d groups",
        lambda: nn.ConvTranspose2d(3, 4, 3, groups=2),
        ValueError,
        ["ConvTranspose2d", "groups=2", "in_channels=3"],
    ),
    (
        "ConvTranspose2d NHWC",
        lambda: nn.ConvTranspose2d(3, 2, 3)(ndl.init.ones(1, 4, 4, 3)),
        ValueError,
        ["ConvTranspose2d(3, 2)", "(1, 4, 4, 3)", "NHWC"],
    ),
    (
        "ConvTranspose2d empty",
        lambda: nn.ConvTranspose2d(1, 1, 1, padding=1)(ndl.init.ones(1, 1, 1, 1)),
        ValueError,
        ["ConvTranspose2d(1, 1)", "(1, 1, 1, 1)", "empty output"],
    ),
    (
        "Upsample mode",
        lambda: nn.Upsample(2, mode="bilinear"),
        ValueError,
        ["Upsample", "'bilinear'", "'nearest'"],
    ),
    ("Upsample factor", lambda: nn.Upsample(0), ValueError, ["Upsample", "scale_factor", "0"]),
    (
        "Upsample 3-D",
        lambda: nn.Upsample(2)(ndl.init.ones(3, 4, 4)),
        ValueError,
        ["upsample_nearest2d", "(3, 4, 4)"],
    ),
]


@pytest.mark.parametrize(
    "name, call, error, words", NEW_LAYER_ERRORS, ids=[e[0] for e in NEW_LAYER_ERRORS]
)
def test_new_conv_layer_errors(name, call, error, words):
    with pytest.raises(error) as info:
        call()
    for word in words:
        assert word in str(info.value), (word, str(info.value))


# ----- nn.BatchNorm2d -----------------------------------------------------------------------


def test_batchnorm2d_normalises_each_channel_over_n_h_w(rng):
    x = rng.standard_normal((4, 3, 2, 5)).astype(np.float32) * 3 + 1
    bn = nn.BatchNorm2d(3)
    bn.weight = ndl.Tensor(np.array([1.0, 2.0, 0.5], dtype=np.float32))
    bn.bias = ndl.Tensor(np.array([0.0, -1.0, 3.0], dtype=np.float32))
    out = bn(_tensor(x)).numpy()
    mean = x.mean(axis=(0, 2, 3), keepdims=True)
    var = x.var(axis=(0, 2, 3), keepdims=True)
    expected = (x - mean) / np.sqrt(var + 1e-5) * np.array([1, 2, 0.5]).reshape(1, 3, 1, 1)
    expected += np.array([0, -1, 3]).reshape(1, 3, 1, 1)
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(bn.running_mean.numpy(), 0.1 * mean.reshape(3), rtol=1e-5)
    np.testing.assert_allclose(bn.running_var.numpy(), 0.9 + 0.1 * var.reshape(3), rtol=1e-5)
    bn.eval()
    expected_eval = (x - bn.running_mean.numpy().reshape(1, 3, 1, 1)) / np.sqrt(
        bn.running_var.numpy().reshape(1, 3, 1, 1) + 1e-5
    )
    expected_eval = expected_eval * np.array([1, 2, 0.5]).reshape(1, 3, 1, 1)
    expected_eval += np.array([0, -1, 3]).reshape(1, 3, 1, 1)
    np.testing.assert_allclose(bn(_tensor(x)).numpy(), expected_eval, rtol=1e-4, atol=1e-4)


def test_batchnorm2d_is_a_batchnorm1d_without_draws():
    np.random.seed(2)
    bn = nn.BatchNorm2d(5)
    after = np.random.rand()
    np.random.seed(2)
    assert after == np.random.rand()
    assert isinstance(bn, nn.BatchNorm1d)
    assert [name for name, _ in bn.named_parameters()] == ["weight", "bias"]
    assert not isinstance(bn.running_mean, nn.Parameter)


def test_batchnorm2d_gradients_agree_with_torch(rng, torch):
    x_np = rng.standard_normal((3, 2, 4, 3)).astype(np.float32)
    g = rng.standard_normal(x_np.shape).astype(np.float32)
    bn = nn.BatchNorm2d(2)
    x = _tensor(x_np, requires_grad=True)
    bn(x).backward(_tensor(g))
    ref = torch.nn.BatchNorm2d(2)
    tx = torch.tensor(x_np, requires_grad=True)
    ref(tx).backward(torch.tensor(g))
    np.testing.assert_allclose(x.grad.numpy(), tx.grad.numpy(), rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(
        bn.weight.grad.numpy(), ref.weight.grad.numpy(), rtol=1e-4, atol=1e-4
    )


def test_flatten_keeps_the_batch_axis():
    assert nn.Flatten()(ndl.init.ones(2, 3, 4, 5)).shape == (2, 60)


# ----- ConvBN and ResNet9 -------------------------------------------------------------------


def test_convbn_parameter_count():
    a, b, k = 3, 5, 3
    assert ConvBN(a, b, k, 1).num_parameters() == k * k * a * b + b + 2 * b


@pytest.mark.parametrize("training", [True, False])
def test_convbn_channels_last_path_equals_its_three_layers(training, rng):
    """ConvBN computes NHWC inside; it must give relu(bn(conv(x))) of the NCHW layers,
    values and gradients (input, and every parameter)."""
    np.random.seed(3)
    block = ConvBN(3, 4, 3, 2)
    block.train() if training else block.eval()
    block.bn.running_mean = ndl.Tensor(rng.standard_normal(4), dtype="float32", requires_grad=False)
    x_data = rng.standard_normal((2, 3, 7, 6)).astype(np.float32)
    results = []
    for forward in (block, lambda x: block.relu(block.bn(block.conv(x)))):
        x = ndl.Tensor(x_data, requires_grad=True)
        out = forward(x)
        (
            out * ndl.Tensor(np.arange(out.size, dtype=np.float32).reshape(out.shape))
        ).sum().backward()
        results.append([out.numpy(), x.grad.numpy()] + [p.grad.numpy() for p in block.parameters()])
        for p in block.parameters():
            p.grad = None
    assert results[0][0].shape == (2, 4, 4, 3)
    for got, expected in zip(*results):
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_convbn_rejects_nhwc_input_naming_the_conv():
    with pytest.raises(ValueError, match=r"Conv\(in_channels=3\).*looks NHWC"):
        ConvBN(3, 4, 3, 1)(ndl.init.ones(2, 5, 5, 3))


def test_resnet9_architecture():
    model = ResNet9()
    assert model.num_parameters() == 431946
    assert model(ndl.init.rand(2, 3, 32, 32)).shape == (2, 10)
    names = [name for name, _ in model.named_parameters()]
    assert len(names) == len(set(names)) == len(model.parameters())


def _draws_of_resnet9() -> int:
    """Random numbers ResNet9 draws: every conv weight and bias and both Linears."""
    convs = [
        (3, 16, 7),
        (16, 32, 3),
        (32, 32, 3),
        (32, 32, 3),
        (32, 64, 3),
        (64, 128, 3),
        (128, 128, 3),
        (128, 128, 3),
    ]
    return sum(k * k * a * b + b for a, b, k in convs) + (128 * 128 + 128) + (128 * 10 + 10)


def test_resnet9_draws_in_course_order():
    np.random.seed(7)
    model = ResNet9()
    after = np.random.rand()
    np.random.seed(7)
    first_weight = np.random.rand(7, 7, 3, 16)
    np.random.rand(_draws_of_resnet9() - first_weight.size)
    assert after == np.random.rand()
    bound = math.sqrt(2) * math.sqrt(3 / (3 * 49))
    np.testing.assert_array_equal(
        model.model[0].conv.weight.numpy(), scaled_draws(first_weight, 2 * bound, -bound)
    )


def test_importing_models_does_not_reseed():
    # A fresh interpreter: reloading the module here would replace the classes other tests use.
    code = (
        "import numpy as np; np.random.seed(11); np.random.rand(3); "
        "before = np.random.get_state()[1].copy(); import needle.apps.models; "
        "assert (np.random.get_state()[1] == before).all(), 'import reseeded NumPy'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def _torch_resnet9(model: ResNet9, torch):
    """A PyTorch copy of ``model``, weights copied over (Conv weights permuted (3, 2, 0, 1))."""
    tnn = torch.nn

    def convbn(block: ConvBN):
        conv = tnn.Conv2d(
            block.conv.in_channels,
            block.conv.out_channels,
            block.conv.kernel_size,
            stride=block.conv.stride,
            padding=block.conv.padding,
        )
        with torch.no_grad():
            conv.weight.copy_(torch.tensor(block.conv.weight.numpy().transpose(3, 2, 0, 1)))
            conv.bias.copy_(torch.tensor(block.conv.bias.numpy()))
        return tnn.Sequential(conv, tnn.BatchNorm2d(block.conv.out_channels), tnn.ReLU())

    class Residual(tnn.Module):
        def __init__(self, fn):
            super().__init__()
            self.fn = fn

        def forward(self, x):
            return self.fn(x) + x

    def linear(layer: nn.Linear):
        out = tnn.Linear(layer.in_features, layer.out_features)
        with torch.no_grad():
            out.weight.copy_(torch.tensor(layer.weight.numpy().T))
            out.bias.copy_(torch.tensor(layer.bias.numpy().reshape(-1)))
        return out

    layers = []
    for module in model.model:
        if isinstance(module, ConvBN):
            layers.append(convbn(module))
        elif isinstance(module, nn.Residual):
            layers.append(Residual(tnn.Sequential(*[convbn(m) for m in module.fn])))
        elif isinstance(module, nn.Linear):
            layers.append(linear(module))
        elif isinstance(module, nn.ReLU):
            layers.append(tnn.ReLU())
        else:
            layers.append(tnn.Flatten())
    return tnn.Sequential(*layers)


def test_resnet9_forward_and_backward_agree_with_torch(rng, torch):
    model = ResNet9()
    ref = _torch_resnet9(model, torch)
    x_np = rng.random((4, 3, 32, 32)).astype(np.float32)
    out = model(_tensor(x_np))
    tout = ref(torch.tensor(x_np))
    np.testing.assert_allclose(out.numpy(), tout.detach().numpy(), rtol=1e-3, atol=1e-4)
    out.sum().backward()
    tout.sum().backward()
    first = model.model[0].conv.weight.grad.numpy()
    np.testing.assert_allclose(
        first, ref[0][0].weight.grad.numpy().transpose(2, 3, 1, 0), rtol=1e-2, atol=1e-3
    )
    # Eval mode with the same running statistics (torch's running_var uses the unbiased
    # batch variance, the course's the biased one, so copy needle's over).
    bns = [m for m in ref.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    ours = [m for m in model.named_modules() if isinstance(m[1], nn.BatchNorm2d)]
    assert len(bns) == len(ours) == 8
    with torch.no_grad():
        for theirs, (_, mine) in zip(bns, ours):
            theirs.running_mean.copy_(torch.tensor(mine.running_mean.numpy()))
            theirs.running_var.copy_(torch.tensor(mine.running_var.numpy()))
    model.eval()
    ref.eval()
    np.testing.assert_allclose(
        model(_tensor(x_np)).numpy(), ref(torch.tensor(x_np)).detach(), rtol=1e-3, atol=1e-4
    )
