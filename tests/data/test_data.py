"""Datasets, transforms and the DataLoader (needle.data) on small IDX files and arrays."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

import needle
from needle.data import (
    MNIST,
    DataLoader,
    Dataset,
    DatasetNotFoundError,
    FashionMNIST,
    MNISTDataset,
    NDArrayDataset,
    RandomCrop,
    RandomFlipHorizontal,
    Transform,
    read_idx,
    stack_items,
    write_idx,
)
from needle.data.datasets import mnist_dataset

N = 23


def write_split(folder: Path, prefix: str, n: int = N, gz: bool = True, seed: int = 0) -> None:
    """Write ``{prefix}-images-idx3-ubyte`` and ``{prefix}-labels-idx1-ubyte`` into folder."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if gz else ""
    write_idx(
        folder / f"{prefix}-images-idx3-ubyte{suffix}",
        rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8),
    )
    write_idx(
        folder / f"{prefix}-labels-idx1-ubyte{suffix}", rng.integers(0, 10, size=n, dtype=np.uint8)
    )


@pytest.fixture(params=["gz", "raw"])
def files(tmp_path, request) -> tuple[Path, Path]:
    gz = request.param == "gz"
    write_split(tmp_path, "train", gz=gz)
    suffix = ".gz" if gz else ""
    return (
        tmp_path / f"train-images-idx3-ubyte{suffix}",
        tmp_path / f"train-labels-idx1-ubyte{suffix}",
    )


@pytest.fixture
def raw_images(files) -> np.ndarray:
    return read_idx(files[0])


