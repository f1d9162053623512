"""The convolution ops: forward against a loop reference, gradients against finite
differences (every stride, odd sizes, padding beyond K − 1, non-square images and
rectangular kernels), second derivatives, PyTorch cross-checks, ``pad``, and the
hw4 semantics of flip/dilate/undilate/stack/split; ``convolution`` and
``conv_transpose`` with per-side padding, dilation and groups against PyTorch, and
their errors (the op table in test_ops.py checks them against NumPy).
"""

from __future__ import annotations

import numpy as np
import pytest

import needle as ndl
from needle.ops.ops_conv import Conv, ConvInputGrad, ConvWeightGrad
from needle.testing import gradcheck


def reference_conv(a: np.ndarray, b: np.ndarray, stride: int, padding) -> np.ndarray:
    """out[n,i,j,o] = Σ_{u,v,c} a_pad[n, i·s+u, j·s+v, c]·b[u,v,c,o], pixel by pixel."""
    ph, pw = (padding, padding) if np.isscalar(padding) else padding
    a = np.pad(a, ((0, 0), (ph, ph), (pw, pw), (0, 0)))
    kh, kw, _, o = b.shape
    ho = (a.shape[1] - kh) // stride + 1
    wo = (a.shape[2] - kw) // stride + 1
    out = np.zeros((a.shape[0], ho, wo, o))
    for i in range(ho):
        for j in range(wo):
            field = a[:, i * stride : i * stride + kh, j * stride : j * stride + kw, :]
            out[:, i, j, :] = np.einsum("nuvc,uvco->no", field, b)
    return out


# (N, H, W, C_in, C_out, K, stride, padding): stride 1-4, odd and even sizes, H ≠ W,
# padding 0, K − 1 and beyond K − 1, and the (H + 2p − K) mod s cases the crop handles.
CASES = [
    (2, 5, 5, 3, 2, 3, 1, 1),
    (1, 6, 6, 2, 3, 3, 1, 0),
    (2, 7, 7, 2, 2, 3, 2, 1),  # (7 + 2 - 3) mod 2 = 0: the dilate recipe needs its crop
    (1, 7, 5, 2, 2, 3, 2, 0),  # non-square image, odd sizes
    (1, 8, 8, 2, 2, 3, 2, 1),  # (8 + 2 - 3) mod 2 = 1 = s - 1: the ResNet9 case
    (2, 9, 6, 1, 2, 2, 3, 1),  # even kernel, stride 3
    (1, 11, 11, 3, 2, 7, 4, 3),  # ResNet9's first layer, scaled down
    (1, 4, 4, 2, 1, 3, 2, 4),  # padding > K - 1
    (1, 4, 5, 2, 2, 2, 1, 3),  # padding > K - 1 at stride 1 (the col2im input gradient)
    (1, 3, 3, 1, 1, 1, 1, 0),  # 1×1 kernel
    # Kernels larger than the image: taps that only ever see padding are skipped.
    (2, 1, 1, 3, 2, 3, 1, 1),  # ResNet9's 1×1 layers: only the centre tap is live
    (2, 2, 2, 2, 3, 3, 2, 1),  # ResNet9's 2×2 → 1×1 layer: taps 1 and 2
    (1, 1, 4, 2, 2, 3, 1, 1),  # trimmed rows only
    (1, 2, 2, 1, 2, 5, 1, 2),  # taps 1–3 of 5
    (1, 1, 1, 1, 1, 1, 5, 1),  # every window in the padding: the output is 0
]


def _case_arrays(case, rng):
    n, h, w, c, o, k, s, p = case
    return rng.standard_normal((n, h, w, c)), rng.standard_normal((k, k, c, o)), s, p


