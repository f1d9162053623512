"""Recurrent and attention layers: the course's draws, PyTorch cross-checks, and errors.

Draw-order tests replay NumPy's global generator by hand. PyTorch
cross-checks copy our weights into torch.nn modules (transposed: ours are (in, out)).
"""

import math

import numpy as np
import pytest

import needle as ndl
import needle.nn as nn
from needle.nn.nn_transformer import MASK_VALUE, causal_mask
from needle.testing import gradcheck


def _uniform(bound, *shape):
    """What init.rand(*shape, low=-bound, high=bound) draws, as float32."""
    return (np.random.rand(*shape) * (2 * bound) - bound).astype(np.float32)


def _kaiming(fan_in, *shape):
    return _uniform(math.sqrt(2) * math.sqrt(3 / fan_in), *shape)


def _linear_draws(fan_in, fan_out, bias=True):
    draws = [_kaiming(fan_in, fan_in, fan_out)]
    if bias:
        draws.append(_kaiming(fan_out, fan_out, 1).reshape(1, fan_out))
    return draws


def _cell_draws(in_size, hidden, gates=1, bias=True):
    k = 1 / math.sqrt(hidden)
    draws = [_uniform(k, in_size, gates * hidden), _uniform(k, hidden, gates * hidden)]
    return draws + ([_uniform(k, gates * hidden), _uniform(k, gates * hidden)] if bias else [])


def _check_draw_order(make, replay, drawn=lambda module: module.parameters()):
    """``make()`` draws exactly ``replay()``'s values into ``drawn(module)``, and nothing more."""
    np.random.seed(3)
    module = make()
    after_module = np.random.rand()
    np.random.seed(3)
    expected = replay()
    for p, e in zip(drawn(module), expected, strict=True):
        # float32 rounding: NumPy scales the float64 draws, NDArray scales after the cast
        np.testing.assert_allclose(p.numpy(), e, rtol=1e-6, atol=1e-7)
    assert np.random.rand() == after_module


@pytest.mark.parametrize("bias", [True, False])
def test_rnn_and_lstm_draw_order(bias):
    _check_draw_order(
        lambda: nn.RNN(3, 5, 2, bias),
        lambda: _cell_draws(3, 5, 1, bias) + _cell_draws(5, 5, 1, bias),
    )
    _check_draw_order(
        lambda: nn.LSTM(3, 5, 2, bias),
        lambda: _cell_draws(3, 5, 4, bias) + _cell_draws(5, 5, 4, bias),
    )


def test_embedding_draws_standard_normals():
    _check_draw_order(
        lambda: nn.Embedding(7, 3), lambda: [np.random.randn(7, 3).astype(np.float32)]
    )


def test_transformer_draw_order():
    D, heads, dim, hidden = 8, 2, 3, 5

    def replay():
        draws = [np.random.randn(11, D).astype(np.float32)]  # positional embedding first
        for _ in range(2):
            for _ in range(3):
                draws += _linear_draws(D, heads * dim, bias=False)
            draws += _linear_draws(heads * dim, D, bias=False)
            draws += _linear_draws(D, hidden) + _linear_draws(hidden, D)
        return draws

    def make():
        return nn.Transformer(D, hidden, 2, num_head=heads, dim_head=dim, sequence_len=11)

    # LayerNorm weights and biases (D,) are ones and zeros: not drawn
    _check_draw_order(make, replay, lambda m: [p for p in m.parameters() if p.shape != (D,)])


def test_embedding_equals_one_hot_product(rng):
    ids = rng.integers(0, 6, (4, 3))
    emb = nn.Embedding(6, 2)
    out = emb(ndl.Tensor(ids.astype(np.float32), requires_grad=False))
    weights = rng.standard_normal((4, 3, 2))
    (out * ndl.Tensor(weights, dtype="float32")).sum().backward()
    np.testing.assert_array_equal(out.numpy(), np.eye(6)[ids] @ emb.weight.numpy())
    expected_grad = np.eye(6)[ids].reshape(-1, 6).T @ weights.reshape(-1, 2)
    np.testing.assert_allclose(emb.weight.grad.numpy(), expected_grad, rtol=1e-6)


