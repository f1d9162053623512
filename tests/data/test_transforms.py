"""The augmentations RandomResizedCrop, RandomRotation, ColorJitter and Normalize: their
documented draws (made here by hand), hand-computed results, PyTorch's bilinear resize as a
second oracle, dtypes, and bad arguments. (RandomCrop and RandomFlipHorizontal: test_data.py.)
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from needle.data import (
    ColorJitter,
    Dataset,
    Normalize,
    RandomResizedCrop,
    RandomRotation,
)


def _image(h: int, w: int, c: int = 3) -> np.ndarray:
    return np.random.default_rng(0).random((h, w, c), dtype=np.float32)


# ----- RandomResizedCrop --------------------------------------------------------------------


def test_resized_crop_makes_the_documented_draws():
    img = _image(9, 7)
    np.random.seed(5)
    out = RandomResizedCrop((4, 5), scale=(0.2, 0.6), interpolation="nearest")(img)
    after = np.random.rand()
    np.random.seed(5)
    for _ in range(10):  # by hand, as the docstring says
        area = 63 * np.random.uniform(0.2, 0.6)
        aspect = math.exp(np.random.uniform(math.log(3 / 4), math.log(4 / 3)))
        w, h = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
        if 0 < w <= 7 and 0 < h <= 9:
            top, left = np.random.randint(0, 9 - h + 1), np.random.randint(0, 7 - w + 1)
            break
    assert np.random.rand() == after
    rows = np.clip(np.rint((np.arange(4) + 0.5) * h / 4 - 0.5), 0, h - 1).astype(int)
    cols = np.clip(np.rint((np.arange(5) + 0.5) * w / 5 - 0.5), 0, w - 1).astype(int)
    np.testing.assert_array_equal(out, img[top : top + h, left : left + w][rows][:, cols])
    assert out.dtype == np.float32


def test_resized_crop_of_the_whole_image_at_its_size_is_the_image():
    img = _image(6, 6)
    np.random.seed(0)
    out = RandomResizedCrop(6, scale=(1.0, 1.0), ratio=(1.0, 1.0))(img)
    np.testing.assert_allclose(out, img, rtol=1e-6)


def test_resized_crop_falls_back_to_the_centre_crop():
    """No 10 attempts fit a ratio in [2, 3] in a square: the centre crop of ratio 2, after
    exactly 20 draws."""
    img = _image(6, 6)
    np.random.seed(1)
    out = RandomResizedCrop((3, 6), scale=(1.0, 1.0), ratio=(2.0, 3.0))(img)
    after = np.random.rand()
    np.random.seed(1)
    np.random.uniform(size=20)
    assert np.random.rand() == after
    np.testing.assert_allclose(out, img[1:4], rtol=1e-6)


def test_bilinear_resize_by_hand():
    """A row [0, 1] at 4 pixels: centres at -0.25, 0.25, 0.75, 1.25, clamped to the image."""
    img = np.array([[[0.0], [1.0]]], dtype=np.float32)
    out = RandomResizedCrop((1, 4), scale=(1.0, 1.0), ratio=(2.0, 2.0))(img)
    np.testing.assert_allclose(out[0, :, 0], [0.0, 0.25, 0.75, 1.0])


def test_bilinear_resize_agrees_with_torch(torch):
    img = _image(5, 7)
    np.random.seed(0)
    out = RandomResizedCrop((8, 3), scale=(1.0, 1.0), ratio=(7 / 5, 7 / 5))(img)  # all of it
    ref = torch.nn.functional.interpolate(
        torch.tensor(img.transpose(2, 0, 1)[None]), (8, 3), mode="bilinear", align_corners=False
    )
    np.testing.assert_allclose(out, ref[0].numpy().transpose(1, 2, 0), atol=1e-6)


# ----- RandomRotation -----------------------------------------------------------------------


@pytest.mark.parametrize("interpolation", ["nearest", "bilinear"])
def test_rotation_by_90_degrees_is_rot90(interpolation):
    img = _image(4, 4, 2)
    out = RandomRotation((90, 90), interpolation=interpolation)(img)
    np.testing.assert_allclose(out, np.rot90(img), atol=1e-6)  # counter-clockwise
    assert out.dtype == np.float32


def test_rotation_draws_one_angle():
    img = _image(5, 5)
    np.random.seed(2)
    out = RandomRotation(30)(img)
    np.random.seed(2)
    angle = np.random.uniform(-30, 30)
    np.testing.assert_array_equal(out, RandomRotation((angle, angle))(img))
    np.testing.assert_array_equal(RandomRotation(0)(img), img)


def test_rotation_fills_the_corners_it_brings_in():
    img = np.ones((9, 9, 1), dtype=np.float32)
    out = RandomRotation((45, 45), fill=-1.0)(img)[..., 0]
    assert out[4, 4] == 1.0  # the centre stays
    assert out[0, 0] == -1.0  # a corner comes from more than a pixel outside the image
    assert -1.0 < out[1, 1] < 1.0  # within a pixel of the border: a blend
    assert (out >= -1.0).all() and (out <= 1.0).all()


# ----- ColorJitter --------------------------------------------------------------------------


def test_color_jitter_by_hand():
    img = _image(3, 4)
    np.random.seed(3)
    out = ColorJitter(brightness=0.5, contrast=0.3, saturation=0.8)(img)
    np.random.seed(3)
    luma = np.array([0.299, 0.587, 0.114])
    expected = np.clip(img * np.random.uniform(0.5, 1.5), 0, 1)
    mean = (expected @ luma).mean()
    expected = np.clip(mean + (expected - mean) * np.random.uniform(0.7, 1.3), 0, 1)
    gray = (expected @ luma)[..., None]
    expected = np.clip(gray + (expected - gray) * np.random.uniform(0.2, 1.8), 0, 1)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
    assert out.dtype == np.float32


def test_color_jitter_draws_only_for_its_nonzero_arguments():
    img = _image(2, 2, 1)
    np.random.seed(4)
    out = ColorJitter(contrast=0.5)(img)
    np.random.seed(4)
    factor = np.random.uniform(0.5, 1.5)
    np.testing.assert_allclose(
        out, np.clip(img.mean() + (img - img.mean()) * factor, 0, 1), rtol=1e-6
    )
    np.testing.assert_array_equal(ColorJitter()(img), img)


# ----- Normalize ----------------------------------------------------------------------------


def test_normalize_each_channel():
    img = _image(2, 3)
    out = Normalize([0.1, 0.2, 0.3], [0.5, 1.0, 2.0])(img)
    np.testing.assert_allclose(out, (img - [0.1, 0.2, 0.3]) / [0.5, 1.0, 2.0], rtol=1e-6)
    assert out.dtype == np.float32
    np.testing.assert_allclose(Normalize(0.5, 0.25)(img), (img - 0.5) / 0.25, rtol=1e-6)


class Images(Dataset):
    def __init__(self, transforms):
        super().__init__(transforms)
        self.images = np.random.default_rng(1).random((4, 8, 8, 3), dtype=np.float32)

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.apply_transforms(self.images[i]), i


def test_transforms_compose_in_a_dataset():
    augment = [
        RandomResizedCrop(6),
        RandomRotation(10),
        ColorJitter(0.2, 0.2, 0.2),
        Normalize([0.5] * 3, [0.25] * 3),
    ]
    np.random.seed(0)
    x, _ = Images(augment)[1]
    assert x.shape == (6, 6, 3) and x.dtype == np.float32 and np.isfinite(x).all()


# ----- bad arguments ------------------------------------------------------------------------


ERRORS = [
    (lambda: RandomResizedCrop(0), "size=0"),
    (lambda: RandomResizedCrop((4, 4, 4)), r"size=\(4, 4, 4\)"),
    (lambda: RandomResizedCrop(4, scale=(0.6, 0.2)), r"scale=\(0.6, 0.2\).*ordered"),
    (lambda: RandomResizedCrop(4, scale=(0.5, 1.5)), r"scale=\(0.5, 1.5\).*\(0, 1\]"),
    (lambda: RandomResizedCrop(4, ratio=(0.0, 1.0)), r"ratio=\(0.0, 1.0\).*> 0"),
    (lambda: RandomResizedCrop(4, interpolation="cubic"), "interpolation='cubic'"),
    (lambda: RandomRotation(-5), "degrees=-5"),
    (lambda: RandomRotation((10, 5)), r"degrees=\(10, 5\).*ordered"),
    (lambda: RandomRotation(5, fill="black"), "fill='black'"),
    (lambda: ColorJitter(brightness=-0.1), "brightness=-0.1"),
    (lambda: Normalize([0.5, 0.5], [0.2, 0.0]), "every std must be > 0"),
    (lambda: Normalize([0.5, 0.5], [0.2, 0.2, 0.2]), "mean has 2 values and std 3"),
    (lambda: Normalize("0.5", 1.0), "mean='0.5'"),
]


@pytest.mark.parametrize("make, message", ERRORS, ids=[e[1] for e in ERRORS])
def test_argument_errors(make, message):
    with pytest.raises(ValueError, match=message):
        make()


@pytest.mark.parametrize(
    "call, message",
    [
        (
            lambda: ColorJitter(saturation=0.5)(_image(2, 2, 1)),
            r"saturation needs an RGB.*\(2, 2, 1\)",
        ),
        (
            lambda: ColorJitter(contrast=0.5)(_image(2, 2, 2)),
            r"RGB \(C=3\) or a one-channel.*\(2, 2, 2\)",
        ),
        (
            lambda: Normalize([0.5] * 3, [0.2] * 3)(_image(2, 2, 1)),
            r"3 mean/std values.*1 channels",
        ),
        (lambda: RandomRotation(5)(np.zeros(784)), r"RandomRotation.*\(784,\)"),
        (lambda: RandomResizedCrop(4)(np.zeros((4, 4))), r"RandomResizedCrop.*\(4, 4\)"),
    ],
)
def test_image_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call()