@pytest.mark.parametrize("case", CASES, ids=str)
def test_conv_forward_matches_reference(case, rng):
    a, b, s, p = _case_arrays(case, rng)
    out = ndl.conv(ndl.Tensor(a, dtype="float64"), ndl.Tensor(b, dtype="float64"), s, p)
    np.testing.assert_allclose(out.numpy(), reference_conv(a, b, s, p), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("case", CASES, ids=str)
def test_conv_gradients_match_finite_differences(case, rng):
    a, b, s, p = _case_arrays(case, rng)
    assert gradcheck(lambda x, w: ndl.conv(x, w, stride=s, padding=p), a, b)


def test_conv_float32_stays_float32(rng):
    a = ndl.Tensor(rng.standard_normal((2, 5, 5, 3)), dtype="float32", requires_grad=True)
    b = ndl.Tensor(rng.standard_normal((3, 3, 3, 4)), dtype="float32", requires_grad=True)
    out = ndl.conv(a, b, stride=2, padding=1)
    out.sum().backward()
    assert out.dtype == a.grad.dtype == b.grad.dtype == "float32"


def test_default_paddings_are_the_courses():
    a, b = ndl.init.ones(1, 5, 5, 1), ndl.init.ones(3, 3, 1, 1)
    assert ndl.conv(a, b).shape == (1, 5, 5, 1)  # the function pads by 1
    assert Conv()(a, b).shape == (1, 3, 3, 1)  # the op class by 0


# ----- the op class: rectangular kernels and padding pairs --------------------------------


@pytest.mark.parametrize(
    "shape_a, kernel, stride, padding",
    [
        ((1, 5, 7, 2), (2, 3), 1, (1, 0)),
        ((2, 6, 5, 1), (3, 2), 2, (0, 2)),
        ((1, 4, 9, 2), (4, 6), 3, (2, 1)),
        ((2, 1, 6, 2), (3, 2), 1, (1, 0)),  # dead kernel rows, live columns
    ],
)
def test_conv_op_rectangular_kernel(shape_a, kernel, stride, padding, rng):
    a = rng.standard_normal(shape_a)
    b = rng.standard_normal(kernel + (shape_a[3], 2))
    out = Conv(stride, padding)(ndl.Tensor(a, dtype="float64"), ndl.Tensor(b, dtype="float64"))
    np.testing.assert_allclose(out.numpy(), reference_conv(a, b, stride, padding), atol=1e-10)
    assert gradcheck(lambda x, w: Conv(stride, padding)(x, w), a, b)


# ----- the gradient ops are differentiable: second derivatives -----------------------------


@pytest.mark.parametrize("case", CASES[:6] + CASES[-8:], ids=str)
def test_gradient_ops_have_correct_gradients(case, rng):
    a, b, s, p = _case_arrays(case, rng)
    g = rng.standard_normal(reference_conv(a, b, s, p).shape)
    pair = (p, p)
    assert gradcheck(lambda gg, w: ConvInputGrad(a.shape[1:3], s, pair)(gg, w), g, b)
    assert gradcheck(lambda x, gg: ConvWeightGrad(b.shape[:2], s, pair)(x, gg), a, g)


def test_second_derivative_through_backward(rng):
    """d/db of <∂L/∂a, R> for L = <conv(a, b), G>, against central differences in b."""
    a, b, s, p = _case_arrays(CASES[2], rng)
    g = rng.standard_normal(reference_conv(a, b, s, p).shape)
    r = rng.standard_normal(a.shape)

    def inner(b_values: np.ndarray, create_graph: bool = False):
        x = ndl.Tensor(a, dtype="float64", requires_grad=True)
        w = ndl.Tensor(b_values, dtype="float64", requires_grad=True)
        ndl.conv(x, w, s, p).backward(ndl.Tensor(g, dtype="float64"), create_graph=create_graph)
        return x.grad, w

    grad_a, w = inner(b, create_graph=True)
    (grad_a * ndl.Tensor(r, dtype="float64")).sum().backward()
    numeric = np.zeros_like(b)
    for idx in np.ndindex(b.shape):
        values = []
        for step in (1e-6, -1e-6):
            shifted = b.copy()
            shifted[idx] += step
            values.append(np.sum(inner(shifted)[0].numpy() * r))
        numeric[idx] = (values[0] - values[1]) / 2e-6
    np.testing.assert_allclose(w.grad.numpy(), numeric, rtol=1e-5, atol=1e-6)


def test_dead_taps_are_skipped():
    from needle.ops.ops_conv import _live_taps

    one, two = (1, 1), (2, 2)
    assert _live_taps(one, one, (3, 3), one, one, one) == ((slice(1, 2), slice(1, 2)), (0, 0))
    assert _live_taps((2, 8), (1, 4), (3, 3), two, one, one) == ((slice(1, 3), slice(0, 3)), (0, 1))
    assert _live_taps(one, one, one, (5, 5), one, one) == ((slice(0, 1), slice(0, 1)), one)
    # dilated: tap 0 of a 1×1 image padded by 2 (dilation 2) reads only padding; tap 1 stays
    assert _live_taps(one, one, (3, 3), one, two, two) == ((slice(1, 2), slice(1, 2)), (0, 0))


def test_data_input_gets_no_input_gradient(rng):
    """The first layer's data needs no gradient: only the weight's is computed."""
    x = ndl.Tensor(rng.standard_normal((1, 5, 5, 2)), requires_grad=False)
    w = ndl.Tensor(rng.standard_normal((3, 3, 2, 2)), requires_grad=True)
    ndl.conv(x, w, 2, 1).sum().backward()
    assert x.grad is None and w.grad.shape == (3, 3, 2, 2)


# ----- hw4's dilate-and-convolve recipe agrees (and exercises dilate/flip/crop) --------------


@pytest.mark.parametrize("case", [CASES[2], CASES[3], CASES[4], CASES[5]], ids=str)
def test_input_gradient_equals_hw4_recipe(case, rng):
    a, b, s, p = _case_arrays(case, rng)
    _, h, w, _ = a.shape
    k = b.shape[0]
    G = ndl.Tensor(rng.standard_normal(reference_conv(a, b, s, p).shape), dtype="float64")
    x = ndl.Tensor(a, dtype="float64", requires_grad=True)
    ndl.conv(x, ndl.Tensor(b, dtype="float64"), s, p).backward(G)

    g_d = ndl.dilate(G, (1, 2), s - 1)
    crop_h, crop_w = h + 2 * p - k + 1, w + 2 * p - k + 1  # the general-stride fix
    g_d = ndl.Tensor(g_d.numpy()[:, :crop_h, :crop_w], dtype="float64")
    w_f = ndl.transpose(ndl.flip(ndl.Tensor(b, dtype="float64"), (0, 1)), (2, 3))
    recipe = ndl.conv(g_d, w_f, 1, k - 1 - p) if p <= k - 1 else None
    if recipe is None:
        full = ndl.conv(g_d, w_f, 1, k - 1).numpy()
        expected = full[:, p : p + h, p : p + w]
    else:
        expected = recipe.numpy()
    np.testing.assert_allclose(x.grad.numpy(), expected, rtol=1e-10, atol=1e-10)


# ----- PyTorch as a second, independent oracle ---------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=str)
def test_conv_forward_and_backward_agree_with_torch(case, rng, torch):
    a, b, s, p = _case_arrays(case, rng)
    x = ndl.Tensor(a, dtype="float64", requires_grad=True)
    w = ndl.Tensor(b, dtype="float64", requires_grad=True)
    out = ndl.conv(x, w, s, p)
    g = rng.standard_normal(out.shape)
    out.backward(ndl.Tensor(g, dtype="float64"))

    def nchw(array, axes):  # torch.tensor keeps NumPy's strides, which its conv may refuse
        return torch.tensor(np.ascontiguousarray(array.transpose(axes)))

    tx = nchw(a, (0, 3, 1, 2)).requires_grad_()
    tw = nchw(b, (3, 2, 0, 1)).requires_grad_()
    tout = torch.nn.functional.conv2d(tx, tw, stride=s, padding=p)
    tout.backward(nchw(g, (0, 3, 1, 2)))
    np.testing.assert_allclose(out.numpy(), tout.detach().numpy().transpose(0, 2, 3, 1), atol=1e-10)
    np.testing.assert_allclose(x.grad.numpy(), tx.grad.numpy().transpose(0, 2, 3, 1), atol=1e-10)
    np.testing.assert_allclose(w.grad.numpy(), tw.grad.numpy().transpose(2, 3, 1, 0), atol=1e-10)


# ----- pad ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "shape, pairs",
    [((3,), ((1, 2),)), ((2, 3), ((0, 1), (2, 0))), ((1, 2, 2), ((1, 1), (0, 0), (3, 1)))],
)
def test_pad_forward_and_gradient(shape, pairs, rng):
    a = rng.standard_normal(shape)
    np.testing.assert_array_equal(
        ndl.pad(ndl.Tensor(a, dtype="float64"), pairs).numpy(), np.pad(a, pairs)
    )
    assert gradcheck(lambda x: ndl.pad(x, pairs), a)
    assert gradcheck(lambda x: ndl.pad(ndl.pad(x, pairs), pairs), a)  # Crop's gradient too