def rng_state() -> tuple:
    """A comparable snapshot of NumPy's global generator."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return name, keys.tobytes(), pos, has_gauss, cached


# ----- MNISTDataset ----------------------------------------------------------------------


def test_mnist_dataset_items(files, raw_images):
    ds = MNISTDataset(*files)
    labels = read_idx(files[1])
    assert len(ds) == N
    image, label = ds[3]
    assert image.shape == (784,) and image.dtype == np.float32
    np.testing.assert_array_equal(image, raw_images[3].reshape(-1).astype(np.float32) / 255)
    assert label == labels[3] and label.dtype == np.uint8
    np.testing.assert_array_equal(ds[-1][0], ds[N - 1][0])
    assert 0.0 <= ds.images.min() and ds.images.max() <= 1.0


def test_mnist_dataset_slices_and_arrays(files):
    ds = MNISTDataset(*files)
    images, labels = ds[2:7]
    assert images.shape == (5, 784) and labels.shape == (5,) and labels.dtype == np.uint8
    np.testing.assert_array_equal(images, ds.images[2:7])
    for index in (np.array([5, 0, -1]), [5, 0, -1], range(3)):
        images, labels = ds[index]
        expected = np.arange(N)[np.asarray(index)]
        np.testing.assert_array_equal(images, ds.images[expected])
        np.testing.assert_array_equal(labels, ds.labels[expected])
    mask = np.arange(N) % 2 == 0
    np.testing.assert_array_equal(ds[mask][1], ds.labels[mask])


@pytest.mark.parametrize("index", [N, -N - 1, np.array([0, N + 4]), [-N - 2]])
def test_mnist_dataset_out_of_range(files, index):
    ds = MNISTDataset(*files)
    message = rf"MNISTDataset: index -?\d+ is out of range for length {N}"
    with pytest.raises(IndexError, match=message):
        ds[index]


@pytest.mark.parametrize("index", [1.0, "3", None, np.array([[0, 1]]), np.array([0.5])])
def test_mnist_dataset_bad_index_type(files, index):
    with pytest.raises(TypeError, match="MNISTDataset"):
        MNISTDataset(*files)[index]


def test_stored_data_is_read_only(files):
    ds = MNISTDataset(*files)
    image, _ = ds[0]
    with pytest.raises(ValueError, match="read-only"):
        image[0] = 1.0


class ZeroInPlace(Transform):
    """A careless transform that writes into its input."""

    def __call__(self, img):
        img[...] = 0
        return img


def test_transforms_never_modify_stored_data(files):
    np.random.seed(3)
    ds = MNISTDataset(*files, transforms=[RandomCrop(4), RandomFlipHorizontal(1.0), ZeroInPlace()])
    before = ds.images.copy()
    assert not ds[0][0].any()
    assert not ds[np.arange(N)][0].any()
    for _ in DataLoader(ds, batch_size=5, shuffle=True):
        pass
    np.testing.assert_array_equal(ds.images, before)


def expected_crop_flip(image28: np.ndarray, padding: int, p: float) -> np.ndarray:
    """The documented draws, made here by hand: randint(size=2), then rand()."""
    shift_x, shift_y = np.random.randint(low=-padding, high=padding + 1, size=2)
    padded = np.zeros((28 + 2 * padding, 28 + 2 * padding, 1), np.float32)
    padded[padding : padding + 28, padding : padding + 28] = image28
    out = padded[
        padding + shift_x : padding + shift_x + 28, padding + shift_y : padding + shift_y + 28
    ]
    if np.random.rand() < p:
        out = out[:, ::-1, :]
    return out.reshape(-1)


def test_transforms_under_fixed_seed(files):
    ds = MNISTDataset(*files, transforms=[RandomCrop(5), RandomFlipHorizontal(0.4)])
    np.random.seed(7)
    got = [ds[i][0] for i in range(N)] + list(ds[np.array([4, 1, 4])][0])
    np.random.seed(7)
    order = [*range(N), 4, 1, 4]
    want = [expected_crop_flip(ds.images[i].reshape(28, 28, 1), 5, 0.4) for i in order]
    for g, w in zip(got, want):
        assert g.shape == (784,)
        np.testing.assert_array_equal(g, w)


# ----- transforms ------------------------------------------------------------------------


def test_flip_one_draw_per_call():
    img = np.arange(2 * 3 * 2, dtype=np.float32).reshape(2, 3, 2)
    np.random.seed(0)
    out = RandomFlipHorizontal(p=0.5)(img)
    np.random.seed(0)
    flip = np.random.rand() < 0.5
    state = rng_state()
    np.testing.assert_array_equal(out, img[:, ::-1, :] if flip else img)
    np.random.seed(0)
    RandomFlipHorizontal(p=0.5)(img)
    assert rng_state() == state
    np.testing.assert_array_equal(RandomFlipHorizontal(1.0)(img), img[:, ::-1, :])
    np.testing.assert_array_equal(RandomFlipHorizontal(0.0)(img), img)


def test_crop_matches_definition():
    img = np.random.default_rng(0).random((6, 5, 2))
    for seed in range(20):
        np.random.seed(seed)
        out = RandomCrop(padding=2)(img)
        np.random.seed(seed)
        sx, sy = np.random.randint(low=-2, high=3, size=2)
        padded = np.pad(img, ((2, 2), (2, 2), (0, 0)))
        np.testing.assert_array_equal(out, padded[2 + sx : 2 + sx + 6, 2 + sy : 2 + sy + 5, :])
    np.testing.assert_array_equal(RandomCrop(padding=0)(img), img)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: RandomFlipHorizontal(p=1.5), "p=1.5"),
        (lambda: RandomCrop(padding=-1), "padding=-1"),
        (lambda: RandomCrop(padding=2.0), "padding=2.0"),
    ],
)
def test_transform_argument_errors(make, message):
    with pytest.raises(ValueError, match=message):
        make()


@pytest.mark.parametrize("transform", [RandomFlipHorizontal(), RandomCrop()])
def test_transforms_need_hwc(transform):
    with pytest.raises(ValueError, match=rf"{type(transform).__name__}.*\(784,\)"):
        transform(np.zeros(784))


# ----- Dataset base ----------------------------------------------------------------------


def test_dataset_is_abstract():
    with pytest.raises(NotImplementedError):
        len(Dataset())
    with pytest.raises(NotImplementedError):
        Dataset()[0]
    with pytest.raises(NotImplementedError):
        Transform()(np.zeros((1, 1, 1)))


def test_apply_transforms_in_order():
    ds = Dataset(transforms=[lambda x: x + 1, lambda x: x * 10])
    assert ds.apply_transforms(2) == 30
    assert Dataset().apply_transforms(2) == 2
    assert Dataset(transforms=lambda x: -x).apply_transforms(2) == -2
    with pytest.raises(TypeError, match=r"transforms\[1\] is a int"):
        Dataset(transforms=[abs, 3])


def test_stack_items_errors_and_single_fields():
    (out,) = stack_items([np.zeros(2), np.ones(2)], np.array([1, 0]))
    np.testing.assert_array_equal(out, [[1, 1], [0, 0]])
    with pytest.raises(ValueError, match="sample 1 has 1 fields but sample 0 has 2"):
        stack_items([(1, 2), (3,)], np.array([0, 1]))


# ----- NDArrayDataset --------------------------------------------------------------------


def test_ndarray_dataset():
    x, y = np.arange(12.0).reshape(6, 2), np.arange(6) * 10
    ds = NDArrayDataset(x, y)
    assert len(ds) == 6
    xi, yi = ds[-2]
    np.testing.assert_array_equal(xi, x[4])
    assert yi == 40
    xb, yb = ds[np.array([3, 1])]
    np.testing.assert_array_equal(xb, x[[3, 1]])
    np.testing.assert_array_equal(yb, y[[3, 1]])
    np.testing.assert_array_equal(ds[1:3][0], x[1:3])
    assert NDArrayDataset([1, 2, 3])[1] == (2,)
    with pytest.raises(IndexError, match="index 6 is out of range for length 6"):
        ds[6]


@pytest.mark.parametrize(
    "arrays, message",
    [
        ((np.zeros((3, 2)), np.zeros(4)), r"same first dimension.*\(3, 2\).*\(4,\)"),
        ((), "at least one array"),
        ((np.float64(1.0),), "need a first dimension"),
    ],
)
def test_ndarray_dataset_errors(arrays, message):
    with pytest.raises(ValueError, match=message):
        NDArrayDataset(*arrays)


# ----- DataLoader ------------------------------------------------------------------------


def loader_labels(loader) -> list[list[int]]:
    return [batch[1].numpy().tolist() for batch in loader]


def test_loader_order_without_shuffle(files):
    ds = MNISTDataset(*files)
    state = rng_state()
    batches = list(DataLoader(ds, batch_size=5))
    assert rng_state() == state  # no random draw without shuffle
    assert [b[0].shape for b in batches] == [(5, 784)] * 4 + [(3, 784)]
    np.testing.assert_array_equal(np.concatenate([b[0].numpy() for b in batches]), ds.images)
    np.testing.assert_array_equal(np.concatenate([b[1].numpy() for b in batches]), ds.labels)


def test_loader_shuffle_draws_one_permutation_per_iter():
    ds = NDArrayDataset(np.arange(N))
    loader = DataLoader(ds, batch_size=4, shuffle=True)
    np.random.seed(11)
    first = np.concatenate([b[0].numpy() for b in loader])
    second = np.concatenate([b[0].numpy() for b in loader])
    after = rng_state()
    np.random.seed(11)
    np.testing.assert_array_equal(first, np.random.permutation(N))
    np.testing.assert_array_equal(second, np.random.permutation(N))
    assert rng_state() == after


def test_order_drawn_at_iter_call():
    loader = DataLoader(NDArrayDataset(np.arange(6)), batch_size=6, shuffle=True)
    np.random.seed(1)
    iterator = iter(loader)
    np.random.seed(99)  # draws after iter() do not change this pass
    (batch,) = next(iterator)
    np.random.seed(1)
    np.testing.assert_array_equal(batch.numpy(), np.random.permutation(6))


@pytest.mark.parametrize(
    "batch_size, drop_last, sizes",
    [
        (5, False, [5, 5, 5, 5, 3]),
        (5, True, [5, 5, 5, 5]),
        (23, True, [23]),
        (1, False, [1] * 23),
        (30, False, [23]),
        (30, True, []),
    ],
)
def test_loader_batches_and_len(batch_size, drop_last, sizes):
    loader = DataLoader(NDArrayDataset(np.arange(N)), batch_size, drop_last=drop_last)
    assert [b[0].shape[0] for b in loader] == sizes
    assert len(loader) == len(sizes)


def test_loader_yields_tuples_of_constant_tensors(files):
    batch = next(iter(DataLoader(MNISTDataset(*files), batch_size=4)))
    assert isinstance(batch, tuple) and len(batch) == 2
    assert all(isinstance(t, needle.Tensor) and not t.requires_grad for t in batch)
    # Integer fields (the labels) are int64 on both backends, as PyTorch's class targets.
    assert str(batch[0].dtype) == "float32" and str(batch[1].dtype) == "int64"


@pytest.mark.parametrize("batch_size", [0, -2, 1.5, True, "4", None])
def test_loader_rejects_bad_batch_size(batch_size):
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        DataLoader(NDArrayDataset(np.arange(3)), batch_size=batch_size)


def test_loader_rejects_empty_dataset():
    with pytest.raises(ValueError, match="NDArrayDataset is empty"):
        DataLoader(NDArrayDataset(np.zeros((0, 3))), batch_size=2)


class ItemsOnly(Dataset):
    """Wraps a dataset through ``__getitem__``/``__len__`` only: the item-by-item path."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner
        self.calls = 0

    def __len__(self):
        return len(self.inner)

    def __getitem__(self, i):
        self.calls += 1
        return self.inner[i]


