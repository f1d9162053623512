"""Data augmentations applied to single H×W×C NumPy images.

Every transform draws from NumPy's *global* generator, so ``np.random.seed(s)`` fixes
the augmented images. ``RandomFlipHorizontal`` and ``RandomCrop`` make exactly the calls
the course's reference framework makes, in the same order, and so reproduce its images
bit for bit; each class's docstring lists its draws. ``RandomResizedCrop`` and
``RandomRotation`` sample the image at fractional pixel positions (bilinear by default,
or nearest), ``ColorJitter`` and ``Normalize`` change the values only.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

__all__ = [
    "Transform",
    "RandomFlipHorizontal",
    "RandomCrop",
    "RandomResizedCrop",
    "RandomRotation",
    "ColorJitter",
    "Normalize",
]

_INTERPOLATIONS = ("bilinear", "nearest")


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
        return padded[top : top + img.shape[0], left : left + img.shape[1], :]

    def __repr__(self) -> str:
        return f"RandomCrop(padding={self.padding})"


# ----- argument checks and the shared sampler -----------------------------------------------


def _check_number(owner: str, name: str, value, low: float = 0.0) -> float:
    """``value`` as a float >= ``low``, or a ValueError naming ``owner`` and ``name``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value >= low:
        raise ValueError(f"{owner}: {name}={value!r} must be a number >= {low}")
    return float(value)


def _check_range(owner: str, name: str, value, low: float = -math.inf) -> tuple[float, float]:
    """``value`` as an ordered pair ``(a, b)`` of numbers >= ``low`` with ``a <= b``."""
    pair = tuple(value) if isinstance(value, (tuple, list)) else None
    if pair is None or len(pair) != 2:
        raise ValueError(f"{owner}: {name}={value!r} must be a pair (min, max)")
    first, second = (_check_number(owner, name, v, low) for v in pair)
    if first > second:
        raise ValueError(f"{owner}: {name}={value!r} must be ordered (min, max)")
    return first, second


def _check_interpolation(owner: str, interpolation: str) -> str:
    if interpolation not in _INTERPOLATIONS:
        raise ValueError(
            f"{owner}: interpolation={interpolation!r} must be one of "
            f"{', '.join(map(repr, _INTERPOLATIONS))}"
        )
    return interpolation


def _sample(
    img: np.ndarray, rows: np.ndarray, cols: np.ndarray, interpolation: str, fill: float = 0.0
) -> np.ndarray:
    """``img`` (H, W, C) at the fractional pixel positions ``rows``, ``cols`` (each
    (H_o, W_o)) → (H_o, W_o, C) in ``img``'s dtype.

    Pixel (r, c) sits at integer coordinates. "nearest" takes the closest pixel,
    "bilinear" blends the four around the point; positions off the image read ``fill``
    (bilinearly: within one pixel of the border, blended with it).
    """
    h, w = img.shape[:2]
    if interpolation == "nearest":
        r, c = np.rint(rows).astype(np.int64), np.rint(cols).astype(np.int64)
        inside = ((r >= 0) & (r < h) & (c >= 0) & (c < w))[..., None]
        return np.where(inside, img[r.clip(0, h - 1), c.clip(0, w - 1)], fill).astype(img.dtype)
    # a border of fill one pixel wide: the four neighbours of every clipped point exist
    padded = np.pad(img, ((1, 1), (1, 1), (0, 0)), constant_values=fill)
    r, c = np.clip(rows + 1.0, 0.0, h + 1.0), np.clip(cols + 1.0, 0.0, w + 1.0)
    r0 = np.minimum(np.floor(r), h).astype(np.int64)
    c0 = np.minimum(np.floor(c), w).astype(np.int64)
    fr, fc = (r - r0)[..., None], (c - c0)[..., None]
    top = padded[r0, c0] * (1 - fc) + padded[r0, c0 + 1] * fc
    bottom = padded[r0 + 1, c0] * (1 - fc) + padded[r0 + 1, c0 + 1] * fc
    return (top * (1 - fr) + bottom * fr).astype(img.dtype)