def test_pad_leaves_input_unchanged(rng):
    t = ndl.Tensor(rng.standard_normal((2, 2)))
    before = t.numpy().copy()
    ndl.pad(t, ((1, 1), (1, 1)))
    np.testing.assert_array_equal(t.numpy(), before)


# ----- hw4 semantics of the other ops -------------------------------------------------------


def test_dilate_appends_trailing_zeros():
    out = ndl.dilate(ndl.Tensor([[1.0, 2.0]]), axes=(1,), dilation=2).numpy()
    np.testing.assert_array_equal(out, [[1, 0, 0, 2, 0, 0]])
    assert ndl.dilate(ndl.init.ones(2, 3), axes=(0, 1), dilation=1).shape == (4, 6)


def test_undilate_keeps_every_d_plus_1th_element():
    a = np.arange(12.0).reshape(2, 6)
    np.testing.assert_array_equal(ndl.undilate(ndl.Tensor(a), (1,), 2).numpy(), a[:, ::3])


def test_flip_is_a_new_array():
    t = ndl.Tensor([[1.0, 2.0], [3.0, 4.0]])
    np.testing.assert_array_equal(ndl.flip(t, axes=(0, 1)).numpy(), [[4, 3], [2, 1]])
    np.testing.assert_array_equal(t.numpy(), [[1, 2], [3, 4]])


