"""GRUCell and GRU: draw order, PyTorch's torch.nn.GRU with copied weights, gradients, errors."""

from __future__ import annotations

import numpy as np
import pytest

import needle as ndl
from needle import nn
from needle.testing import gradcheck

T, B, IN, H, L = 4, 3, 5, 6, 2


def test_gru_draw_order():
    """W_ih, W_hh, bias_ih, bias_hh per layer, each U(-k, k), k = 1/sqrt(H), 3H wide."""
    np.random.seed(3)
    gru = nn.GRU(IN, H, L)
    np.random.seed(3)
    bound = 1 / np.sqrt(H)
    for cell in gru.gru_cells:
        for p in (cell.W_ih, cell.W_hh, cell.bias_ih, cell.bias_hh):
            expected = np.random.rand(*p.shape) * 2 * bound - bound
            np.testing.assert_allclose(p.numpy(), expected, rtol=1e-6, atol=1e-7)
    assert gru.gru_cells[0].W_ih.shape == (IN, 3 * H) and gru.gru_cells[1].W_ih.shape == (H, 3 * H)
    assert nn.GRUCell(IN, H, bias=False).bias_ih is None


def _float64(module, device, rng):
    """Give every (float64) parameter of ``module`` values of scale 0.5, past the init's."""
    for p in module.parameters():
        p.data = ndl.Tensor(rng.standard_normal(p.shape) * 0.5, device=device, dtype="float64")


def test_gru_cell_gradients(device, rng):
    cell = nn.GRUCell(3, 4, device=device, dtype="float64")
    _float64(cell, device, rng)

    def step(x, h, w_ih, w_hh, b_ih, b_hh):
        cell.W_ih, cell.W_hh, cell.bias_ih, cell.bias_hh = w_ih, w_hh, b_ih, b_hh
        return cell(x, h)

    gradcheck(
        step,
        rng.standard_normal((2, 3)),
        rng.standard_normal((2, 4)),
        *[p.numpy() for p in cell.parameters()],
        device=device,
    )


def test_gru_gradients(device, rng):
    gru = nn.GRU(2, 3, num_layers=2, device=device, dtype="float64")
    _float64(gru, device, rng)

    def run(x, h0):
        output, h_n = gru(x, h0)
        return ndl.ops.stack([output[-1], h_n[0]], 0)

    gradcheck(run, rng.standard_normal((3, 2, 2)), rng.standard_normal((2, 2, 3)), device=device)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("with_state", [True, False])
def test_gru_matches_torch(bias, with_state, rng, torch):
    ours, theirs = nn.GRU(IN, H, L, bias), torch.nn.GRU(IN, H, L, bias)
    with torch.no_grad():
        for k, cell in enumerate(ours.gru_cells):
            getattr(theirs, f"weight_ih_l{k}").copy_(torch.tensor(cell.W_ih.numpy().T))
            getattr(theirs, f"weight_hh_l{k}").copy_(torch.tensor(cell.W_hh.numpy().T))
            if bias:
                getattr(theirs, f"bias_ih_l{k}").copy_(torch.tensor(cell.bias_ih.numpy()))
                getattr(theirs, f"bias_hh_l{k}").copy_(torch.tensor(cell.bias_hh.numpy()))
    x = rng.standard_normal((T, B, IN)).astype(np.float32)
    h0 = rng.standard_normal((L, B, H)).astype(np.float32)
    x_t, h_t = torch.tensor(x, requires_grad=True), torch.tensor(h0, requires_grad=True)
    x_n, h_n = ndl.Tensor(x), ndl.Tensor(h0)
    out_t, last_t = theirs(x_t, h_t if with_state else None)
    out_n, last_n = ours(x_n, h_n if with_state else None)
    w_out = rng.standard_normal(out_t.shape).astype(np.float32)
    w_last = rng.standard_normal(last_t.shape).astype(np.float32)
    ((out_t * torch.tensor(w_out)).sum() + (last_t * torch.tensor(w_last)).sum()).backward()
    ((out_n * ndl.Tensor(w_out)).sum() + (last_n * ndl.Tensor(w_last)).sum()).backward()
    np.testing.assert_allclose(out_n.numpy(), out_t.detach().numpy(), atol=1e-5)
    np.testing.assert_allclose(last_n.numpy(), last_t.detach().numpy(), atol=1e-5)
    np.testing.assert_allclose(x_n.grad.numpy(), x_t.grad.numpy(), atol=2e-5)
    if with_state:
        np.testing.assert_allclose(h_n.grad.numpy(), h_t.grad.numpy(), atol=2e-5)
    names = {"W_ih": "weight_ih", "W_hh": "weight_hh", "bias_ih": "bias_ih", "bias_hh": "bias_hh"}
    for name, p in ours.named_parameters():
        _, layer, attribute = name.split(".")
        grad = getattr(theirs, f"{names[attribute]}_l{layer}").grad.numpy()
        np.testing.assert_allclose(p.grad.numpy(), grad.T, atol=2e-5, err_msg=name)


def test_gru_input_errors():
    cell, gru = nn.GRUCell(3, 4), nn.GRU(3, 4, 2)
    with pytest.raises(
        ValueError, match=r"GRUCell\(input_size=3, hidden_size=4\).*\(B, 3\).*\(2, 5\)"
    ):
        cell(ndl.init.ones(2, 5))
    with pytest.raises(ValueError, match=r"expected h of shape \(2, 4\).*got \(2, 3\)"):
        cell(ndl.init.ones(2, 3), ndl.init.ones(2, 3))
    with pytest.raises(ValueError, match=r"GRU\(input_size=3.*\(T, B, 3\).*got \(2, 3\)"):
        gru(ndl.init.ones(2, 3))
    with pytest.raises(ValueError, match=r"h0 of shape \(2, 5, 4\).*got \(1, 5, 4\)"):
        gru(ndl.init.ones(6, 5, 3), ndl.init.ones(1, 5, 4))
    with pytest.raises(ValueError, match="GRU: num_layers must be a positive int, got 0"):
        nn.GRU(3, 4, 0)