def _resize(img: np.ndarray, size: tuple[int, int], interpolation: str) -> np.ndarray:
    """``img`` (H, W, C) resized to ``size`` (H_o, W_o): output pixel centres mapped onto
    input pixel centres (PyTorch's ``align_corners=False``), positions clamped to the image."""
    h, w = img.shape[:2]
    rows = np.clip((np.arange(size[0]) + 0.5) * h / size[0] - 0.5, 0, h - 1)
    cols = np.clip((np.arange(size[1]) + 0.5) * w / size[1] - 0.5, 0, w - 1)
    return _sample(img, *np.meshgrid(rows, cols, indexing="ij"), interpolation)


# ----- geometric augmentations --------------------------------------------------------------


class RandomResizedCrop(Transform):
    """Crop a random area and aspect ratio of an image, resized to ``size`` (torchvision's
    ``RandomResizedCrop``).

    Per call, up to 10 attempts, each drawing ``np.random.uniform(*scale)`` (the crop's
    fraction of the image area) then ``np.random.uniform(log ratio_min, log ratio_max)``
    (the log of its width/height); the crop is ``w = round(√(area·ratio))`` by
    ``h = round(√(area/ratio))``. The first that fits draws its corner,
    ``top = np.random.randint(0, H − h + 1)`` then ``left = np.random.randint(0, W − w + 1)``.
    If none fits, the centre crop with the ratio clamped to ``ratio`` (no more draws).
    The crop is resized bilinearly (output pixel centres on input pixel centres, PyTorch's
    ``align_corners=False``) or to the nearest pixel.

    Args:
        size: output (H_o, W_o), or an int for a square.
        scale: (min, max) fraction of the area, in (0, 1].
        ratio: (min, max) width/height, > 0.
        interpolation: "bilinear" (default) or "nearest".

    Shapes: (H, W, C) -> (H_o, W_o, C).

    Example:
        >>> np.random.seed(0)
        >>> RandomResizedCrop(4)(np.ones((8, 6, 3), np.float32)).shape
        (4, 4, 3)
    """

    def __init__(
        self,
        size: int | tuple[int, int],
        scale: tuple[float, float] = (0.08, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        interpolation: str = "bilinear",
    ) -> None:
        sizes = tuple(size) if isinstance(size, (tuple, list)) else (size, size)
        if len(sizes) != 2 or not all(
            isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v > 0 for v in sizes
        ):
            raise ValueError(
                f"RandomResizedCrop: size={size!r} must be a positive int or an (H, W) pair of them"
            )
        self.size = (int(sizes[0]), int(sizes[1]))
        self.scale = _check_range("RandomResizedCrop", "scale", scale, 0.0)
        if not 0.0 < self.scale[1] <= 1.0:
            raise ValueError(f"RandomResizedCrop: scale={scale!r} must lie in (0, 1]")
        self.ratio = _check_range("RandomResizedCrop", "ratio", ratio, 0.0)
        if self.ratio[0] <= 0.0:
            raise ValueError(f"RandomResizedCrop: ratio={ratio!r} must be > 0")
        self.interpolation = _check_interpolation("RandomResizedCrop", interpolation)

    def _window(self, h: int, w: int) -> tuple[int, int, int, int]:
        """The crop's (top, left, height, width): the documented draws."""
        log_ratio = (math.log(self.ratio[0]), math.log(self.ratio[1]))
        for _ in range(10):
            area = h * w * np.random.uniform(*self.scale)
            aspect = math.exp(np.random.uniform(*log_ratio))
            crop_w, crop_h = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
            if 0 < crop_w <= w and 0 < crop_h <= h:
                top = np.random.randint(0, h - crop_h + 1)
                left = np.random.randint(0, w - crop_w + 1)
                return top, left, crop_h, crop_w
        aspect = min(max(w / h, self.ratio[0]), self.ratio[1])
        crop_w, crop_h = min(w, round(h * aspect)), min(h, round(w / aspect))
        return (h - crop_h) // 2, (w - crop_w) // 2, crop_h, crop_w

    def __call__(self, img: np.ndarray) -> np.ndarray:
        _check_image(self, img)
        top, left, h, w = self._window(*img.shape[:2])
        return _resize(img[top : top + h, left : left + w], self.size, self.interpolation)

    def __repr__(self) -> str:
        return (
            f"RandomResizedCrop(size={self.size}, scale={self.scale}, ratio={self.ratio}, "
            f"interpolation={self.interpolation!r})"
        )


class RandomRotation(Transform):
    """Rotate an image about its centre by a random angle, counter-clockwise for positive
    angles (as torchvision's ``RandomRotation``); corners brought in from outside get
    ``fill``.

    Draws once per call: ``angle = np.random.uniform(min, max)`` in degrees. Each output
    pixel reads the input at its position rotated back about ``((H−1)/2, (W−1)/2)``,
    bilinearly (default) or from the nearest pixel; the size stays H×W.

    Args:
        degrees: a number d >= 0 for the range (−d, d), or a (min, max) pair.
        interpolation: "bilinear" (default) or "nearest".
        fill: the value of pixels from outside the image.

    Shapes: (H, W, C) -> (H, W, C).

    Example:
        >>> img = np.arange(4.0).reshape(2, 2, 1)
        >>> RandomRotation((90, 90), interpolation="nearest")(img)[..., 0].tolist()
        [[1.0, 3.0], [0.0, 2.0]]
    """

    def __init__(
        self,
        degrees: float | tuple[float, float],
        interpolation: str = "bilinear",
        fill: float = 0.0,
    ) -> None:
        if isinstance(degrees, (tuple, list)):
            self.degrees = _check_range("RandomRotation", "degrees", degrees)
        else:
            bound = _check_number("RandomRotation", "degrees", degrees)
            self.degrees = (-bound, bound)
        self.interpolation = _check_interpolation("RandomRotation", interpolation)
        self.fill = _check_number("RandomRotation", "fill", fill, -math.inf)

    def __call__(self, img: np.ndarray) -> np.ndarray:
        _check_image(self, img)
        theta = math.radians(np.random.uniform(*self.degrees))
        h, w = img.shape[:2]
        centre_r, centre_c = (h - 1) / 2, (w - 1) / 2
        dr, dc = np.meshgrid(np.arange(h) - centre_r, np.arange(w) - centre_c, indexing="ij")
        # rows grow downwards, so a counter-clockwise turn on screen is clockwise in (r, c)
        cos, sin = math.cos(theta), math.sin(theta)
        rows, cols = centre_r + cos * dr + sin * dc, centre_c - sin * dr + cos * dc
        return _sample(img, rows, cols, self.interpolation, self.fill)

    def __repr__(self) -> str:
        return (
            f"RandomRotation(degrees={self.degrees}, interpolation={self.interpolation!r}, "
            f"fill={self.fill})"
        )


# ----- value augmentations ------------------------------------------------------------------

#: ITU-R 601 luma weights of R, G, B: the grayscale torchvision's ColorJitter uses.
_LUMA = np.array([0.299, 0.587, 0.114])


class ColorJitter(Transform):
    """Randomly change the brightness, contrast and saturation of an image with values in
    [0, 1] (torchvision's ``ColorJitter`` without hue, in a fixed order).

    Each non-zero argument ``x`` draws one factor ``f = np.random.uniform(max(0, 1 − x),
    1 + x)``, in this order, and is applied in this order, the result clipped to [0, 1]
    after each step:

    * brightness: ``img·f``;
    * contrast: ``m + (img − m)·f`` with ``m`` the mean gray level of the image;
    * saturation (RGB only): ``gray + (img − gray)·f`` with each pixel's gray level.

    The gray level of an RGB pixel is ``0.299 R + 0.587 G + 0.114 B``; a one-channel
    image is its own gray level. A zero argument draws nothing.

    Args:
        brightness, contrast, saturation: numbers >= 0.

    Shapes: (H, W, C) -> (H, W, C), C = 1 or 3 (3 for saturation).

    Example:
        >>> np.random.seed(0)
        >>> ColorJitter(0.4, 0.4, 0.4)(np.full((2, 2, 3), 0.5, np.float32)).shape
        (2, 2, 3)
    """

    def __init__(
        self, brightness: float = 0.0, contrast: float = 0.0, saturation: float = 0.0
    ) -> None:
        self.brightness = _check_number("ColorJitter", "brightness", brightness)
        self.contrast = _check_number("ColorJitter", "contrast", contrast)
        self.saturation = _check_number("ColorJitter", "saturation", saturation)

    def _gray(self, img: np.ndarray) -> np.ndarray:
        """(H, W, 1): each pixel's gray level."""
        if img.shape[2] == 1:
            return img
        if img.shape[2] != 3:
            raise ValueError(
                f"ColorJitter: contrast and saturation need an RGB (C=3) or a "
                f"one-channel image, got shape {img.shape}"
            )
        return (img @ _LUMA.astype(img.dtype))[..., None]

    def __call__(self, img: np.ndarray) -> np.ndarray:
        _check_image(self, img)
        if self.saturation and img.shape[2] != 3:
            raise ValueError(
                f"ColorJitter: saturation needs an RGB image (C=3), got shape {img.shape}"
            )
        if self.brightness:
            img = np.clip(img * self._factor(self.brightness), 0, 1)
        if self.contrast:
            mean = self._gray(img).mean()
            img = np.clip(mean + (img - mean) * self._factor(self.contrast), 0, 1)
        if self.saturation:
            gray = self._gray(img)
            img = np.clip(gray + (img - gray) * self._factor(self.saturation), 0, 1)
        return img

    @staticmethod
    def _factor(strength: float) -> float:
        return np.random.uniform(max(0.0, 1.0 - strength), 1.0 + strength)

    def __repr__(self) -> str:
        return (
            f"ColorJitter(brightness={self.brightness}, contrast={self.contrast}, "
            f"saturation={self.saturation})"
        )


class Normalize(Transform):
    """Standardise each channel: ``(img[..., c] − mean[c]) / std[c]``. No draws.

    Args:
        mean, std: one number per channel (or one number for all); every std > 0.

    Shapes: (H, W, C) -> (H, W, C), in the image's dtype.

    Example:
        >>> Normalize([0.5, 0.0], [0.5, 2.0])(np.ones((1, 1, 2)))[0, 0].tolist()
        [1.0, 0.5]
    """

    def __init__(self, mean, std) -> None:
        self.mean = self._values("mean", mean)
        self.std = self._values("std", std)
        if not (self.std > 0).all():
            raise ValueError(f"Normalize: every std must be > 0, got {std!r}")
        if self.mean.size != self.std.size and 1 not in (self.mean.size, self.std.size):
            raise ValueError(
                f"Normalize: mean has {self.mean.size} values and std "
                f"{self.std.size}; give one per channel (or one for all)"
            )

    @staticmethod
    def _values(name: str, values) -> np.ndarray:
        array = np.atleast_1d(np.asarray(values, dtype=object))
        if array.ndim != 1 or not all(
            isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)
            for v in array
        ):
            raise ValueError(
                f"Normalize: {name}={values!r} must be a finite number or a "
                f"sequence of them, one per channel"
            )
        return array.astype(np.float64)

    def __call__(self, img: np.ndarray) -> np.ndarray:
        _check_image(self, img)
        channels = max(self.mean.size, self.std.size)
        if channels not in (1, img.shape[2]):
            raise ValueError(
                f"Normalize: {channels} mean/std values for an image with "
                f"{img.shape[2]} channels, shape {img.shape}"
            )
        mean, std = self.mean.astype(img.dtype), self.std.astype(img.dtype)
        return ((img - mean) / std).astype(img.dtype)

    def __repr__(self) -> str:
        return f"Normalize(mean={self.mean.tolist()}, std={self.std.tolist()})"
