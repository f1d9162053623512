"""The basic layers: Linear, activations, containers, normalisation, dropout and the loss.

Every layer follows the course's reference framework exactly — the same random draws
in the same order and the same arithmetic — so a seeded run gives the course's numbers.
Inputs are validated where they enter a layer, and errors name the layer, the shape
received and what it expected.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import init, ops
from .._validation import check_indices, check_positive_int, check_real
from ..autograd import Tensor
from ..backends import Device, array_api, kernels
from .module import Module, Parameter

# ----- validation helpers ---------------------------------------------------------------------


def _check_tensor(layer: str, x: Any) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(
            f"{layer}: expected a needle.Tensor input, got {type(x).__name__}; "
            f"wrap arrays with ndl.Tensor(x, requires_grad=False)"
        )


def _check_features(layer: str, x: Any, dim: int) -> None:
    """A 2-D tensor of shape (N, dim), as the 1-D normalisation layers need."""
    _check_tensor(layer, x)
    if len(x.shape) == 2 and x.shape[1] == dim:
        return
    hint = (
        f"build the layer with dim={x.shape[1]}"
        if len(x.shape) == 2
        else "flatten the input first (nn.Flatten())"
    )
    raise ValueError(
        f"{layer}(dim={dim}): expected input of shape (N, {dim}), got {tuple(x.shape)}; {hint}"
    )


def _over_rows(stat: Tensor, shape: tuple) -> Tensor:
    """A per-row statistic of shape (N,) broadcast to ``shape`` = (N, D)."""
    return ops.broadcast_to(ops.reshape(stat, (shape[0], 1)), shape)


# ----- simple layers --------------------------------------------------------------------------


class Identity(Module):
    """Returns its input unchanged. Any shape → the same shape."""

    def forward(self, x: Tensor) -> Tensor:
        """Return ``x`` itself."""
        return x


class Linear(Module):
    """``y = x @ weight + bias``: (N, in_features) → (N, out_features).

    ``weight`` (in_features, out_features) is drawn first, with
    ``kaiming_uniform(in_features, out_features)``; then ``bias`` (1, out_features) with
    ``kaiming_uniform(out_features, 1)`` reshaped. Inputs with more leading dimensions,
    (..., in_features), are accepted too.

    ``fused=True`` (the default) computes a 2-D input's ``x @ weight + bias`` as one op
    with a hand-derived gradient (see ``needle.ops.ops_fused``); ``fused=False`` builds
    it from ``matmul``, ``broadcast_to`` and ``add``, which can be differentiated twice.

    >>> import needle as ndl
    >>> Linear(3, 2)(ndl.init.ones(4, 3)).shape
    (4, 2)
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        device: Device | None = None,
        dtype: str = "float32",
        *,
        fused: bool = True,
    ) -> None:
        super().__init__()
        self.fused = fused
        self.in_features = check_positive_int("Linear", "in_features", in_features)
        self.out_features = check_positive_int("Linear", "out_features", out_features)
        self.weight = Parameter(
            init.kaiming_uniform(
                self.in_features, self.out_features, device=device, dtype=dtype, requires_grad=True
            )
        )
        self.bias = None
        if bias:
            self.bias = Parameter(
                init.kaiming_uniform(
                    self.out_features,
                    1,
                    device=device,
                    dtype=dtype,
                    requires_grad=True,
                ).reshape((1, self.out_features))
            )

    def forward(self, X: Tensor) -> Tensor:
        """(N, in_features) → (N, out_features); also (..., in_features)."""
        _check_tensor("Linear", X)
        if len(X.shape) < 2 or X.shape[-1] != self.in_features:
            raise ValueError(
                f"Linear(in_features={self.in_features}, out_features={self.out_features}): "
                f"expected input of shape (N, {self.in_features}), got {tuple(X.shape)}; "
                f"the last dimension must equal in_features (flatten images with nn.Flatten())"
            )
        if self.fused and len(X.shape) == 2:
            return ops.fused_linear(X, self.weight, self.bias)
        out = X @ self.weight
        if self.bias is not None:
            out = out + self.bias.broadcast_to(out.shape)
        return out

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.bias is not None}"
        )


