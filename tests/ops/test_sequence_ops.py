"""The sequence ops: embedding gather/scatter-add and the fused RNN/LSTM steps.

Gradients are checked against central differences (float64) over several shapes, and
the fused steps against the unfused compositions in needle.nn.
"""

import numpy as np
import pytest

import needle as ndl
import needle.nn as nn
from needle.testing import gradcheck

ID_SHAPES = [(3,), (2, 3), (4, 1), (1, 1), (2, 2, 2)]


@pytest.mark.parametrize("ids_shape", ID_SHAPES)
def test_embedding_lookup_matches_one_hot_product(ids_shape, rng):
    weight = rng.standard_normal((5, 3))
    ids = rng.integers(0, 5, ids_shape)
    expected = np.eye(5)[ids] @ weight
    out = ndl.embedding_lookup(ndl.Tensor(weight, dtype="float64"), ids)
    np.testing.assert_array_equal(out.numpy(), expected)


@pytest.mark.parametrize("ids_shape", ID_SHAPES)
def test_embedding_lookup_gradcheck(ids_shape, rng):
    ids = rng.integers(0, 4, ids_shape)  # 4 rows, so ids repeat: the scatter-add accumulates
    assert gradcheck(lambda w: ndl.embedding_lookup(w, ids), rng.standard_normal((4, 3)))


@pytest.mark.parametrize("ids_shape", ID_SHAPES)
def test_scatter_add_rows_gradcheck_and_values(ids_shape, rng):
    ids = rng.integers(0, 4, ids_shape)
    a = rng.standard_normal(ids_shape + (2,))
    expected = np.zeros((4, 2))
    for k, i in enumerate(ids.reshape(-1)):
        expected[i] += a.reshape(-1, 2)[k]
    out = ndl.scatter_add_rows(ndl.Tensor(a, dtype="float64"), ids, 4)
    np.testing.assert_allclose(out.numpy(), expected)
    assert gradcheck(lambda t: ndl.scatter_add_rows(t, ids, 4), a)


def test_embedding_gradient_is_differentiable_again(rng):
    # The gradient of a gather is a scatter-add, itself a needle op: second order works.
    ids = np.array([[0, 2], [2, 1]])
    weight = ndl.Tensor(rng.standard_normal((3, 2)))
    (ndl.embedding_lookup(weight, ids) ** 3).sum().backward(create_graph=True)
    first = weight.grad
    first.sum().backward()
    counts = np.bincount(ids.reshape(-1), minlength=3)[:, None]
    # d/dw of sum(count_i * 3 w_i²) = 6 count_i w_i
    np.testing.assert_allclose(weight.grad.numpy(), 6 * counts * weight.numpy())


def _step_inputs(rng, batch, features, size, gates, bias):
    shapes = [(batch, features), (batch, size)] + [(batch, size)] * (gates == 4)
    shapes += [(features, gates * size), (size, gates * size)]
    shapes += [(gates * size,)] * (2 if bias else 0)
    return [rng.standard_normal(s) for s in shapes]


STEP_SHAPES = [(4, 3, 2), (1, 2, 3), (3, 1, 1), (2, 5, 4)]


@pytest.mark.parametrize("batch,features,size", STEP_SHAPES)
@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
@pytest.mark.parametrize("bias", [True, False])
def test_rnn_cell_gradcheck(batch, features, size, nonlinearity, bias, rng):
    inputs = _step_inputs(rng, batch, features, size, 1, bias)
    assert gradcheck(lambda *a: ndl.rnn_cell(*a, nonlinearity=nonlinearity), *inputs)


@pytest.mark.parametrize("batch,features,size", STEP_SHAPES)
@pytest.mark.parametrize("bias", [True, False])
def test_lstm_cell_gradcheck(batch, features, size, bias, rng):
    inputs = _step_inputs(rng, batch, features, size, 4, bias)
    # both outputs at once, weighted differently, and each alone (zeros fill the other)
    assert gradcheck(lambda *a: (lambda s: s[0] * 2 + s[1] * 3)(ndl.lstm_cell(*a)), *inputs)
    assert gradcheck(lambda *a: ndl.lstm_cell(*a)[1], *inputs)


LAYER_SHAPES = [(3, 2, 3, 2), (1, 1, 2, 3), (4, 3, 1, 1)]  # T, B, in, H


def _weighted(outputs, rng_seed=1):
    """A scalar that weights every element of every output differently."""
    rng = np.random.default_rng(rng_seed)
    total = None
    for out in outputs:
        term = (out * ndl.Tensor(rng.standard_normal(out.shape))).sum()
        total = term if total is None else total + term
    return total