def test_stack_gradient_is_one_tensor_tuple():
    a = ndl.init.ones(2, 3, requires_grad=True)
    b = ndl.init.zeros(2, 3, requires_grad=True)
    node = ndl.stack([a, b], axis=1)
    grad = node.op.gradient(ndl.init.ones(2, 2, 3), node)
    assert isinstance(grad, ndl.TensorTuple) and len(grad) == 2
    assert [g.shape for g in grad] == [(2, 3), (2, 3)]


def test_split_gives_tensors_without_the_axis(rng):
    a = rng.standard_normal((2, 3, 4))
    parts = ndl.split(ndl.Tensor(a, dtype="float64"), 1)
    assert len(parts) == 3
    for i, part in enumerate(parts):
        np.testing.assert_array_equal(part.numpy(), a[:, i])


# ----- bad input ----------------------------------------------------------------------------


def T(*shape: int) -> ndl.Tensor:
    return ndl.init.ones(*shape)


CONV_ERRORS = [
    (
        "3-D input",
        lambda: ndl.conv(T(5, 5, 3), T(3, 3, 3, 2)),
        ValueError,
        ["conv", "(5, 5, 3)", "NHWC"],
    ),
    ("3-D weight", lambda: ndl.conv(T(1, 5, 5, 3), T(3, 3, 3)), ValueError, ["conv", "(3, 3, 3)"]),
    (
        "channels",
        lambda: ndl.conv(T(1, 5, 5, 4), T(3, 3, 3, 2)),
        ValueError,
        ["conv", "4 channels", "C_in=3"],
    ),
    (
        "NCHW given",
        lambda: ndl.conv(T(1, 3, 5, 5), T(3, 3, 3, 2)),
        ValueError,
        ["conv", "(1, 3, 5, 5)", "NCHW"],
    ),
    (
        "non-square kernel",
        lambda: ndl.conv(T(1, 5, 5, 1), T(3, 2, 1, 1)),
        ValueError,
        ["conv", "square", "(3, 2, 1, 1)"],
    ),
    (
        "stride 0",
        lambda: ndl.conv(T(1, 5, 5, 1), T(3, 3, 1, 1), stride=0),
        ValueError,
        ["conv", "stride", ">= 1", "0"],
    ),
    (
        "negative padding",
        lambda: ndl.conv(T(1, 5, 5, 1), T(3, 3, 1, 1), padding=-1),
        ValueError,
        ["conv", "padding", ">= 0", "-1"],
    ),
    (
        "float stride",
        lambda: ndl.conv(T(1, 5, 5, 1), T(3, 3, 1, 1), stride=1.5),
        TypeError,
        ["conv", "stride", "1.5"],
    ),
    (
        "kernel too large",
        lambda: ndl.conv(T(1, 3, 4, 1), T(7, 7, 1, 1), padding=1),
        ValueError,
        ["conv", "kernel size 7", "larger than the padded input", "5×6"],
    ),
    (
        "not a tensor",
        lambda: ndl.conv(np.ones((1, 3, 3, 1)), T(1, 1, 1, 1)),
        TypeError,
        ["conv", "ndarray"],
    ),
    (
        "pad pair count",
        lambda: ndl.pad(T(2, 3), ((1, 1),)),
        ValueError,
        ["pad", "(2, 3)", "2 pairs"],
    ),
    ("pad negative", lambda: ndl.pad(T(2), ((-1, 0),)), ValueError, ["pad", "(-1, 0)"]),
]


