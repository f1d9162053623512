"""needle.nn: seeded draws, forward vs NumPy, gradients, Module traversal and state dicts."""

import math

import numpy as np
import pytest
from helpers import scaled_draws, tensor

import needle as ndl
from needle import nn
from needle.testing import gradcheck


def _t(array, dtype="float32"):
    return tensor(np.asarray(array, dtype=dtype), requires_grad=False)


def _uniform(shape, bound):
    return scaled_draws(np.random.rand(*shape), bound - (-bound), -bound)


def _normalise_rows(x, eps):
    mean = x.mean(axis=1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps)


def _normalise_cols(x, mean, var, eps):
    return (x - mean) / np.sqrt(var + eps)


# ----- Linear ---------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 4])
def test_linear_draws_weight_then_bias(seed):
    np.random.seed(seed)
    layer = nn.Linear(7, 3)
    np.random.seed(seed)
    weight = _uniform((7, 3), math.sqrt(2) * math.sqrt(3 / 7)).astype(np.float32)
    bias = _uniform((3, 1), math.sqrt(2) * math.sqrt(3 / 3)).astype(np.float32).reshape(1, 3)
    assert isinstance(layer.weight, nn.Parameter) and isinstance(layer.bias, nn.Parameter)
    assert layer.weight.dtype == np.float32 and layer.bias.shape == (1, 3)
    np.testing.assert_array_equal(layer.weight.numpy(), weight)
    np.testing.assert_array_equal(layer.bias.numpy(), bias)


def test_linear_forward_matches_numpy():
    np.random.seed(1)
    layer = nn.Linear(5, 4)
    x = np.random.randn(6, 5).astype(np.float32)
    out = layer(_t(x))
    expected = x @ layer.weight.numpy() + layer.bias.numpy()
    assert out.shape == (6, 4) and out.dtype == np.float32
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-6, atol=1e-6)


def test_linear_without_bias_and_with_batch_dims():
    layer = nn.Linear(3, 2, bias=False)
    assert layer.bias is None and len(layer.parameters()) == 1
    x = np.random.randn(4, 5, 3).astype(np.float32)
    np.testing.assert_allclose(layer(_t(x)).numpy(), x @ layer.weight.numpy(), rtol=1e-6)


def test_linear_gradients():
    layer = nn.Linear(4, 3, dtype="float64")

    def fn(x, w, b):
        layer.weight, layer.bias = w, b
        return layer(x)

    x = np.random.randn(5, 4)
    assert gradcheck(fn, x, layer.weight, layer.bias)


def test_linear_parameters_get_gradients():
    layer = nn.Linear(3, 2)
    layer(_t(np.ones((4, 3)))).sum().backward()
    np.testing.assert_allclose(layer.weight.grad.numpy(), np.full((3, 2), 4.0))
    np.testing.assert_allclose(layer.bias.grad.numpy(), np.full((1, 2), 4.0))


# ----- simple layers --------------------------------------------------------------------------


def test_activations_flatten_identity_match_numpy():
    x = np.random.randn(3, 2, 4).astype(np.float32)
    np.testing.assert_allclose(nn.ReLU()(_t(x)).numpy(), np.maximum(x, 0))
    np.testing.assert_allclose(nn.Tanh()(_t(x)).numpy(), np.tanh(x), rtol=1e-6)
    np.testing.assert_allclose(nn.Sigmoid()(_t(x)).numpy(), 1 / (1 + np.exp(-x)), rtol=1e-6)
    np.testing.assert_array_equal(nn.Flatten()(_t(x)).numpy(), x.reshape(3, 8))
    assert nn.Identity()(_t(x)).shape == (3, 2, 4)


def test_sequential_and_residual():
    np.random.seed(0)
    lin = nn.Linear(4, 4)
    model = nn.Sequential(nn.Residual(nn.Sequential(lin, nn.ReLU())), nn.Tanh())
    x = np.random.randn(2, 4).astype(np.float32)
    hidden = np.maximum(x @ lin.weight.numpy() + lin.bias.numpy(), 0)
    np.testing.assert_allclose(model(_t(x)).numpy(), np.tanh(hidden + x), rtol=1e-5, atol=1e-6)
    assert len(model) == 2 and isinstance(model[1], nn.Tanh)
    assert isinstance(model.modules, tuple)


# ----- SoftmaxLoss ----------------------------------------------------------------------------


def _softmax_loss(z, y):
    shifted = z - z.max(axis=1, keepdims=True)
    lse = np.log(np.exp(shifted).sum(axis=1)) + z.max(axis=1)
    return np.mean(lse - z[np.arange(len(y)), y])


