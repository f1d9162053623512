"""The key-padding mask of MultiHeadAttention, AttentionLayer, TransformerLayer and
Transformer: against NumPy and PyTorch (forward and gradients), combined with the causal
mask, its invariances (padded keys change nothing), the draws, and bad masks.
"""

from __future__ import annotations

import numpy as np
import pytest

import needle as ndl
import needle.nn as nn
from needle.testing import gradcheck

# (B, S) = (2, 4): batch entry 0 has 3 real keys, entry 1 has 2 (right padding)
PADDED = np.array([[False, False, False, True], [False, False, True, True]])


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _f64(*arrays: np.ndarray) -> list[ndl.Tensor]:
    return [ndl.Tensor(a, dtype="float64") for a in arrays]


@pytest.mark.parametrize("causal", [False, True])
def test_masked_attention_against_numpy(causal, rng):
    q, k, v = (rng.standard_normal((2, 3, 4, 5)) for _ in range(3))
    result, probs = nn.MultiHeadAttention(causal=causal)(*_f64(q, k, v), key_padding_mask=PADDED)
    hidden = PADDED[:, None, None, :] | (np.triu(np.ones((4, 4), bool), 1) if causal else False)
    expected = _softmax(np.where(hidden, -np.inf, q @ np.swapaxes(k, -1, -2) / np.sqrt(5)))
    np.testing.assert_allclose(probs.numpy(), expected, atol=1e-12)
    np.testing.assert_allclose(result.numpy(), expected @ v, atol=1e-12)
    assert (probs.numpy()[np.broadcast_to(hidden, probs.shape)] == 0).all()  # exactly 0


def test_an_all_false_mask_changes_nothing(rng):
    q, k, v = _f64(*(rng.standard_normal((2, 2, 3, 4)) for _ in range(3)))
    attn = nn.MultiHeadAttention(causal=True)
    plain = attn(q, k, v)[0].numpy()
    np.testing.assert_array_equal(
        attn(q, k, v, key_padding_mask=np.zeros((2, 3), bool))[0].numpy(), plain
    )


def test_a_fully_masked_row_is_uniform_and_finite(rng):
    q, k, v = _f64(*(rng.standard_normal((1, 1, 2, 3)) for _ in range(3)))
    _, probs = nn.MultiHeadAttention()(q, k, v, key_padding_mask=np.array([[True, True]]))
    np.testing.assert_allclose(probs.numpy(), np.full((1, 1, 2, 2), 0.5))


@pytest.mark.parametrize("causal", [False, True])
def test_masked_attention_gradcheck(causal, rng):
    attn = nn.MultiHeadAttention(causal=causal, dtype="float64")
    q, k, v = (rng.standard_normal((2, 2, n, 3)) for n in (3, 4, 4))
    assert gradcheck(lambda *a: attn(*a, key_padding_mask=PADDED)[0], q, k, v)