class Flatten(Module):
    """Keep dimension 0 and flatten the rest: (N, d1, d2, ...) → (N, d1·d2·...)."""

    def forward(self, X: Tensor) -> Tensor:
        """(N, d1, d2, ...) → (N, d1·d2·...)."""
        _check_tensor("Flatten", X)
        if not X.shape:
            raise ValueError("Flatten: expected at least 1 dimension (the batch), got a 0-d tensor")
        rest = int(np.prod(X.shape[1:], dtype=np.int64))
        return X.reshape((X.shape[0], rest))


class ReLU(Module):
    """``max(x, 0)`` elementwise; any shape."""

    def forward(self, x: Tensor) -> Tensor:
        """``max(x, 0)``, same shape."""
        return ops.relu(x)


class Tanh(Module):
    """Hyperbolic tangent elementwise; any shape."""

    def forward(self, x: Tensor) -> Tensor:
        """``tanh(x)``, same shape."""
        return ops.tanh(x)


class Sigmoid(Module):
    """Logistic sigmoid elementwise; any shape."""

    def forward(self, x: Tensor) -> Tensor:
        """``1 / (1 + exp(-x))``, same shape."""
        return ops.sigmoid(x)


class Sequential(Module):
    """Apply ``modules`` in order; they are kept as the tuple attribute ``modules``.

    Supports ``len(seq)``, ``seq[i]`` and iteration over the layers.

    >>> model = Sequential(Linear(4, 8), ReLU(), Linear(8, 2))
    >>> len(model), type(model[1]).__name__
    (3, 'ReLU')
    """

    def __init__(self, *modules: Module) -> None:
        super().__init__()
        for index, module in enumerate(modules):
            if not isinstance(module, Module):
                raise TypeError(
                    f"Sequential: argument {index} must be a Module, got {type(module).__name__}"
                    + (
                        "; pass the layers unpacked: Sequential(*layers)"
                        if isinstance(module, (list, tuple))
                        else ""
                    )
                )
        self.modules = modules

    def forward(self, x: Tensor) -> Tensor:
        """Apply each module to the previous one's output."""
        for module in self.modules:
            x = module(x)
        return x

    def __len__(self) -> int:
        return len(self.modules)

    def __getitem__(self, index: int) -> Module:
        return self.modules[index]

    def __iter__(self):
        return iter(self.modules)

    def _repr_children(self) -> list[tuple[str, Module]]:
        # Show "(0): Linear(...)" as PyTorch does, not "(modules.0): ...".
        return [(str(i), m) for i, m in enumerate(self.modules)]


class Residual(Module):
    """``fn(x) + x``; ``fn`` must keep the shape."""

    def __init__(self, fn: Module) -> None:
        super().__init__()
        if not callable(fn):
            raise TypeError(f"Residual: fn must be a Module (callable), got {type(fn).__name__}")
        self.fn = fn

    def forward(self, x: Tensor) -> Tensor:
        """``fn(x) + x``, the shape of ``x``."""
        out = self.fn(x)
        if out.shape != x.shape:
            raise ValueError(
                f"Residual: fn changed the shape from {tuple(x.shape)} to {tuple(out.shape)}; "
                f"fn(x) + x needs fn to return its input's shape"
            )
        return out + x


# ----- loss -----------------------------------------------------------------------------------


def _labels(y: Any, n: int, k: int) -> np.ndarray:
    """``y`` as int64 labels of shape (n,), each in [0, k), or a ValueError naming the bad ones."""
    labels = np.asarray(y.numpy() if isinstance(y, Tensor) else y)
    if labels.shape != (n,):
        raise ValueError(
            f"SoftmaxLoss: expected {n} labels (shape ({n},)) for logits of shape ({n}, {k}), "
            f"got labels of shape {labels.shape}"
        )
    return check_indices("SoftmaxLoss", "labels", labels, k, f" for {k} classes")