@pytest.mark.parametrize("name, call, error, words", CONV_ERRORS, ids=[e[0] for e in CONV_ERRORS])
def test_conv_errors(name, call, error, words):
    with pytest.raises(error) as info:
        call()
    for word in words:
        assert word in str(info.value), (word, str(info.value))


# ----- convolution and conv_transpose: every option, against PyTorch -----------------------

# (a shape NHWC, weight shape, stride, padding, dilation, groups)
GENERAL_CASES = [
    ((2, 5, 6, 4), (3, 2, 2, 6), (1, 2), ((1, 0), (2, 1)), (2, 1), 2),
    ((1, 7, 7, 3), (3, 3, 1, 3), 2, 1, 2, 3),  # depthwise, dilated
    ((1, 1, 1, 2), (3, 3, 2, 2), 1, 2, 2, 1),  # a 1×1 image: only the centre tap is live
    ((2, 4, 5, 2), (2, 2, 1, 4), 1, "same", 1, 2),  # even kernel: the odd pixel after
    ((1, 6, 6, 2), (3, 3, 2, 2), (3, 2), ((4, 4), (1, 1)), (1, 3), 1),
    ((1, 3, 3, 4), (1, 1, 1, 8), 1, "valid", 1, 4),
    ((1, 1, 2, 4), (3, 3, 2, 4), 1, 1, 1, 2),  # groups with dead kernel rows
    ((2, 5, 5, 3), (3, 3, 1, 6), 2, 1, 1, 3),  # depthwise with two outputs per channel
]