@pytest.mark.parametrize("fused", [True, False])
def test_every_parameter_gets_a_gradient_with_h_none(fused):
    for model in (nn.RNN(2, 3, 2, fused=fused), nn.LSTM(2, 3, 2, fused=fused)):
        out, _ = model(ndl.init.ones(1, 4, 2))  # a sequence of length 1
        out.sum().backward()
        for name, p in model.named_parameters():
            assert p.grad is not None and p.grad.shape == p.shape, name
        assert np.abs(model.parameters()[1].grad.numpy()).sum() == 0  # W_hh: fed by zeros


@pytest.mark.parametrize("fused", [True, False])
def test_replaced_weights_are_read_at_call_time(fused, rng):
    cell = nn.LSTMCell(2, 3, fused=fused)
    cell.W_ih = ndl.Tensor(rng.standard_normal((2, 12)), dtype="float32")
    cell.bias_hh = ndl.Tensor(rng.standard_normal(12), dtype="float32")
    h, c = cell(ndl.init.ones(4, 2))
    (h.sum() + c.sum()).backward()
    assert cell.W_ih.grad.shape == (2, 12) and cell.bias_hh.grad.shape == (12,)
    gates = np.ones((4, 2)) @ cell.W_ih.numpy() + cell.bias_ih.numpy() + cell.bias_hh.numpy()
    sig = 1 / (1 + np.exp(-gates))
    c_ref = sig[:, :3] * np.tanh(gates[:, 6:9])
    np.testing.assert_allclose(c.numpy(), c_ref, rtol=1e-5)


# ----- PyTorch cross-checks (the `torch` fixture: marked `torch`, skipped without it) ---------


def _copy_recurrent(torch, ours, theirs):
    cells = ours.rnn_cells if isinstance(ours, nn.RNN) else ours.lstm_cells
    with torch.no_grad():
        for k, cell in enumerate(cells):
            getattr(theirs, f"weight_ih_l{k}").copy_(torch.tensor(cell.W_ih.numpy().T))
            getattr(theirs, f"weight_hh_l{k}").copy_(torch.tensor(cell.W_hh.numpy().T))
            if cell.bias_ih is not None:
                getattr(theirs, f"bias_ih_l{k}").copy_(torch.tensor(cell.bias_ih.numpy()))
                getattr(theirs, f"bias_hh_l{k}").copy_(torch.tensor(cell.bias_hh.numpy()))
    return cells


def _grads_match(ours, theirs, atol=2e-5):
    for name, p in ours.named_parameters():
        torch_name = {
            "W_ih": "weight_ih",
            "W_hh": "weight_hh",
            "bias_ih": "bias_ih",
            "bias_hh": "bias_hh",
        }[name.split(".")[-1]]
        layer = name.split(".")[1]
        grad = getattr(theirs, f"{torch_name}_l{layer}").grad.numpy()
        np.testing.assert_allclose(p.grad.numpy(), grad.T, atol=atol, err_msg=name)