class SoftmaxLoss(Module):
    """Mean cross-entropy of ``logits`` (N, K) against integer labels ``y`` (N,) → scalar.

    ``loss = mean_i(logsumexp(logits_i) - logits_i[y_i])``, computed stably. With
    ``fused=True`` (the default) in one op with a hand-derived gradient; ``fused=False``
    composes it from logsumexp and summation (twice differentiable).

    >>> import needle as ndl
    >>> loss = SoftmaxLoss()(ndl.init.zeros(2, 4), ndl.Tensor([0, 3]))
    >>> round(float(loss.numpy()), 4)  # log(4)
    1.3863
    """

    def __init__(self, *, fused: bool = True) -> None:
        super().__init__()
        self.fused = fused

    def forward(self, logits: Tensor, y: Any) -> Tensor:
        """logits (N, K) and integer labels y (N,) in [0, K) → the scalar mean loss."""
        _check_tensor("SoftmaxLoss", logits)
        if len(logits.shape) != 2:
            raise ValueError(
                f"SoftmaxLoss: expected logits of shape (N, K), got {tuple(logits.shape)}"
            )
        n, k = logits.shape
        labels = _labels(y, n, k)
        if self.fused:
            return ops.fused_softmax_cross_entropy(logits, labels)
        one_hot = logits.device.one_hot(k, labels, dtype=logits.dtype)
        # The target logit, picked as logsumexp(logits + mask) with mask = log(one_hot), 0 at
        # the label and -inf elsewhere: exactly logits[i, y_i], and unlike sum(logits *
        # one_hot) it stays finite when another logit is -inf (0 * -inf is nan). Its
        # gradient is the one-hot.
        with array_api.errstate(divide="ignore"):
            mask = Tensor.make_const(array_api.log(one_hot))
        target = ops.logsumexp(logits + mask, axes=(1,))
        return ops.summation(ops.logsumexp(logits, axes=(1,)) - target) / n


# ----- normalisation and dropout -------------------------------------------------------------


class _Norm1d(Module):
    """What LayerNorm1d and BatchNorm1d share: width, eps, and weight = ones, bias = zeros."""

    def __init__(
        self, dim: int, eps: float, device: Device | None, dtype: str, fused: bool
    ) -> None:
        super().__init__()
        name = type(self).__name__
        self.fused = fused
        self.dim = check_positive_int(name, "dim", dim)
        self.eps = check_real(name, "eps", eps, low=0.0, low_open=True, high_open=True)
        self.weight = Parameter(init.ones(self.dim, device=device, dtype=dtype, requires_grad=True))
        self.bias = Parameter(init.zeros(self.dim, device=device, dtype=dtype, requires_grad=True))

    def extra_repr(self) -> str:
        return f"{self.dim}, eps={self.eps}"


class LayerNorm1d(_Norm1d):
    """Normalise each row of x (N, dim) to zero mean, unit variance; scale and shift.

    ``y = weight * (x - mean) / sqrt(var + eps) + bias`` with the row's mean and biased
    variance; ``weight`` = ones(dim), ``bias`` = zeros(dim). (N, dim) → (N, dim).
    ``fused=True`` (the default) runs it as one op with a hand-derived gradient.
    """

    def __init__(
        self,
        dim: int,
        eps: float = 1e-5,
        device: Device | None = None,
        dtype: str = "float32",
        *,
        fused: bool = True,
    ) -> None:
        super().__init__(dim, eps, device, dtype, fused)

    def forward(self, x: Tensor) -> Tensor:
        """(N, dim) → (N, dim), each row normalised."""
        _check_features("LayerNorm1d", x, self.dim)
        if self.fused:
            return ops.fused_layer_norm(x, self.weight, self.bias, self.eps)
        shape = x.shape
        mean = _over_rows(x.sum(axes=(1,)) / self.dim, shape)
        centred = x - mean
        var = _over_rows((centred**2).sum(axes=(1,)) / self.dim, shape)
        normed = centred / (var + self.eps) ** 0.5
        return self.weight.broadcast_to(shape) * normed + self.bias.broadcast_to(shape)