@pytest.mark.parametrize("T,B,features,size", LAYER_SHAPES)
@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
@pytest.mark.parametrize("bias", [True, False])
def test_rnn_layer_gradcheck(T, B, features, size, nonlinearity, bias, rng):
    step = _step_inputs(rng, B, features, size, 1, bias)
    inputs = [rng.standard_normal((T, B, features))] + step[1:]
    assert gradcheck(lambda *a: _weighted(ndl.rnn_layer(*a, nonlinearity=nonlinearity)), *inputs)


@pytest.mark.parametrize("T,B,features,size", LAYER_SHAPES)
@pytest.mark.parametrize("bias", [True, False])
def test_lstm_layer_gradcheck(T, B, features, size, bias, rng):
    step = _step_inputs(rng, B, features, size, 4, bias)
    inputs = [rng.standard_normal((T, B, features))] + step[1:]
    assert gradcheck(lambda *a: _weighted(ndl.lstm_layer(*a)), *inputs)
    assert gradcheck(lambda *a: ndl.lstm_layer(*a)[2], *inputs)  # c_n alone


def test_layer_ops_equal_repeated_steps(rng):
    X = rng.standard_normal((5, 2, 3))
    h0, c0 = rng.standard_normal((2, 4)), rng.standard_normal((2, 4))

    def f64(a):
        return ndl.Tensor(a, dtype="float64")

    weights = [f64(rng.standard_normal(s)) for s in ((3, 16), (4, 16), (16,), (16,))]
    out, h_n, c_n = ndl.lstm_layer(f64(X), f64(h0), f64(c0), *weights)
    h, c = f64(h0), f64(c0)
    for t in range(5):
        h, c = ndl.lstm_cell(f64(X[t]), h, c, *weights)
        np.testing.assert_allclose(out.numpy()[t], h.numpy(), rtol=1e-12)
    np.testing.assert_allclose(h_n.numpy(), h.numpy(), rtol=1e-12)
    np.testing.assert_allclose(c_n.numpy(), c.numpy(), rtol=1e-12)


def test_lstm_cell_values_by_hand():
    # One unit, x = 1, h = c = 0.5, W_ih rows [i, f, g, o] = [0.1, 0.2, 0.3, 0.4], W_hh = 0.
    x, h, c = (ndl.Tensor([[v]]) for v in (1.0, 0.5, 0.5))
    W_ih = ndl.Tensor([[0.1, 0.2, 0.3, 0.4]])
    W_hh = ndl.Tensor([[0.0, 0.0, 0.0, 0.0]])
    h_new, c_new = ndl.lstm_cell(x, h, c, W_ih, W_hh)
    sig = lambda z: 1 / (1 + np.exp(-z))  # noqa: E731
    expected_c = sig(0.2) * 0.5 + sig(0.1) * np.tanh(0.3)
    np.testing.assert_allclose(c_new.numpy(), [[expected_c]], rtol=1e-6)
    np.testing.assert_allclose(h_new.numpy(), [[sig(0.4) * np.tanh(expected_c)]], rtol=1e-6)


def test_fused_step_second_derivative_raises(rng):
    inputs = [ndl.Tensor(a) for a in _step_inputs(rng, 2, 3, 2, 1, True)]
    ndl.rnn_cell(*inputs).sum().backward(create_graph=True)
    with pytest.raises(NotImplementedError, match="fused=False"):
        inputs[2].grad.sum().backward()


def _pair(make):
    """The layer built fused and unfused, holding the same weights."""
    fused, plain = make(True), make(False)
    plain.load_state_dict(fused.state_dict())
    return fused, plain


LAYERS = {
    "RNNCell-tanh": (lambda f: nn.RNNCell(3, 4, dtype="float64", fused=f), (5, 3)),
    "RNNCell-relu": (lambda f: nn.RNNCell(3, 4, True, "relu", dtype="float64", fused=f), (5, 3)),
    "RNNCell-nobias": (lambda f: nn.RNNCell(3, 4, False, dtype="float64", fused=f), (5, 3)),
    "LSTMCell": (lambda f: nn.LSTMCell(3, 4, dtype="float64", fused=f), (5, 3)),
    "RNN": (lambda f: nn.RNN(3, 4, 2, dtype="float64", fused=f), (6, 2, 3)),
    "LSTM": (lambda f: nn.LSTM(3, 4, 2, dtype="float64", fused=f), (6, 2, 3)),
}