@pytest.mark.parametrize("kind", ["tanh", "relu", "lstm"])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("with_state", [True, False])
def test_recurrent_layers_match_torch(kind, bias, with_state, rng, torch):
    T, B, IN, H, L = 4, 3, 5, 6, 2
    if kind == "lstm":
        ours, theirs = nn.LSTM(IN, H, L, bias), torch.nn.LSTM(IN, H, L, bias)
    else:
        ours = nn.RNN(IN, H, L, bias, kind)
        theirs = torch.nn.RNN(IN, H, L, nonlinearity=kind, bias=bias)
    _copy_recurrent(torch, ours, theirs)
    x = rng.standard_normal((T, B, IN)).astype(np.float32)
    states = [rng.standard_normal((L, B, H)).astype(np.float32) for _ in range(2)]
    x_t, x_n = torch.tensor(x, requires_grad=True), ndl.Tensor(x)
    s_t = [torch.tensor(s, requires_grad=True) for s in states]
    s_n = [ndl.Tensor(s) for s in states]
    if kind == "lstm":
        out_t, (h_t, c_t) = theirs(x_t, tuple(s_t) if with_state else None)
        out_n, (h_n, c_n) = ours(x_n, tuple(s_n) if with_state else None)
        pairs = [(out_t, out_n), (h_t, h_n), (c_t, c_n)]
    else:
        out_t, h_t = theirs(x_t, s_t[0] if with_state else None)
        out_n, h_n = ours(x_n, s_n[0] if with_state else None)
        pairs = [(out_t, out_n), (h_t, h_n)]
    weights = [rng.standard_normal(t.shape).astype(np.float32) for t, _ in pairs]
    sum(((t * torch.tensor(w)).sum() for (t, _), w in zip(pairs, weights))).backward()
    total = None
    for (_, n), w in zip(pairs, weights):
        term = (n * ndl.Tensor(w)).sum()
        total = term if total is None else total + term
    total.backward()
    for t, n in pairs:
        np.testing.assert_allclose(n.numpy(), t.detach().numpy(), atol=1e-5)
    np.testing.assert_allclose(x_n.grad.numpy(), x_t.grad.numpy(), atol=2e-5)
    if with_state:
        used = 2 if kind == "lstm" else 1
        for a, b in zip(s_n[:used], s_t[:used]):
            np.testing.assert_allclose(a.grad.numpy(), b.grad.numpy(), atol=2e-5)
    _grads_match(ours, theirs)


def _torch_layer_norm(torch, x):
    return torch.nn.functional.layer_norm(x, x.shape[-1:], eps=1e-5)


@pytest.mark.parametrize("causal", [True, False])
def test_attention_layer_matches_torch_multihead_attention(causal, rng, torch):
    B, T, S, F, heads, dim = 2, 4, 4, 6, 2, 3
    layer = nn.AttentionLayer(F, heads, dim, k_features=5, v_features=7, causal=causal)
    mha = torch.nn.MultiheadAttention(
        heads * dim, heads, bias=False, kdim=5, vdim=7, batch_first=True
    )
    with torch.no_grad():
        for ours, theirs in (
            (layer.q_projection, mha.q_proj_weight),
            (layer.k_projection, mha.k_proj_weight),
            (layer.v_projection, mha.v_proj_weight),
            (layer.out_projection, mha.out_proj.weight),
        ):
            theirs.copy_(torch.tensor(ours.weight.numpy().T))
    arrays = [rng.standard_normal(s).astype(np.float32) for s in ((B, T, F), (B, S, 5), (B, S, 7))]
    tensors_t = [torch.tensor(a, requires_grad=True) for a in arrays]
    tensors_n = [ndl.Tensor(a) for a in arrays]
    mask = torch.triu(torch.ones(T, S, dtype=torch.bool), 1) if causal else None
    out_t, _ = mha(
        *[_torch_layer_norm(torch, t) for t in tensors_t], attn_mask=mask, need_weights=False
    )
    out_n = layer(*tensors_n)
    weights = rng.standard_normal(out_n.shape).astype(np.float32)
    (out_t * torch.tensor(weights)).sum().backward()
    (out_n * ndl.Tensor(weights)).sum().backward()
    np.testing.assert_allclose(out_n.numpy(), out_t.detach().numpy(), atol=1e-5)
    for n, t in zip(tensors_n, tensors_t):
        np.testing.assert_allclose(n.grad.numpy(), t.grad.numpy(), atol=1e-4)
    np.testing.assert_allclose(
        layer.q_projection.weight.grad.numpy(), mha.q_proj_weight.grad.numpy().T, atol=1e-4
    )