def test_softmax_loss_matches_numpy():
    z = np.random.randn(8, 5).astype(np.float32)
    y = np.random.randint(0, 5, size=8)
    loss = nn.SoftmaxLoss()(_t(z), _t(y, "uint8"))
    assert loss.shape == () and loss.dtype == np.float32
    np.testing.assert_allclose(loss.numpy(), _softmax_loss(z.astype(np.float64), y), rtol=1e-6)


def test_softmax_loss_gradient():
    y = np.array([0, 2, 1, 2])
    assert gradcheck(lambda z: nn.SoftmaxLoss()(z, y), np.random.randn(4, 3))


def test_softmax_loss_is_stable_for_huge_logits():
    z = np.random.randn(6, 4) * 1e5
    y = np.array([0, 1, 2, 3, 0, 1])
    logits = tensor(z, dtype="float64")
    loss = nn.SoftmaxLoss()(logits, y)
    loss.backward()
    assert np.isfinite(loss.numpy()) and np.all(np.isfinite(logits.grad.numpy()))
    np.testing.assert_allclose(loss.numpy(), _softmax_loss(z, y), rtol=1e-12)
    softmax = np.exp(z - z.max(axis=1, keepdims=True))
    softmax /= softmax.sum(axis=1, keepdims=True)
    expected = (softmax - np.eye(4)[y]) / 6
    np.testing.assert_allclose(logits.grad.numpy(), expected, atol=1e-12)
    z32 = nn.SoftmaxLoss()(_t(z), y)
    np.testing.assert_allclose(z32.numpy(), _softmax_loss(z, y), rtol=1e-5)


@pytest.mark.parametrize(
    "labels, words",
    [
        ([0, 1, 5], "[0, 3)"),
        ([0, -1, 2], "out of range"),
        ([0, 1], "expected 3 labels"),
        ([0.5, 1, 2], "integers"),
    ],
)
def test_softmax_loss_rejects_bad_labels(labels, words):
    with pytest.raises(
        ValueError, match=words.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")
    ):
        nn.SoftmaxLoss()(_t(np.zeros((3, 3))), np.array(labels))


def test_softmax_loss_rejects_bad_logits():
    with pytest.raises(ValueError, match=r"SoftmaxLoss.*\(N, K\)"):
        nn.SoftmaxLoss()(_t(np.zeros(3)), np.array([0]))


# ----- LayerNorm1d ----------------------------------------------------------------------------


def test_layernorm_forward_matches_numpy():
    x = np.random.randn(4, 6).astype(np.float32) * 3 + 1
    layer = nn.LayerNorm1d(6)
    layer.weight.data = _t(np.linspace(0.5, 2, 6))
    layer.bias.data = _t(np.linspace(-1, 1, 6))
    normed = _normalise_rows(x.astype(np.float64), 1e-5)
    expected = layer.weight.numpy() * normed + layer.bias.numpy()
    assert layer.weight.shape == (6,) and layer.bias.shape == (6,)
    np.testing.assert_allclose(layer(_t(x)).numpy(), expected, rtol=1e-5, atol=1e-5)


def test_layernorm_gradients():
    layer = nn.LayerNorm1d(5, dtype="float64")

    def fn(x, w, b):
        layer.weight, layer.bias = w, b
        return layer(x)

    assert gradcheck(fn, np.random.randn(3, 5), np.random.rand(5) + 0.5, np.random.randn(5))


# ----- BatchNorm1d ----------------------------------------------------------------------------