def _outputs(result):
    """A layer's outputs as a flat list of tensors (cells and stacks return tuples)."""
    if isinstance(result, (tuple, list)):
        return [t for part in result for t in _outputs(part)]
    return [result]


@pytest.mark.parametrize("name", list(LAYERS))
def test_fused_layers_match_unfused(name, rng):
    make, shape = LAYERS[name]
    fused, plain = _pair(make)
    x = rng.standard_normal(shape) * 2
    results = []
    for layer in (fused, plain):
        xt = ndl.Tensor(x)
        outs = _outputs(layer(xt))
        total = outs[0] * 0
        for k, out in enumerate(outs):  # distinct weights per output and element
            total = (
                total + (out * ndl.Tensor(np.cos(np.arange(out.size) + k).reshape(out.shape))).sum()
            )
        total.backward()
        results.append(
            [o.numpy() for o in outs]
            + [xt.grad.numpy()]
            + [p.grad.numpy() for p in layer.parameters()]
        )
    assert len(results[0]) == len(results[1])
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


# ----- errors ---------------------------------------------------------------------------------


def test_embedding_lookup_errors(rng):
    weight = ndl.Tensor(rng.standard_normal((5, 2)))
    with pytest.raises(ValueError, match=r"ids must be in \[0, 5\).*\[5, 7\]"):
        ndl.embedding_lookup(weight, [[1, 5], [7, 0]])
    with pytest.raises(ValueError, match=r"\[-1\]"):
        ndl.embedding_lookup(weight, [-1])
    with pytest.raises(ValueError, match="must be integers"):
        ndl.embedding_lookup(weight, [0.5])
    with pytest.raises(ValueError, match=r"weight must be \(n, D\)"):
        ndl.embedding_lookup(ndl.Tensor(np.ones(3)), [0])
    with pytest.raises(ValueError, match=r"ids.shape \+ \(D,\)"):
        ndl.scatter_add_rows(ndl.Tensor(np.ones((3, 2))), [0, 1], 4)


def test_float_ids_are_accepted_when_integral():
    weight = ndl.Tensor(np.arange(6.0).reshape(3, 2))
    out = ndl.embedding_lookup(weight, np.array([2.0, 0.0], dtype=np.float32))
    np.testing.assert_array_equal(out.numpy(), [[4, 5], [0, 1]])


def test_step_shape_errors(rng):
    x, h, W_ih, W_hh = (ndl.Tensor(a) for a in _step_inputs(rng, 2, 3, 4, 1, False))
    with pytest.raises(ValueError, match=r"rnn_cell: got shapes .*'h': \(3, 4\).*expected"):
        ndl.rnn_cell(x, ndl.Tensor(np.ones((3, 4))), W_ih, W_hh)
    with pytest.raises(ValueError, match=r"'W_ih': \(4, 4\)"):
        ndl.rnn_cell(x, h, ndl.Tensor(np.ones((4, 4))), W_hh)
    with pytest.raises(ValueError, match=r"expected x \(B, in\) and states \(B, H\)"):
        ndl.rnn_cell(ndl.Tensor(np.ones((1, 2, 3))), h, W_ih, W_hh)
    with pytest.raises(ValueError, match="both bias_ih and bias_hh or neither"):
        ndl.rnn_cell(x, h, W_ih, W_hh, ndl.Tensor(np.ones(4)))
    with pytest.raises(ValueError, match="nonlinearity must be 'tanh' or 'relu'"):
        ndl.rnn_cell(x, h, W_ih, W_hh, nonlinearity="sigmoid")
    with pytest.raises(ValueError, match=r"lstm_cell: got shapes .*'W_ih': \(3, 4\)"):
        ndl.lstm_cell(x, h, h, W_ih, W_hh)
    with pytest.raises(TypeError, match="argument c must be a needle.Tensor"):
        ndl.lstm_cell(x, h, np.ones((2, 4)), W_ih, W_hh)
    with pytest.raises(ValueError, match=r"rnn_layer: expected x \(T, B, in\)"):
        ndl.rnn_layer(x, h, W_ih, W_hh)
    with pytest.raises(ValueError, match=r"lstm_layer: got shapes .*'c0': \(2, 3\)"):
        ndl.lstm_layer(
            ndl.Tensor(np.ones((5, 2, 3))),
            h,
            ndl.Tensor(np.ones((2, 3))),
            ndl.Tensor(np.ones((3, 16))),
            ndl.Tensor(np.ones((4, 16))),
        )