def test_transformer_matches_torch_pre_norm_encoder(rng, torch):
    T, B, D, heads, hidden = 5, 2, 8, 2, 12
    model = nn.Transformer(D, hidden, 2, num_head=heads, dim_head=D // heads, sequence_len=9)
    torch_layers = []
    for layer in model.layers:
        for linear in (layer.linear1, layer.linear2):  # torch's bias=False drops them
            linear.bias = ndl.Tensor(np.zeros(linear.bias.shape), dtype="float32")
        ref = torch.nn.TransformerEncoderLayer(
            D, heads, hidden, dropout=0.0, batch_first=True, norm_first=True, bias=False
        )
        attn = layer.attention
        weights = [attn.q_projection, attn.k_projection, attn.v_projection]
        with torch.no_grad():
            ref.self_attn.in_proj_weight.copy_(
                torch.tensor(np.concatenate([w.weight.numpy().T for w in weights]))
            )
            ref.self_attn.out_proj.weight.copy_(torch.tensor(attn.out_projection.weight.numpy().T))
            ref.linear1.weight.copy_(torch.tensor(layer.linear1.weight.numpy().T))
            ref.linear2.weight.copy_(torch.tensor(layer.linear2.weight.numpy().T))
        torch_layers.append(ref)
    x = rng.standard_normal((T, B, D)).astype(np.float32)
    out, zeros = model(ndl.Tensor(x))
    positions = torch.tensor(model.positional_embedding.weight.numpy()[:T])
    h = torch.tensor(x).transpose(0, 1) + positions
    mask = torch.triu(torch.ones(T, T, dtype=torch.bool), 1)
    with torch.no_grad():
        for ref in torch_layers:
            h = ref(h, src_mask=mask)
    np.testing.assert_allclose(out.numpy(), h.transpose(0, 1).numpy(), atol=2e-5)
    np.testing.assert_array_equal(zeros.numpy(), np.zeros((T, B, D)))


# ----- attention details ----------------------------------------------------------------------


def _softmax(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


@pytest.mark.parametrize("T,S", [(3, 3), (2, 5), (1, 4)])
def test_causal_attention_against_numpy(T, S, rng):
    q, k, v = (rng.standard_normal((2, 3, n, 4)) for n in (T, S, S))
    result, probs = nn.MultiHeadAttention(causal=True, dtype="float64")(
        *(ndl.Tensor(a, dtype="float64") for a in (q, k, v))
    )
    future = np.triu(np.ones((T, S)), S - T + 1).astype(bool)
    logits = np.where(future, -np.inf, q @ np.swapaxes(k, -1, -2) / 2.0)
    np.testing.assert_allclose(probs.numpy(), _softmax(logits), atol=1e-12)
    np.testing.assert_allclose(result.numpy(), _softmax(logits) @ v, atol=1e-12)


def test_causal_mask_is_finite():
    mask = causal_mask(3, 3)
    assert np.isfinite(mask).all()
    np.testing.assert_array_equal(mask[0, 0] == MASK_VALUE, np.triu(np.ones((3, 3)), 1) == 1)
    assert MASK_VALUE == -np.finfo(np.float32).max


def test_attention_probs_are_returned_after_dropout(rng):
    np.random.seed(0)
    attn = nn.MultiHeadAttention(dropout=0.5)
    q = ndl.Tensor(rng.standard_normal((2, 2, 6, 3)), dtype="float32")
    result, probs = attn(q, q, q)
    p = probs.numpy()
    assert (p == 0).any() and not np.allclose(p.sum(axis=-1), 1)
    np.testing.assert_allclose(result.numpy(), p @ q.numpy(), rtol=1e-5)
    attn.eval()
    _, probs = attn(q, q, q)
    np.testing.assert_allclose(probs.numpy().sum(axis=-1), 1, rtol=1e-6)


def test_transformer_layer_dropout_draw_order(monkeypatch):
    B, T, D, heads, dim, hidden = 2, 3, 4, 2, 5, 7
    layer = nn.TransformerLayer(D, heads, dim, hidden, dropout=0.1)
    sizes = []
    original = np.random.rand  # every backend's draws: the course's rand is this call

    def recording(*shape):
        sizes.append(math.prod(shape))
        return original(*shape)

    monkeypatch.setattr(np.random, "rand", recording)
    layer(ndl.init.ones(B, T, D))
    assert sizes == [B * heads * T * T, B * T * D, B * T * hidden, B * T * D]
    sizes.clear()
    layer.eval()(ndl.init.ones(B, T, D))
    assert sizes == []


def test_transformer_batch_first_and_zero_state(rng):
    model = nn.Transformer(4, 6, 1, num_head=2, dim_head=2, batch_first=True, sequence_len=5)
    x = rng.standard_normal((2, 5, 4)).astype(np.float32)
    out, h = model(ndl.Tensor(x))
    model.batch_first = False
    out_tm, _ = model(ndl.Tensor(np.swapaxes(x, 0, 1)))
    np.testing.assert_allclose(np.swapaxes(out_tm.numpy(), 0, 1), out.numpy(), atol=1e-6)
    assert h.shape == (2, 5, 4) and not h.numpy().any()


# ----- bad input ------------------------------------------------------------------------------


def test_recurrent_input_errors():
    cell, rnn, lstm = nn.RNNCell(3, 4), nn.RNN(3, 4, 2), nn.LSTM(3, 4, 2)
    with pytest.raises(
        ValueError, match=r"RNNCell\(input_size=3, hidden_size=4\).*\(B, 3\).*\(2, 5\)"
    ):
        cell(ndl.init.ones(2, 5))
    with pytest.raises(ValueError, match=r"expected h of shape \(2, 4\).*got \(2, 3\)"):
        cell(ndl.init.ones(2, 3), ndl.init.ones(2, 3))
    with pytest.raises(ValueError, match=r"RNN\(input_size=3.*\(T, B, 3\).*got \(2, 3\)"):
        rnn(ndl.init.ones(2, 3))
    with pytest.raises(ValueError, match=r"h0 of shape \(2, 5, 4\).*got \(1, 5, 4\)"):
        rnn(ndl.init.ones(6, 5, 3), ndl.init.ones(1, 5, 4))
    with pytest.raises(TypeError, match=r"\(h, c\) pair.*a Tensor of shape \(2, 5, 4\)"):
        lstm(ndl.init.ones(6, 5, 3), ndl.init.ones(2, 5, 4))
    with pytest.raises(ValueError, match=r"c0 of shape \(2, 5, 4\)"):
        lstm(ndl.init.ones(6, 5, 3), (ndl.init.ones(2, 5, 4), ndl.init.ones(2, 4, 4)))
    with pytest.raises(TypeError, match=r"\(h, c\) pair"):
        nn.LSTMCell(3, 4)(ndl.init.ones(2, 3), [ndl.init.ones(2, 4)])
    with pytest.raises(ValueError, match="nonlinearity must be 'tanh' or 'relu'"):
        nn.RNN(3, 4, 1, True, "sigmoid")
    with pytest.raises(TypeError, match="RNN: expected a needle.Tensor"):
        rnn(np.ones((2, 2, 3)))


def test_embedding_errors():
    emb = nn.Embedding(5, 2)
    with pytest.raises(ValueError, match=r"Embedding\(num_embeddings=5\).*\[0, 5\).*\[5(\.0)?\]"):
        emb(ndl.Tensor([[1, 5]], requires_grad=False))
    with pytest.raises(ValueError, match=r"\(T, B\), got \(3,\)"):
        emb(ndl.Tensor([1, 2, 3], requires_grad=False))


def test_attention_errors():
    attn = nn.MultiHeadAttention()
    with pytest.raises(ValueError, match=r"k.shape=\(1, 2, 3, 5\).*equal batch, head count"):
        attn(ndl.init.ones(1, 2, 3, 4), ndl.init.ones(1, 2, 3, 5), ndl.init.ones(1, 2, 3, 5))
    with pytest.raises(ValueError, match="expected 4-D"):
        attn(ndl.init.ones(2, 3, 4), ndl.init.ones(2, 3, 4), ndl.init.ones(2, 3, 4))
    layer = nn.AttentionLayer(6, 2, 3)
    with pytest.raises(ValueError, match=r"expected q of shape \(B, L, 6\), got \(2, 3, 5\)"):
        layer(ndl.init.ones(2, 3, 5))
    with pytest.raises(ValueError, match="batch sizes must match"):
        layer(ndl.init.ones(2, 3, 6), ndl.init.ones(1, 3, 6))
    model = nn.Transformer(4, 6, 1, num_head=2, dim_head=2, sequence_len=3)
    with pytest.raises(ValueError, match="sequence length 4 exceeds sequence_len=3"):
        model(ndl.init.ones(4, 1, 4))
    with pytest.raises(ValueError, match=r"\(T, B, D\) with D=4, got \(3, 1, 5\)"):
        model(ndl.init.ones(3, 1, 5))


# ----- gradient checks of the layers (float64, finite differences) ----------------------------


@pytest.mark.parametrize("causal", [True, False])
def test_multi_head_attention_gradcheck(causal, rng):
    attn = nn.MultiHeadAttention(causal=causal, dtype="float64")
    q, k, v = (rng.standard_normal((2, 2, n, 3)) for n in (3, 4, 4))
    assert gradcheck(lambda *a: attn(*a)[0], q, k, v)
    assert gradcheck(lambda *a: attn(*a)[1], q, k, v)


LAYER_CHECKS = {  # name: (module, forward as a function of the input, input shape)
    "RNN": (lambda: nn.RNN(3, 2, 2, dtype="float64"), lambda m: lambda x: m(x)[0], (4, 2, 3)),
    "LSTM": (lambda: nn.LSTM(3, 2, 2, dtype="float64"), lambda m: lambda x: m(x)[1][1], (4, 2, 3)),
    "AttentionLayer": (lambda: nn.AttentionLayer(4, 2, 3, dtype="float64"), lambda m: m, (2, 3, 4)),
    "TransformerLayer": (
        lambda: nn.TransformerLayer(4, 2, 3, 5, dtype="float64"),
        lambda m: m,
        (2, 3, 4),
    ),
    "Transformer": (
        lambda: nn.Transformer(4, 5, 1, num_head=2, dim_head=3, dtype="float64", sequence_len=6),
        lambda m: lambda x: m(x)[0],
        (3, 2, 4),
    ),
}


@pytest.mark.parametrize("name", list(LAYER_CHECKS))
def test_layer_gradcheck_wrt_input(name, rng):
    make, forward, shape = LAYER_CHECKS[name]
    assert gradcheck(forward(make()), rng.standard_normal(shape))


def test_embedding_gradcheck_wrt_weight():
    emb = nn.Embedding(5, 3, dtype="float64")
    ids = ndl.Tensor([[1, 4], [1, 0]], requires_grad=False)

    def run(weight):
        emb.weight = weight
        return emb(ids)

    assert gradcheck(run, emb.weight.numpy())


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("kind", ["rnn", "lstm"])
def test_recurrent_weight_gradcheck(kind, fused, rng):
    # gradients reach weights set after construction, through the fused and unfused paths
    layer = (nn.RNN if kind == "rnn" else nn.LSTM)(3, 2, 2, dtype="float64", fused=fused)
    cell = (layer.rnn_cells if kind == "rnn" else layer.lstm_cells)[1]
    x = ndl.Tensor(rng.standard_normal((4, 2, 3)), requires_grad=False)
    for name in ("W_hh", "bias_ih"):

        def run(weight, name=name):
            setattr(cell, name, weight)
            return layer(x)[0]

        assert gradcheck(run, getattr(cell, name).numpy())
