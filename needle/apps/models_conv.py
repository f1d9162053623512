"""The course's convolutional models: ``ConvBN`` and ``ResNet9`` (hw4).

Modules are created in the course's order, so a seeded construction draws the same
random numbers as the course's reference. Unlike the course's file, importing this
module does not reseed NumPy.

Example:
    >>> model = ResNet9()
    >>> model.num_parameters()
    431946
"""
from __future__ import annotations

from needle import nn
from needle.autograd import Tensor
from needle.backends.numpy_backend import Device

__all__ = ["ConvBN", "ResNet9"]


class ConvBN(nn.Module):
    """``relu(batchnorm(conv(x)))``: (N, a, H, W) → (N, b, H_o, W_o), padding k // 2.

    Holds ``conv = nn.Conv(a, b, k, stride=s)``, ``bn = nn.BatchNorm2d(b)`` and
    ``relu = nn.ReLU()``, created in that order; ``k²·a·b + b + 2b`` parameters.

    >>> import needle as ndl
    >>> ConvBN(3, 4, 3, 2)(ndl.init.rand(2, 3, 8, 8)).shape
    (2, 4, 4, 4)
    """

    def __init__(self, a: int, b: int, k: int, s: int, device: Device | None = None,
                 dtype: str = "float32") -> None:
        super().__init__()
        self.conv = nn.Conv(a, b, k, stride=s, device=device, dtype=dtype)
        self.bn = nn.BatchNorm2d(b, device=device, dtype=dtype)
        self.relu = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        """(N, a, H, W) → (N, b, H_o, W_o)."""
        return self.relu(self.bn(self.conv(x)))


class ResNet9(nn.Module):
    """The course's ResNet9 for 32×32 RGB images: (N, 3, 32, 32) → (N, 10) logits.

    Layers, in creation order (spatial size for a 32×32 input): ConvBN(3, 16, 7, 4) (8),
    ConvBN(16, 32, 3, 2) (4), Residual of two ConvBN(32, 32, 3, 1), ConvBN(32, 64, 3, 2) (2),
    ConvBN(64, 128, 3, 2) (1), Residual of two ConvBN(128, 128, 3, 1), Flatten,
    Linear(128, 128), ReLU, Linear(128, 10). 431946 parameters.
    """

    def __init__(self, device: Device | None = None, dtype: str = "float32") -> None:
        super().__init__()

        def block(a: int, b: int, k: int, s: int) -> ConvBN:
            return ConvBN(a, b, k, s, device=device, dtype=dtype)

        def residual(c: int) -> nn.Residual:
            return nn.Residual(nn.Sequential(block(c, c, 3, 1), block(c, c, 3, 1)))

        self.model = nn.Sequential(
            block(3, 16, 7, 4),
            block(16, 32, 3, 2),
            residual(32),
            block(32, 64, 3, 2),
            block(64, 128, 3, 2),
            residual(128),
            nn.Flatten(),
            nn.Linear(128, 128, device=device, dtype=dtype),
            nn.ReLU(),
            nn.Linear(128, 10, device=device, dtype=dtype),
        )

    def forward(self, x: Tensor) -> Tensor:
        """(N, 3, 32, 32) → (N, 10) logits."""
        return self.model(x)
