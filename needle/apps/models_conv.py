"""Convolutional models: the course's ``ConvBN`` and ``ResNet9`` (hw4), and ``SmallCNN``.

``SmallCNN`` is needle's own recipe for small images (Fashion-MNIST), sized to train on
a CPU in minutes per epoch (docs/training.md).

Modules are created in the course's order, so a seeded construction draws the same
random numbers as the course's reference. Unlike the course's file, importing this
module does not reseed NumPy.

Example:
    >>> model = ResNet9()
    >>> model.num_parameters()
    431946
"""

from __future__ import annotations

from needle import nn, ops
from needle.autograd import Tensor
from needle.backends import Device

__all__ = ["ConvBN", "ResNet9", "SmallCNN"]


class ConvBN(nn.Module):
    """``relu(batchnorm(conv(x)))``: (N, a, H, W) → (N, b, H_o, W_o), padding k // 2.

    Holds ``conv = nn.Conv(a, b, k, stride=s)``, ``bn = nn.BatchNorm2d(b)`` and
    ``relu = nn.ReLU()``, created in that order; ``k²·a·b + b + 2b`` parameters.

    >>> import needle as ndl
    >>> ConvBN(3, 4, 3, 2)(ndl.init.rand(2, 3, 8, 8)).shape
    (2, 4, 4, 4)
    """

    def __init__(
        self, a: int, b: int, k: int, s: int, device: Device | None = None, dtype: str = "float32"
    ) -> None:
        super().__init__()
        self.conv = nn.Conv(a, b, k, stride=s, device=device, dtype=dtype)
        self.bn = nn.BatchNorm2d(b, device=device, dtype=dtype)
        self.relu = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        """(N, a, H, W) → (N, b, H_o, W_o).

        The same as ``relu(bn(conv(x)))``, computed channels-last (NHWC) from the conv's
        input to the ReLU's output: one layout change in and one view out, where three NCHW
        layers would convert six times (each a copy under the ``nd`` backend).
        """
        rows = self.relu(self.bn.forward_nhwc(self.conv.forward_nhwc(self.conv.to_nhwc(x))))
        return ops.permute(rows, 0, 3, 1, 2)  # NHWC → NCHW, a view


class ResNet9(nn.Module):
    """The course's ResNet9 for 32×32 RGB images: (N, 3, 32, 32) → (N, 10) logits.

    ``in_channels`` (default 3, the course's) lets it take grayscale images: with 1 it
    maps (N, 1, 28, 28) Fashion-MNIST images to (N, 10) too (28 → 7 → 4 → 2 → 1).

    Layers, in creation order (spatial size for a 32×32 input): ConvBN(3, 16, 7, 4) (8),
    ConvBN(16, 32, 3, 2) (4), Residual of two ConvBN(32, 32, 3, 1), ConvBN(32, 64, 3, 2) (2),
    ConvBN(64, 128, 3, 2) (1), Residual of two ConvBN(128, 128, 3, 1), Flatten,
    Linear(128, 128), ReLU, Linear(128, 10). 431946 parameters.
    """

    def __init__(
        self, device: Device | None = None, dtype: str = "float32", in_channels: int = 3
    ) -> None:
        super().__init__()

        def block(a: int, b: int, k: int, s: int) -> ConvBN:
            return ConvBN(a, b, k, s, device=device, dtype=dtype)

        def residual(c: int) -> nn.Residual:
            return nn.Residual(nn.Sequential(block(c, c, 3, 1), block(c, c, 3, 1)))

        self.model = nn.Sequential(
            block(in_channels, 16, 7, 4),
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


class SmallCNN(nn.Module):
    """A small convolutional network for C×H×W images: (N, C, H, W) → (N, classes) logits.

    Five ConvBN blocks (3×3 kernels; stride 2 halves the size, rounding up), the third
    one residual, then a linear head: ConvBN(C, w, 1), ConvBN(w, 2w, 2),
    Residual(ConvBN(2w, 2w, 1)), ConvBN(2w, 4w, 2), ConvBN(4w, 4w, 2), Flatten,
    Linear(4w · ⌈H/8⌉ · ⌈W/8⌉, classes). Strided convolutions do the pooling.

    Args:
        in_channels: C (1 for Fashion-MNIST, 3 for CIFAR-10).
        image_size: ``(H, W)`` of the inputs (fixes the head's width).
        width: w, the channels of the first block.
        num_classes: number of logits.

    Example:
        >>> import needle as ndl
        >>> SmallCNN(1, (28, 28), width=4)(ndl.init.rand(2, 1, 28, 28)).shape
        (2, 10)
    """

    def __init__(
        self,
        in_channels: int = 1,
        image_size: tuple[int, int] = (28, 28),
        width: int = 32,
        num_classes: int = 10,
        device: Device | None = None,
        dtype: str = "float32",
    ) -> None:
        super().__init__()

        def block(a: int, b: int, s: int) -> ConvBN:
            return ConvBN(a, b, 3, s, device=device, dtype=dtype)

        height, wide = (-(-side // 8) for side in image_size)  # three stride-2 halvings
        self.model = nn.Sequential(
            block(in_channels, width, 1),
            block(width, 2 * width, 2),
            nn.Residual(block(2 * width, 2 * width, 1)),
            block(2 * width, 4 * width, 2),
            block(4 * width, 4 * width, 2),
            nn.Flatten(),
            nn.Linear(4 * width * height * wide, num_classes, device=device, dtype=dtype),
        )

    def forward(self, x: Tensor) -> Tensor:
        """(N, C, H, W) → (N, classes) logits."""
        return self.model(x)