def test_batchnorm_train_forward_and_running_stats():
    layer = nn.BatchNorm1d(3, momentum=0.2)
    mean, var = np.zeros(3), np.ones(3)
    for step in range(4):
        x = (np.random.randn(8, 3) * (step + 1) + step).astype(np.float32)
        out = layer(_t(x)).numpy()
        batch_mean, batch_var = x.mean(axis=0), x.var(axis=0)
        np.testing.assert_allclose(
            out, _normalise_cols(x, batch_mean, batch_var, 1e-5), rtol=1e-4, atol=1e-5
        )
        mean = 0.8 * mean + 0.2 * batch_mean
        var = 0.8 * var + 0.2 * batch_var
    assert layer.running_mean.dtype == np.float32 and layer.running_var.dtype == np.float32
    assert not layer.running_mean.requires_grad
    np.testing.assert_allclose(layer.running_mean.numpy(), mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(layer.running_var.numpy(), var, rtol=1e-5)


def test_batchnorm_eval_uses_running_stats():
    layer = nn.BatchNorm1d(4)
    layer.running_mean.data = _t([0.5, -1.0, 2.0, 0.0])
    layer.running_var.data = _t([1.0, 4.0, 0.25, 9.0])
    x = np.random.randn(5, 4).astype(np.float32)
    before = layer.running_mean.numpy().copy()
    out = layer.eval()(_t(x)).numpy()
    expected = _normalise_cols(x, layer.running_mean.numpy(), layer.running_var.numpy(), 1e-5)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(layer.running_mean.numpy(), before)


def test_batchnorm_running_update_builds_no_graph():
    layer = nn.BatchNorm1d(3)
    x = tensor(np.random.randn(4, 3).astype(np.float32), requires_grad=True)
    buffer = layer.running_mean
    layer(x).sum().backward()
    assert layer.running_mean is buffer and layer.running_mean.is_leaf()
    assert not layer.running_mean.requires_grad


@pytest.mark.parametrize("training", [True, False])
def test_batchnorm_gradients(training):
    layer = nn.BatchNorm1d(3, dtype="float64")
    layer.running_mean.data = tensor([0.1, -0.2, 0.3], dtype="float64")
    layer.running_var.data = tensor([0.5, 1.5, 2.0], dtype="float64")
    layer.train(training)

    def fn(x, w, b):
        layer.weight, layer.bias = w, b
        return layer(x)

    assert gradcheck(fn, np.random.randn(6, 3), np.random.rand(3) + 0.5, np.random.randn(3))


@pytest.mark.parametrize(
    "make", [lambda: nn.LayerNorm1d(4, dtype="float64"), lambda: nn.BatchNorm1d(4, dtype="float64")]
)
def test_zero_variance_input_gives_finite_output_and_gradients(make):
    layer = make()
    x = tensor(np.full((3, 4), 2.5), requires_grad=True)
    out = layer(x)
    (out * tensor(np.random.randn(3, 4), requires_grad=False)).sum().backward()
    assert np.all(np.isfinite(out.numpy())) and np.all(np.isfinite(x.grad.numpy()))
    assert np.all(np.isfinite(layer.weight.grad.numpy()))
    np.testing.assert_allclose(out.numpy(), 0.0, atol=1e-12)
    assert gradcheck(lambda t: layer(t), np.full((3, 4), 2.5), atol=1e-4)


# ----- Dropout --------------------------------------------------------------------------------


def test_dropout_matches_seeded_mask():
    x = np.random.randn(20, 10).astype(np.float32)
    np.random.seed(3)
    out = nn.Dropout(0.3)(_t(x)).numpy()
    np.random.seed(3)
    mask = (np.random.rand(20, 10) <= 0.7).astype(np.float32)
    np.testing.assert_allclose(out, x * mask / 0.7, rtol=1e-6)
    assert out.dtype == np.float32


def test_dropout_eval_is_identity_and_draws_nothing():
    x = _t(np.random.randn(3, 3))
    layer = nn.Dropout(0.9).eval()
    np.random.seed(0)
    assert layer(x) is x
    assert np.random.rand() == np.random.RandomState(0).rand()


def test_dropout_gradients():
    layer = nn.Dropout(0.4)

    def fn(x):
        np.random.seed(11)  # the same mask in every evaluation
        return layer(x)

    assert gradcheck(fn, np.random.randn(4, 5))


# ----- Module: traversal, modes ---------------------------------------------------------------


class _Holder(nn.Module):
    def __init__(self):
        super().__init__()
        self.first = nn.Parameter(tensor([1.0]))
        self.by_name = {"b": nn.Linear(2, 2), "a": nn.BatchNorm1d(2)}
        self.in_list = [nn.Dropout(0.1), (nn.LayerNorm1d(2),)]
        self.shared = self.first
        self.plain = 3


def test_parameters_order_and_dedupe():
    holder = _Holder()
    params = holder.parameters()
    expected = [
        holder.first,
        holder.by_name["b"].weight,
        holder.by_name["b"].bias,
        holder.by_name["a"].weight,
        holder.by_name["a"].bias,
        holder.in_list[1][0].weight,
        holder.in_list[1][0].bias,
    ]
    assert len(params) == len(expected) and all(p is e for p, e in zip(params, expected))
    assert holder.num_parameters() == 1 + (4 + 2) + (2 + 2) + (2 + 2)


def test_named_parameters_and_buffers():
    holder = _Holder()
    assert [n for n, _ in holder.named_parameters()] == [
        "first",
        "by_name.b.weight",
        "by_name.b.bias",
        "by_name.a.weight",
        "by_name.a.bias",
        "in_list.1.0.weight",
        "in_list.1.0.bias",
    ]
    assert [n for n, _ in holder.named_buffers()] == [
        "by_name.a.running_mean",
        "by_name.a.running_var",
    ]
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    assert [n for n, _ in model.named_parameters()] == [
        "modules.0.weight",
        "modules.0.bias",
        "modules.2.weight",
        "modules.2.bias",
    ]


def test_shared_module_is_listed_once():
    lin = nn.Linear(2, 2)
    model = nn.Sequential(lin, nn.ReLU(), lin)
    assert len(model.parameters()) == 2
    assert list(model.state_dict()) == ["modules.0.weight", "modules.0.bias"]


def test_eval_and_train_reach_nested_containers():
    holder = _Holder()
    assert holder.eval() is holder
    modules = holder._children()
    assert len(modules) == 4 and not holder.training
    assert all(not m.training for m in modules)
    assert holder.train() is holder and all(m.training for m in holder._children())


def test_module_without_super_init_still_has_training():
    class Bare(nn.Module):
        def forward(self, x):
            return x

    assert Bare().training and not Bare().eval().training


# ----- state dicts ----------------------------------------------------------------------------


def _mlp(seed=0):
    np.random.seed(seed)
    return nn.Sequential(nn.Linear(4, 5), nn.BatchNorm1d(5), nn.ReLU(), nn.Linear(5, 2))


def test_state_dict_round_trip():
    source, target = _mlp(0), _mlp(1)
    source(_t(np.random.randn(6, 4)))  # move the running statistics
    state = source.state_dict()
    assert list(state) == [
        "modules.0.weight",
        "modules.0.bias",
        "modules.1.weight",
        "modules.1.bias",
        "modules.3.weight",
        "modules.3.bias",
        "modules.1.running_mean",
        "modules.1.running_var",
    ]
    weight = target.modules[0].weight
    result = target.load_state_dict(state)
    assert result.missing_keys == [] and result.unexpected_keys == []
    assert target.modules[0].weight is weight  # loaded in place, identity kept
    for key, value in target.state_dict().items():
        np.testing.assert_array_equal(value, state[key])
        assert value.dtype == state[key].dtype
    state["modules.0.weight"][:] = 0  # state_dict holds copies
    assert not np.all(target.modules[0].weight.numpy() == 0)


def test_load_state_dict_reports_missing_and_unexpected():
    model, state = _mlp(), _mlp().state_dict()
    del state["modules.0.bias"]
    state["modules.9.weight"] = np.zeros(2, np.float32)
    with pytest.raises(KeyError) as info:
        model.load_state_dict(state)
    message = str(info.value)
    assert "missing keys: ['modules.0.bias']" in message
    assert "unexpected keys: ['modules.9.weight']" in message
    result = model.load_state_dict(state, strict=False)
    assert result.missing_keys == ["modules.0.bias"]
    assert result.unexpected_keys == ["modules.9.weight"]


def test_load_state_dict_reports_shape_mismatch():
    model, state = _mlp(), _mlp().state_dict()
    state["modules.0.weight"] = np.zeros((4, 3), np.float32)
    before = model.modules[3].weight.numpy().copy()
    words = r"'modules.0.weight': expected shape \(4, 5\), got \(4, 3\)"
    with pytest.raises(ValueError, match=words):
        model.load_state_dict(state, strict=False)
    np.testing.assert_array_equal(model.modules[3].weight.numpy(), before)  # nothing copied


def test_load_state_dict_reports_dtype_mismatch():
    model, state = _mlp(), _mlp().state_dict()
    state["modules.1.running_var"] = state["modules.1.running_var"].astype(np.float64)
    with pytest.raises(
        ValueError, match="'modules.1.running_var': expected dtype float32, got float64"
    ):
        model.load_state_dict(state)


def test_load_state_dict_accepts_tensors():
    model, other = _mlp(0), _mlp(1)
    model.load_state_dict(
        {n: p for n, p in list(other.named_parameters()) + list(other.named_buffers())}
    )
    np.testing.assert_array_equal(model.modules[0].weight.numpy(), other.modules[0].weight.numpy())


# ----- repr -----------------------------------------------------------------------------------


def test_repr_is_nested_and_counts_parameters():
    model = nn.Sequential(
        nn.Linear(784, 100),
        nn.ReLU(),
        nn.Residual(nn.Sequential(nn.LayerNorm1d(100), nn.Dropout(0.1))),
    )
    text = repr(model)
    assert text.splitlines()[0] == "Sequential(  # 78,700 parameters"
    assert "  (0): Linear(in_features=784, out_features=100, bias=True)" in text
    assert "  (1): ReLU()" in text
    assert "  (2): Residual(\n    (fn): Sequential(\n      (0): LayerNorm1d(100, eps=1e-05)" in text
    assert "(1): Dropout(p=0.1)" in text and text.endswith(")")
    assert text.count("parameters") == 1
    assert repr(nn.BatchNorm1d(3)).startswith("BatchNorm1d(3, eps=1e-05, momentum=0.1)")
    assert repr(nn.ReLU()) == "ReLU()"


# ----- validation -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "build, words",
    [
        (lambda: nn.Linear(0, 3), "Linear: in_features must be a positive int, got 0"),
        (lambda: nn.Linear(3, 2.5), "out_features must be a positive int"),
        (lambda: nn.LayerNorm1d(-2), "LayerNorm1d: dim must be a positive int"),
        (lambda: nn.LayerNorm1d(3, eps=0), "LayerNorm1d: eps must be in"),
        (lambda: nn.BatchNorm1d(3, eps=-1e-5), "BatchNorm1d: eps"),
        (lambda: nn.BatchNorm1d(3, momentum=1.5), "BatchNorm1d: momentum must be in"),
        (lambda: nn.Dropout(1.0), "Dropout: p must be in"),
        (lambda: nn.Dropout(-0.1), "Dropout: p must be in"),
    ],
)
def test_hyperparameter_validation(build, words):
    with pytest.raises(ValueError, match=words.replace("(", r"\(")):
        build()