@pytest.mark.parametrize("causal", [False, True])
def test_attention_layer_mask_matches_torch(causal, rng, torch):
    B, T, F, heads, dim = 2, 4, 6, 2, 3
    layer = nn.AttentionLayer(F, heads, dim, causal=causal)
    mha = torch.nn.MultiheadAttention(heads * dim, heads, bias=False, batch_first=True)
    projections = [layer.q_projection, layer.k_projection, layer.v_projection]
    with torch.no_grad():
        mha.in_proj_weight.copy_(
            torch.tensor(np.concatenate([p.weight.numpy().T for p in projections]))
        )
        mha.out_proj.weight.copy_(torch.tensor(layer.out_projection.weight.numpy().T))
    x_np = rng.standard_normal((B, T, F)).astype(np.float32)
    x, tx = ndl.Tensor(x_np, requires_grad=True), torch.tensor(x_np, requires_grad=True)
    normed = torch.nn.functional.layer_norm(tx, (F,), eps=1e-5)
    future = torch.triu(torch.ones(T, T, dtype=torch.bool), 1) if causal else None
    out_t, _ = mha(
        normed,
        normed,
        normed,
        key_padding_mask=torch.tensor(PADDED),
        attn_mask=future,
        need_weights=False,
    )
    out = layer(x, key_padding_mask=ndl.Tensor(PADDED, dtype="bool"))  # a Tensor mask works too
    weights = rng.standard_normal(out.shape).astype(np.float32)
    (out * ndl.Tensor(weights)).sum().backward()
    (out_t * torch.tensor(weights)).sum().backward()
    np.testing.assert_allclose(out.numpy(), out_t.detach().numpy(), atol=1e-5)
    np.testing.assert_allclose(x.grad.numpy(), tx.grad.numpy(), atol=1e-4)


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("causal", [False, True])
def test_padded_positions_do_not_reach_the_real_ones(batch_first, causal, rng):
    """Changing the padded inputs leaves the real positions' outputs as they were, and the
    real outputs send no gradient to the padded inputs."""
    model = nn.Transformer(
        4,
        6,
        2,
        num_head=2,
        dim_head=2,
        causal=causal,
        dtype="float64",
        batch_first=batch_first,
        sequence_len=4,
    )
    layout = (lambda a: a) if batch_first else (lambda a: np.swapaxes(a, 0, 1))
    x = rng.standard_normal((2, 4, 4))
    noisy = np.where(PADDED[..., None], rng.standard_normal(x.shape) * 10, x)
    real = ~PADDED
    outs = []
    for data in (x, noisy):
        inputs = ndl.Tensor(layout(data), dtype="float64", requires_grad=True)
        out = layout(model(inputs, key_padding_mask=PADDED)[0].numpy())
        outs.append(out[real])
    np.testing.assert_allclose(outs[0], outs[1], atol=1e-12)
    inputs = ndl.Tensor(layout(x), dtype="float64", requires_grad=True)
    out = model(inputs, key_padding_mask=PADDED)[0]
    weights = layout(np.where(real[..., None], 1.0, 0.0) * np.ones(x.shape))
    (out * ndl.Tensor(weights, dtype="float64")).sum().backward()
    assert (layout(inputs.grad.numpy())[PADDED] == 0).all()


def test_the_mask_draws_nothing():
    """Dropout draws the same numbers, in the same order, with and without a mask."""
    model = nn.Transformer(4, 6, 1, num_head=2, dim_head=2, dropout=0.1, sequence_len=4)
    x = ndl.init.ones(4, 2, 4)
    np.random.seed(0)
    model(x)
    without = np.random.rand()
    np.random.seed(0)
    model(x, key_padding_mask=PADDED)
    assert np.random.rand() == without


MASK_ERRORS = [
    (
        "MultiHeadAttention shape",
        lambda: nn.MultiHeadAttention()(
            *[ndl.init.ones(2, 1, 3, 4)] * 3, key_padding_mask=np.zeros((2, 4), bool)
        ),
        ValueError,
        ["MultiHeadAttention", "(2, 4)", "(B, S) = (2, 3)"],
    ),
    (
        "AttentionLayer keys",
        lambda: nn.AttentionLayer(4, 1, 2)(
            ndl.init.ones(2, 3, 4),
            *[ndl.init.ones(2, 5, 4)] * 2,
            key_padding_mask=np.zeros((2, 3), bool),
        ),
        ValueError,
        ["AttentionLayer", "(2, 3)", "(B, S) = (2, 5)"],
    ),
    (
        "Transformer time-major",
        lambda: nn.Transformer(4, 4, 1, num_head=1, dim_head=2)(
            ndl.init.ones(3, 2, 4), key_padding_mask=np.zeros((3, 2), bool)
        ),
        ValueError,
        ["Transformer", "(3, 2)", "(B, S) = (2, 3)"],
    ),
    (
        "float mask",
        lambda: nn.TransformerLayer(4, 1, 2, 4)(
            ndl.init.ones(2, 3, 4), key_padding_mask=np.zeros((2, 3))
        ),
        TypeError,
        ["AttentionLayer", "boolean", "float64"],
    ),
]


@pytest.mark.parametrize("name, call, error, words", MASK_ERRORS, ids=[e[0] for e in MASK_ERRORS])
def test_mask_errors(name, call, error, words):
    with pytest.raises(error) as info:
        call()
    for word in words:
        assert word in str(info.value), (word, str(info.value))