def _torch_padding(padding, kernel) -> tuple:
    """(left, right, top, bottom) for torch.nn.functional.pad."""
    if padding == "same":  # PyTorch's: the odd pixel after
        padding = [((k - 1) // 2, k // 2) for k in kernel]
    elif padding == "valid":
        padding = 0
    if np.isscalar(padding):
        padding = (padding, padding)
    (top, bottom), (left, right) = [(p, p) if np.isscalar(p) else tuple(p) for p in padding]
    return (left, right, top, bottom)


def _compare_with_torch(out, x, w, tout, tx, tw):
    np.testing.assert_allclose(out.numpy(), tout.detach().numpy().transpose(0, 2, 3, 1), atol=1e-10)
    np.testing.assert_allclose(x.grad.numpy(), tx.grad.numpy().transpose(0, 2, 3, 1), atol=1e-10)
    np.testing.assert_allclose(w.grad.numpy(), tw.grad.numpy().transpose(2, 3, 1, 0), atol=1e-10)


@pytest.mark.parametrize("case", GENERAL_CASES, ids=str)
def test_convolution_agrees_with_torch(case, rng, torch):
    a_shape, b_shape, stride, padding, dilation, groups = case
    a, b = rng.standard_normal(a_shape), rng.standard_normal(b_shape)
    x = ndl.Tensor(a, dtype="float64", requires_grad=True)
    w = ndl.Tensor(b, dtype="float64", requires_grad=True)
    out = ndl.convolution(x, w, stride=stride, padding=padding, dilation=dilation, groups=groups)
    g = rng.standard_normal(out.shape)
    out.backward(ndl.Tensor(g, dtype="float64"))
    tx = torch.tensor(a.transpose(0, 3, 1, 2).copy(), requires_grad=True)
    tw = torch.tensor(b.transpose(3, 2, 0, 1).copy(), requires_grad=True)
    padded = torch.nn.functional.pad(tx, _torch_padding(padding, b_shape[:2]))
    tout = torch.nn.functional.conv2d(padded, tw, stride=stride, dilation=dilation, groups=groups)
    tout.backward(torch.tensor(g.transpose(0, 3, 1, 2).copy()))
    _compare_with_torch(out, x, w, tout, tx, tw)


@pytest.mark.filterwarnings("ignore:Using padding='same'")  # torch: it pads a copy
def test_same_padding_is_torchs(rng, torch):
    a, b = rng.standard_normal((1, 5, 6, 2)), rng.standard_normal((4, 3, 2, 3))
    out = ndl.convolution(
        ndl.Tensor(a, dtype="float64"),
        ndl.Tensor(b, dtype="float64"),
        padding="same",
        dilation=(1, 2),
    )
    ref = torch.nn.functional.conv2d(
        torch.tensor(a.transpose(0, 3, 1, 2).copy()),
        torch.tensor(b.transpose(3, 2, 0, 1).copy()),
        padding="same",
        dilation=(1, 2),
    )
    np.testing.assert_allclose(out.numpy(), ref.numpy().transpose(0, 2, 3, 1), atol=1e-10)


# (a shape NHWC, weight (K_h, K_w, C_out/groups, C_in), stride, padding, output_padding,
# dilation, groups)
TRANSPOSED_CASES = [
    ((2, 3, 4, 4), (3, 3, 3, 4), 2, 1, 1, 1, 2),
    ((1, 2, 2, 2), (3, 2, 3, 2), (3, 2), (0, 1), (2, 0), (1, 2), 1),
    ((1, 4, 3, 3), (2, 2, 1, 3), 1, 0, 0, (2, 1), 3),
    ((1, 1, 1, 2), (3, 3, 2, 2), 2, 1, 1, 1, 1),  # one input pixel
]


@pytest.mark.parametrize("case", TRANSPOSED_CASES, ids=str)
def test_conv_transpose_agrees_with_torch(case, rng, torch):
    a_shape, b_shape, stride, padding, extra, dilation, groups = case
    a, b = rng.standard_normal(a_shape), rng.standard_normal(b_shape)
    x = ndl.Tensor(a, dtype="float64", requires_grad=True)
    w = ndl.Tensor(b, dtype="float64", requires_grad=True)
    out = ndl.conv_transpose(
        x, w, stride=stride, padding=padding, output_padding=extra, dilation=dilation, groups=groups
    )
    g = rng.standard_normal(out.shape)
    out.backward(ndl.Tensor(g, dtype="float64"))
    tx = torch.tensor(a.transpose(0, 3, 1, 2).copy(), requires_grad=True)
    tw = torch.tensor(b.transpose(3, 2, 0, 1).copy(), requires_grad=True)
    tout = torch.nn.functional.conv_transpose2d(
        tx,
        tw,
        stride=stride,
        padding=padding,
        output_padding=extra,
        dilation=dilation,
        groups=groups,
    )
    tout.backward(torch.tensor(g.transpose(0, 3, 1, 2).copy()))
    _compare_with_torch(out, x, w, tout, tx, tw)


def test_conv_is_convolution_with_the_courses_arguments(rng):
    a, b = rng.standard_normal((2, 7, 5, 3)), rng.standard_normal((3, 3, 3, 4))
    x, w = ndl.Tensor(a, dtype="float32"), ndl.Tensor(b, dtype="float32")
    np.testing.assert_array_equal(
        ndl.conv(x, w, 2, 1).numpy(), ndl.convolution(x, w, stride=2, padding=1).numpy()
    )


@pytest.mark.parametrize("case", [c for c in GENERAL_CASES if not isinstance(c[3], str)], ids=str)
def test_gradient_ops_with_dilation_and_groups_have_correct_gradients(case, rng):
    """Second derivatives: the gradient ops are differentiable for every geometry."""
    a_shape, b_shape, stride, padding, dilation, groups = case
    a, b = rng.standard_normal(a_shape), rng.standard_normal(b_shape)
    op = Conv(stride, padding, dilation, groups)
    g = rng.standard_normal(
        op(ndl.Tensor(a, dtype="float64"), ndl.Tensor(b, dtype="float64")).shape
    )
    geometry = (stride, padding, dilation, groups)
    assert gradcheck(lambda gg, w: ConvInputGrad(a_shape[1:3], *geometry)(gg, w), g, b)
    assert gradcheck(lambda x, gg: ConvWeightGrad(b_shape[:2], *geometry)(x, gg), a, g)


GENERAL_ERRORS = [
    (
        "groups do not divide C_in",
        lambda: ndl.convolution(T(1, 5, 5, 3), T(3, 3, 1, 4), groups=2),
        ValueError,
        ["convolution", "groups=2", "(3)"],
    ),
    (
        "groups do not divide C_out",
        lambda: ndl.convolution(T(1, 5, 5, 4), T(3, 3, 2, 3), groups=2),
        ValueError,
        ["convolution", "groups=2", "b.shape[3]=3"],
    ),
    (
        "grouped channels",
        lambda: ndl.convolution(T(1, 5, 5, 4), T(3, 3, 1, 4), groups=2),
        ValueError,
        ["convolution", "4 channels", "groups·b.shape[2] = 2·1 = 2"],
    ),
    (
        "dilated kernel too large",
        lambda: ndl.convolution(T(1, 4, 4, 1), T(3, 3, 1, 1), dilation=2),
        ValueError,
        ["convolution", "dilated by (2, 2) to 5×5", "4×4", "empty output"],
    ),
    (
        "same with stride",
        lambda: ndl.convolution(T(1, 5, 5, 1), T(3, 3, 1, 1), stride=2, padding="same"),
        ValueError,
        ["convolution", "'same'", "stride 1", "(2, 2)"],
    ),
    (
        "unknown padding word",
        lambda: ndl.convolution(T(1, 5, 5, 1), T(3, 3, 1, 1), padding="full"),
        ValueError,
        ["convolution", "'full'", "'same' or 'valid'"],
    ),
    (
        "negative side padding",
        lambda: ndl.convolution(T(1, 5, 5, 1), T(3, 3, 1, 1), padding=((1, -1), (0, 0))),
        ValueError,
        ["convolution", "padding", ">= 0", "-1"],
    ),
    (
        "stride triple",
        lambda: ndl.convolution(T(1, 5, 5, 1), T(3, 3, 1, 1), stride=(1, 1, 1)),
        ValueError,
        ["convolution", "stride", "(H, W) pair", "(1, 1, 1)"],
    ),
    (
        "dilation 0",
        lambda: ndl.convolution(T(1, 5, 5, 1), T(3, 3, 1, 1), dilation=0),
        ValueError,
        ["convolution", "dilation", ">= 1", "0"],
    ),
    (
        "float groups",
        lambda: ndl.convolution(T(1, 5, 5, 2), T(3, 3, 1, 2), groups=2.0),
        TypeError,
        ["convolution", "groups", "2.0"],
    ),
    (
        "transpose channels",
        lambda: ndl.conv_transpose(T(1, 3, 3, 4), T(3, 3, 2, 3)),
        ValueError,
        ["conv_transpose", "4 channels", "C_in=3"],
    ),
    (
        "transpose output_padding",
        lambda: ndl.conv_transpose(T(1, 3, 3, 2), T(3, 3, 2, 2), stride=2, output_padding=2),
        ValueError,
        ["conv_transpose", "output_padding=2", "smaller than the stride (2, 2)"],
    ),
    (
        "transpose same",
        lambda: ndl.conv_transpose(T(1, 3, 3, 2), T(3, 3, 2, 2), padding="same"),
        ValueError,
        ["conv_transpose", "'same'"],
    ),
    (
        "transpose empty",
        lambda: ndl.conv_transpose(T(1, 1, 1, 2), T(1, 1, 2, 2), padding=1),
        ValueError,
        ["conv_transpose", "(1, 1, 1, 2)", "empty output (-1, -1)"],
    ),
    (
        "transpose groups",
        lambda: ndl.conv_transpose(T(1, 3, 3, 3), T(3, 3, 2, 3), groups=2),
        ValueError,
        ["conv_transpose", "groups=2", "(3)"],
    ),
    (
        "transpose 3-D",
        lambda: ndl.conv_transpose(T(3, 3, 2), T(3, 3, 2, 2)),
        ValueError,
        ["conv_transpose", "(3, 3, 2)", "(K_h, K_w, C_out/groups, C_in)"],
    ),
    (
        "upsample 3-D",
        lambda: ndl.upsample_nearest2d(T(3, 4, 4), 2),
        ValueError,
        ["upsample_nearest2d", "(3, 4, 4)", "(N, C, H, W)"],
    ),
    (
        "upsample factor 0",
        lambda: ndl.upsample_nearest2d(T(1, 3, 4, 4), (2, 0)),
        ValueError,
        ["upsample_nearest2d", "scale_factor", "(2, 0)"],
    ),
    (
        "upsample float factor",
        lambda: ndl.upsample_nearest2d(T(1, 3, 4, 4), 1.5),
        ValueError,
        ["upsample_nearest2d", "scale_factor", "1.5"],
    ),
]


@pytest.mark.parametrize(
    "name, call, error, words", GENERAL_ERRORS, ids=[e[0] for e in GENERAL_ERRORS]
)
def test_convolution_errors(name, call, error, words):
    with pytest.raises(error) as info:
        call()
    for word in words:
        assert word in str(info.value), (word, str(info.value))


@pytest.mark.parametrize("groups", [1, 2, 4])
@pytest.mark.parametrize("stride", [1, 2])
def test_convolution_of_an_empty_batch_has_empty_and_zero_gradients(groups, stride):
    x = ndl.Tensor(np.zeros((0, 5, 5, 4)), dtype="float32", requires_grad=True)
    w = ndl.Tensor(np.ones((3, 3, 4 // groups, 4)), dtype="float32", requires_grad=True)
    out = ndl.convolution(x, w, stride=stride, padding=1, groups=groups)
    size = (5 + 2 - 3) // stride + 1
    assert out.shape == (0, size, size, 4)
    out.sum().backward()
    assert x.grad.shape == (0, 5, 5, 4)
    np.testing.assert_array_equal(w.grad.numpy(), np.zeros((3, 3, 4 // groups, 4)))