@pytest.mark.parametrize(
    "layer, shape, words",
    [
        (nn.Linear(784, 100), (32, 50), r"Linear\(in_features=784.*got \(32, 50\)"),
        (nn.Linear(4, 2), (4,), r"Linear.*\(N, 4\)"),
        (nn.LayerNorm1d(5), (2, 3), r"LayerNorm1d\(dim=5\).*\(N, 5\), got \(2, 3\)"),
        (nn.LayerNorm1d(5), (2, 5, 1), r"LayerNorm1d.*got \(2, 5, 1\).*Flatten"),
        (nn.BatchNorm1d(5), (2, 4), r"BatchNorm1d\(dim=5\).*got \(2, 4\)"),
        (nn.Residual(nn.Linear(3, 2)), (4, 3), r"Residual: fn changed the shape"),
    ],
)
def test_layer_input_validation(layer, shape, words):
    with pytest.raises(ValueError, match=words):
        layer(_t(np.zeros(shape)))


def test_layers_reject_non_tensors():
    with pytest.raises(TypeError, match="Linear: expected a needle.Tensor"):
        nn.Linear(2, 2)(np.zeros((1, 2)))
    with pytest.raises(TypeError, match="Sequential: argument 1 must be a Module"):
        nn.Sequential(nn.ReLU(), [nn.ReLU()])


