"""Normalisation layers for inputs of any rank: ``LayerNorm``, ``RMSNorm``, ``GroupNorm``.

Each reduces over the *last* axis of a 2-D view of its input (LayerNorm and RMSNorm:
``(rows, dim)``; GroupNorm: ``(N·groups, everything in a group)``), then reshapes back,
so one row statistic serves every rank. Parameters and their PyTorch names match
``torch.nn.LayerNorm``/``RMSNorm``/``GroupNorm``.
"""

from __future__ import annotations

import math

import numpy as np

from .. import init, ops
from .._validation import check_positive_int, check_real
from ..autograd import Tensor
from ..backends import Device
from .module import Module, Parameter
from .nn_basic import LayerNorm1d, _check_tensor, _over_rows


def _check_last_axis(layer: str, x: Tensor, dim: int) -> None:
    _check_tensor(layer, x)
    if len(x.shape) == 0 or x.shape[-1] != dim:
        raise ValueError(
            f"{layer}: expected an input whose last axis has {dim} features, "
            f"got shape {tuple(x.shape)}"
        )


def _rows(x: Tensor) -> Tensor:
    """``x`` (..., D) as the matrix (rows, D)."""
    return x.reshape((math.prod(x.shape[:-1]), x.shape[-1]))


def _standardise_rows(x: Tensor, eps: float) -> Tensor:
    """Each row of ``x`` (R, D) to zero mean and unit (biased) variance."""
    shape, width = x.shape, x.shape[1]
    centred = x - _over_rows(x.sum(axes=(1,)) / width, shape)
    # the square root per row, then broadcast: the same values as per element, D times fewer
    std = _over_rows(((centred * centred).sum(axes=(1,)) / width + eps) ** 0.5, shape)
    return centred / std


class LayerNorm(LayerNorm1d):
    """:class:`LayerNorm1d` over the last axis of an input of any rank, PyTorch's
    ``LayerNorm(dim)``: (..., dim) → (..., dim), e.g. a (batch, sequence, dim) batch.

    >>> import needle as ndl
    >>> LayerNorm(4)(ndl.init.rand(2, 3, 4)).shape
    (2, 3, 4)
    """

    def forward(self, x: Tensor) -> Tensor:
        """(..., dim) → (..., dim), each vector along the last axis normalised."""
        _check_last_axis(f"LayerNorm(dim={self.dim})", x, self.dim)
        return super().forward(_rows(x)).reshape(x.shape)


class RMSNorm(Module):
    """Root-mean-square normalisation over the last axis, PyTorch's ``RMSNorm(dim)``.

    ``y = x / sqrt(mean(x², last axis) + eps) * weight``; ``weight`` = ones(dim). ``eps``
    defaults to the machine epsilon of ``dtype`` (PyTorch's ``eps=None``).
    (..., dim) → (..., dim).

    >>> import needle as ndl
    >>> RMSNorm(4)(ndl.init.ones(2, 4)).numpy().round(3).tolist()
    [[1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0]]
    """

    def __init__(
        self,
        dim: int,
        eps: float | None = None,
        device: Device | None = None,
        dtype: str = "float32",
    ) -> None:
        super().__init__()
        self.dim = check_positive_int("RMSNorm", "dim", dim)
        self.eps = (
            float(np.finfo(dtype).eps)
            if eps is None
            else check_real("RMSNorm", "eps", eps, low=0.0, low_open=True)
        )
        self.weight = Parameter(init.ones(self.dim, device=device, dtype=dtype, requires_grad=True))

    def forward(self, x: Tensor) -> Tensor:
        """(..., dim) → (..., dim)."""
        _check_last_axis(f"RMSNorm(dim={self.dim})", x, self.dim)
        rows = _rows(x)
        # the root mean square per row, then broadcast: the same values as taking the root of
        # the broadcast, with D times fewer powers (a power costs ~20 ns per element)
        rms = ((rows * rows).sum(axes=(1,)) / self.dim + self.eps) ** 0.5
        normed = rows / _over_rows(rms, rows.shape)
        return (normed * self.weight.broadcast_to(rows.shape)).reshape(x.shape)

    def extra_repr(self) -> str:
        return f"{self.dim}, eps={self.eps}"


class GroupNorm(Module):
    """Group normalisation, PyTorch's ``GroupNorm(num_groups, num_channels)``.

    The channels of ``x`` (N, C, *) are split into ``num_groups`` groups of consecutive
    channels; each sample's group is normalised over its channels and positions, then
    each channel is scaled by ``weight`` (ones(C)) and shifted by ``bias`` (zeros(C)).
    (N, C, *) → same shape. ``num_groups`` must divide ``num_channels``.

    ``fused=True`` (the default) normalises the groups with the fused layer-norm op (one pass
    each way, hand-derived gradient); ``fused=False`` composes the statistics from needle ops
    (differentiable twice).

    >>> import needle as ndl
    >>> GroupNorm(2, 6)(ndl.init.rand(2, 6, 4, 4)).shape
    (2, 6, 4, 4)
    """

    def __init__(
        self,
        num_groups: int,
        num_channels: int,
        eps: float = 1e-5,
        device: Device | None = None,
        dtype: str = "float32",
        fused: bool = True,
    ) -> None:
        super().__init__()
        self.fused = fused
        self.num_groups = check_positive_int("GroupNorm", "num_groups", num_groups)
        self.num_channels = check_positive_int("GroupNorm", "num_channels", num_channels)
        if num_channels % num_groups:
            raise ValueError(
                f"GroupNorm: num_groups={num_groups} does not divide num_channels={num_channels}"
            )
        self.eps = check_real("GroupNorm", "eps", eps, low=0.0, low_open=True)
        self.weight = Parameter(
            init.ones(num_channels, device=device, dtype=dtype, requires_grad=True)
        )
        self.bias = Parameter(
            init.zeros(num_channels, device=device, dtype=dtype, requires_grad=True)
        )

    def forward(self, x: Tensor) -> Tensor:
        """(N, C, *) → (N, C, *)."""
        layer = f"GroupNorm({self.num_groups}, {self.num_channels})"
        _check_tensor(layer, x)
        if len(x.shape) < 2 or x.shape[1] != self.num_channels:
            raise ValueError(
                f"{layer}: expected an input (N, {self.num_channels}, ...), got "
                f"shape {tuple(x.shape)}"
            )
        n, c = x.shape[:2]
        group_size = math.prod(x.shape[1:]) // self.num_groups
        groups = x.reshape((n * self.num_groups, group_size))
        if self.fused:  # a layer norm of the groups with unit weight and zero bias
            unit = init.ones(group_size, device=x.device, dtype=x.dtype)
            normed = ops.fused_layer_norm(groups, unit, unit * 0, self.eps)
        else:
            normed = _standardise_rows(groups, self.eps)
        per_channel = (1, c) + (1,) * (len(x.shape) - 2)
        scale = self.weight.reshape(per_channel).broadcast_to(x.shape)
        shift = self.bias.reshape(per_channel).broadcast_to(x.shape)
        return normed.reshape(x.shape) * scale + shift

    def extra_repr(self) -> str:
        return f"{self.num_groups}, {self.num_channels}, eps={self.eps}"


__all__ = ["LayerNorm", "RMSNorm", "GroupNorm"]