class CountingMNIST(MNISTDataset):
    """Counts get_batch calls to prove the fast path is taken."""

    batch_calls = 0

    def get_batch(self, indices):
        self.batch_calls += 1
        return super().get_batch(indices)


@pytest.mark.parametrize("with_transforms", [False, True])
def test_fast_path_equals_item_path(files, with_transforms):
    transforms = [RandomCrop(3), RandomFlipHorizontal()] if with_transforms else None
    fast = CountingMNIST(*files, transforms=transforms)
    slow = ItemsOnly(MNISTDataset(*files, transforms=transforms))
    results = []
    for ds in (fast, slow):
        np.random.seed(5)
        batches = [[t.numpy() for t in b] for b in DataLoader(ds, batch_size=6, shuffle=True)]
        results.append((batches, rng_state()))
    (fast_batches, fast_state), (slow_batches, slow_state) = results
    assert fast_state == slow_state
    for fb, sb in zip(fast_batches, slow_batches, strict=True):
        for f, s in zip(fb, sb, strict=True):
            assert f.dtype == s.dtype and f.shape == s.shape
            np.testing.assert_array_equal(f, s)
    assert fast.batch_calls == 4 and slow.calls == N


def test_overridden_getitem_is_honoured(files):
    class Doubled(MNISTDataset):
        def __getitem__(self, index):
            image, label = super().__getitem__(index)
            return image * 2, label

    ds = Doubled(*files)
    ((images, _),) = [[t.numpy() for t in b] for b in DataLoader(ds, batch_size=N)]
    np.testing.assert_array_equal(images, ds.images * 2)