# ----- every layer on every device ------------------------------------------------------------


def _train_on(device, fused: bool, steps: int = 3) -> list[np.ndarray]:
    """A small residual MLP with every layer kind, trained a few Adam steps on ``device``."""
    np.random.seed(0)
    block = nn.Sequential(
        nn.Linear(6, 8, device=device, fused=fused),
        nn.BatchNorm1d(8, device=device, fused=fused),
        nn.ReLU(),
        nn.Dropout(0.2),
        nn.Linear(8, 6, device=device, fused=fused),
        nn.LayerNorm1d(6, device=device, fused=fused),
        nn.Tanh(),
    )
    model = nn.Sequential(
        nn.Residual(block), nn.Sigmoid(), nn.Flatten(), nn.Linear(6, 3, device=device, fused=fused)
    )
    opt = ndl.optim.Adam(model.parameters(), lr=0.01, weight_decay=0.01)
    rng = np.random.default_rng(1)
    for _ in range(steps):
        x = ndl.Tensor(rng.standard_normal((5, 6)), device=device, requires_grad=False)
        y = rng.integers(0, 3, 5)
        loss = nn.SoftmaxLoss(fused=fused)(model(x), y)
        opt.reset_grad()
        loss.backward(create_graph=False)
        opt.step()
    assert all(p.device == device for p in model.parameters())
    return [p.numpy() for p in model.parameters()] + [
        b.numpy() for b in (block.modules[1].running_mean, block.modules[1].running_var)
    ]


@pytest.mark.parametrize("fused", [True, False])
def test_layers_loss_and_optimizer_give_the_same_numbers_on_every_device(device, fused):
    expected = _train_on(ndl.default_device(), fused)
    for got, want in zip(_train_on(device, fused), expected):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