class BatchNorm1d(_Norm1d):
    """Normalise each feature of x (N, dim) over the batch; scale and shift.

    Training: the batch mean and biased batch variance (gradients flow through them),
    and the running statistics are updated with
    ``running = (1 - momentum) * running + momentum * batch_stat`` (no graph is built).
    Eval: the running statistics are used. ``running_mean`` = zeros(dim) and
    ``running_var`` = ones(dim) are plain tensors (buffers) of the layer's dtype.
    ``fused=True`` (the default) runs training mode as one op with a hand-derived gradient.
    """

    def __init__(
        self,
        dim: int,
        eps: float = 1e-5,
        momentum: float = 0.1,
        device: Device | None = None,
        dtype: str = "float32",
        *,
        fused: bool = True,
    ) -> None:
        super().__init__(dim, eps, device, dtype, fused)
        self.momentum = check_real("BatchNorm1d", "momentum", momentum, low=0.0, high=1.0)
        self.running_mean = init.zeros(self.dim, device=device, dtype=dtype)
        self.running_var = init.ones(self.dim, device=device, dtype=dtype)

    def forward(self, x: Tensor) -> Tensor:
        """(N, dim) → (N, dim), each column normalised (batch or running stats)."""
        _check_features("BatchNorm1d", x, self.dim)
        shape = x.shape
        if self.training and self.fused:
            out, mean, var = ops.fused_batch_norm(x, self.weight, self.bias, self.eps)
            self._update_running(mean, var)
            return out
        if self.training:
            mean = x.sum(axes=(0,)) / shape[0]
            centred = x - mean.broadcast_to(shape)
            var = (centred**2).sum(axes=(0,)) / shape[0]
            self._update_running(mean, var)
        else:
            centred = x - self.running_mean.broadcast_to(shape)
            var = self.running_var
        normed = centred / (var.broadcast_to(shape) + self.eps) ** 0.5
        return self.weight.broadcast_to(shape) * normed + self.bias.broadcast_to(shape)

    def _update_running(self, mean: Tensor, var: Tensor) -> None:
        # On the detached arrays: no graph, and the buffers keep their dtype and identity.
        keep = 1 - self.momentum
        for buffer, stat in ((self.running_mean, mean), (self.running_var, var)):
            old = buffer.realize_cached_data()
            new = old * keep + stat.realize_cached_data() * self.momentum
            buffer.cached_data = new.astype(old.dtype, copy=False)

    def extra_repr(self) -> str:
        return f"{self.dim}, eps={self.eps}, momentum={self.momentum}"


class Dropout(Module):
    """Training: zero each element with probability ``p`` and scale the rest by 1/(1 - p).

    The mask is ``randb(*x.shape, p=1 - p)`` (one uniform draw per element). Eval: the
    identity. Any shape → the same shape.
    """

    def __init__(self, p: float = 0.5) -> None:
        super().__init__()
        self.p = check_real("Dropout", "p", p, low=0.0, high=1.0, high_open=True)

    def forward(self, x: Tensor) -> Tensor:
        """Any shape → the same shape; random in training mode, identity in eval."""
        _check_tensor("Dropout", x)
        if not self.training:
            return x
        # The same draws as randb(*x.shape, p=keep); the mask is scaled before it meets x,
        # so dropout is one multiply (x * (mask / keep), equal to x * mask / keep up to rounding).
        # np.random.rand(*shape)'s draws are what device.rand makes; the kernel compares the
        # draws in the dtype device.rand gives them, and makes the mask and the product in one
        # pass
        return ops.fused_dropout(x, kernels.uniform_draws(x.shape), 1 - self.p)

    def extra_repr(self) -> str:
        return f"p={self.p}"


__all__ = [
    "Identity",
    "Linear",
    "Flatten",
    "ReLU",
    "Tanh",
    "Sigmoid",
    "Sequential",
    "Residual",
    "SoftmaxLoss",
    "LayerNorm1d",
    "BatchNorm1d",
    "Dropout",
]