def test_loader_accepts_plain_sequences():
    loader = DataLoader([(np.float32(i), i) for i in range(5)], batch_size=2)
    assert [b[1].numpy().tolist() for b in loader] == [[0, 1], [2, 3], [4]]


# ----- MNIST / FashionMNIST lookup -------------------------------------------------------


@pytest.fixture
def no_system_data(tmp_path, monkeypatch) -> Path:
    """Point the system folder and the cache at empty places; return the cache root."""
    monkeypatch.setattr(mnist_dataset, "SYSTEM_FASHION_MNIST_DIR", str(tmp_path / "system"))
    monkeypatch.setenv("NEEDLE_DATA", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_named_datasets_search_root_then_cache(tmp_path, no_system_data):
    write_split(tmp_path / "root", "t10k", n=4, gz=False)
    write_split(no_system_data / "mnist", "train", n=6)
    write_split(no_system_data / "fashion-mnist", "train", n=7)
    assert len(MNIST(root=tmp_path / "root", train=False)) == 4
    assert len(MNIST(root=tmp_path / "root", train=True)) == 6  # not in root: cache
    assert len(MNIST()) == 6
    assert len(FashionMNIST(root=tmp_path / "elsewhere")) == 7
    assert len(FashionMNIST(root=tmp_path / "root", train=False)) == 4


def test_named_datasets_validate_labels(tmp_path, no_system_data):
    write_split(tmp_path, "train", n=3)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.array([0, 10, 1], np.uint8))
    with pytest.raises(ValueError, match="label 10 at index 1 is outside 0..9"):
        MNIST(root=tmp_path)


def test_fashion_mnist_not_found_says_how_to_get_it(tmp_path, no_system_data):
    with pytest.raises(DatasetNotFoundError) as info:
        FashionMNIST(root=tmp_path / "mine", train=False)
    message = str(info.value)
    assert isinstance(info.value, FileNotFoundError)
    for text in (
        str(tmp_path / "mine"),
        str(tmp_path / "system"),
        "t10k-images-idx3-ubyte",
        "apt-get install dataset-fashion-mnist",
        "download=True",
        "--download",
        "root=",
        "--data-dir",
        str(no_system_data / "fashion-mnist"),
    ):
        assert text in message, f"{text!r} not in {message!r}"


def test_mnist_not_found_and_unverified_download_refused(tmp_path, no_system_data, monkeypatch):
    with pytest.raises(DatasetNotFoundError, match="download=True") as info:
        MNIST(root=tmp_path)
    assert "missing train-images-idx3-ubyte[.gz]" in str(info.value)
    from needle.data.datasets import download

    monkeypatch.setattr(download, "MNIST_SHA256", dict.fromkeys(download.MNIST_SHA256))
    with pytest.raises(ValueError, match="verify=False"):
        MNIST(root=tmp_path, download=True)
    assert not list(tmp_path.iterdir())  # nothing fetched, nothing written


# ----- the real Fashion-MNIST (Debian package dataset-fashion-mnist) ---------------------

SYSTEM_DIR = mnist_dataset.SYSTEM_FASHION_MNIST_DIR
has_fashion = all(
    os.path.exists(os.path.join(SYSTEM_DIR, f"{p}-{k}.gz"))
    for p in ("train", "t10k")
    for k in ("images-idx3-ubyte", "labels-idx1-ubyte")
)


@pytest.mark.skipif(
    not has_fashion,
    reason=f"Fashion-MNIST not in {SYSTEM_DIR} (apt-get install dataset-fashion-mnist)",
)
def test_real_fashion_mnist():
    train, test = FashionMNIST(train=True), FashionMNIST(train=False)
    assert (len(train), len(test)) == (60000, 10000)
    image, label = train[0]
    assert image.shape == (784,) and image.dtype == np.float32
    for ds in (train, test):
        assert ds.images.min() >= 0.0 and ds.images.max() <= 1.0
        assert ds.labels.dtype == np.uint8 and ds.labels.max() <= 9
    np.testing.assert_array_equal(np.bincount(train.labels), [6000] * 10)
