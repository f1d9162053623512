"""Random data augmentations applied to single H×W×C NumPy images.

Each transform draws from NumPy's *global* generator with exactly the calls the
course's reference framework makes, in the same order, so ``np.random.seed(s)``
reproduces the course's augmented images bit for bit.
"""

from __future__ import annotations

import numpy as np

__all__ = ["Transform", "RandomFlipHorizontal", "RandomCrop"]


class Transform:
    """Base class of data transforms: a callable from one image to one image.

    Subclasses implement ``__call__(img)`` for an H×W×C NumPy array and return an
    array (which may be a view of ``img``; datasets pass a private copy).

    Example:
        >>> class Invert(Transform):
        ...     def __call__(self, img): return 1.0 - img
        >>> Invert()(np.zeros((1, 1, 1))).item()
        1.0
    """

    def __call__(self, img: np.ndarray) -> np.ndarray:
        raise NotImplementedError(f"{type(self).__name__} must implement __call__(img)")


def _check_image(transform: Transform, img: np.ndarray) -> None:
    """Raise ValueError unless ``img`` is a 3-D H×W×C array."""
    if getattr(img, "ndim", None) != 3:
        shape = getattr(img, "shape", type(img).__name__)
        raise ValueError(
            f"{type(transform).__name__}: expected an H×W×C image (3 dims), got shape "
            f"{shape}; reshape a flat 784-vector with img.reshape(28, 28, 1)"
        )


class RandomFlipHorizontal(Transform):
    """Flip an H×W×C image along W (left-right) with probability ``p``.

    Draws exactly one number per call: ``np.random.rand() < p``.

    Args:
        p: flip probability in [0, 1].

    Shapes: (H, W, C) -> (H, W, C).

    Example:
        >>> img = np.arange(3.0).reshape(1, 3, 1)
        >>> RandomFlipHorizontal(p=1.0)(img)[0, :, 0].tolist()
        [2.0, 1.0, 0.0]
    """

    def __init__(self, p: float = 0.5) -> None:
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"RandomFlipHorizontal: p={p!r} must lie in [0, 1]")
        self.p = p

    def __call__(self, img: np.ndarray) -> np.ndarray:
        _check_image(self, img)
        flip_img = np.random.rand() < self.p
        return img[:, ::-1, :] if flip_img else img

    def __repr__(self) -> str:
        return f"RandomFlipHorizontal(p={self.p})"


class RandomCrop(Transform):
    """Shift an H×W×C image by up to ``padding`` pixels, filling with zeros.

    Draws once per call: ``shift_x, shift_y = np.random.randint(-padding, padding + 1,
    size=2)``; zero-pads H and W by ``padding`` and returns the H×W window of the padded
    image whose top-left corner is at row ``padding + shift_x``, column
    ``padding + shift_y``.

    Args:
        padding: largest shift in pixels, a non-negative int.

    Shapes: (H, W, C) -> (H, W, C).

    Example:
        >>> np.random.seed(0)
        >>> RandomCrop(padding=2)(np.ones((4, 4, 1))).shape
        (4, 4, 1)
    """

    def __init__(self, padding: int = 3) -> None:
        if isinstance(padding, bool) or not isinstance(padding, (int, np.integer)) or padding < 0:
            raise ValueError(f"RandomCrop: padding={padding!r} must be a non-negative int")
        self.padding = int(padding)

    def __call__(self, img: np.ndarray) -> np.ndarray:
        _check_image(self, img)
        pad = self.padding
        shift_x, shift_y = np.random.randint(low=-pad, high=pad + 1, size=2)
        padded = np.pad(img, ((pad, pad), (pad, pad), (0, 0)))
        top, left = pad + shift_x, pad + shift_y
        return padded[top: top + img.shape[0], left: left + img.shape[1], :]

    def __repr__(self) -> str:
        return f"RandomCrop(padding={self.padding})"
