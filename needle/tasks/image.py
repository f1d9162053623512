"""Image classification for ``needle train``: the models, the datasets, their input layout.

Models (``--model``):

* ``mlp-resnet`` (default) — the course's :func:`~needle.apps.mlp_resnet.MLPResNet`
  on flattened images (784 features for 28×28, 3072 for CIFAR-10);
* ``cnn`` — :class:`~needle.apps.models_conv.SmallCNN` (``--width`` channels in its
  first block) on NCHW images;
* ``resnet9`` — the course's :class:`~needle.apps.models_conv.ResNet9` on NCHW images.

Datasets (``--dataset``): ``fashion-mnist`` and ``mnist`` (1×28×28, IDX files) and
``cifar10`` (3×32×32, the python-version batches). The convolutional models take the
images at their own size and channel count — grayscale 28×28 images are *not* padded
to 32×32 or repeated to three channels: SmallCNN sizes its head from the image size,
and ResNet9's strides take 28×28 down to 1×1 as they take 32×32 (``in_channels=1``).

The input layout is the task's business: the datasets give flat (IDX) or CHW (CIFAR)
samples, and every batch is reshaped to what the model takes, ``(batch, features)``
or ``(batch, C, H, W)``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

from needle import nn, optim
from needle.apps.mlp_resnet import BatchResult, MLPResNet, run_epoch
from needle.apps.models_conv import ResNet9, SmallCNN
from needle.data import (MNIST, CIFAR10Dataset, DataLoader, Dataset, DatasetNotFoundError,
                         FashionMNIST, RandomCrop, RandomFlipHorizontal, default_data_dir,
                         download_cifar10)
from needle.data.datasets.cifar10 import FOLDER as CIFAR10_FOLDER
from needle.tasks import first_n, standard_loader
from needle.training import ConfigError, TrainConfig, TrainingError

__all__ = ["MODELS", "DATASETS", "DEFAULTS", "ImageDataset", "ImageClassification", "create",
           "load_split", "cifar10_folder"]

NUM_CLASSES = 10


@dataclass(frozen=True)
class ImageDataset:
    """A dataset ``needle train`` knows: the shape of its images and how to load a split.

    Attributes:
        shape: ``(C, H, W)`` of one image.
        load: ``load(config, train, transforms)`` returns the split as a Dataset.
    """

    shape: tuple[int, int, int]
    load: Callable[[TrainConfig, bool, list | None], Dataset]


def _load_idx(cls: type) -> Callable[[TrainConfig, bool, list | None], Dataset]:
    """The loader of an IDX dataset class (MNIST, FashionMNIST)."""
    def load(config: TrainConfig, train: bool, transforms: list | None) -> Dataset:
        return cls(root=config.data_dir, train=train, transforms=transforms,
                   download=config.download)
    return load


def cifar10_folder(data_dir: str | None, download: bool) -> Path:
    """The ``cifar-10-batches-py`` folder for ``--data-dir`` (downloaded if asked).

    ``data_dir`` may be that folder or its parent; None means the cache folder
    (``$NEEDLE_DATA/cifar10`` or ``~/.cache/needle/cifar10``).

    Raises:
        needle.data.DatasetNotFoundError: no batches there and no ``download``; the
            message says where it looked and how to get them.
    """
    root = Path(data_dir) if data_dir is not None else default_data_dir("cifar10")
    if download:
        return download_cifar10(root)
    for folder in (root / CIFAR10_FOLDER, root):
        if (folder / "test_batch").is_file():
            return folder
    raise DatasetNotFoundError(
        f"CIFAR-10 not found: neither {root / CIFAR10_FOLDER} nor {root} holds the "
        f"python-version batches (data_batch_1 ... data_batch_5, test_batch). Get them "
        f"with --download (170 MB, into {root}), or point --data-dir at the "
        f"{CIFAR10_FOLDER} folder of an unpacked cifar-10-python.tar.gz")


def _load_cifar10(config: TrainConfig, train: bool, transforms: list | None) -> Dataset:
    """CIFAR-10's training or test batches (see :func:`cifar10_folder`)."""
    return CIFAR10Dataset(cifar10_folder(config.data_dir, config.download), train=train,
                          transforms=transforms)


#: Dataset name (as on the command line) -> its image shape and loader.
DATASETS: dict[str, ImageDataset] = {
    "fashion-mnist": ImageDataset((1, 28, 28), _load_idx(FashionMNIST)),
    "mnist": ImageDataset((1, 28, 28), _load_idx(MNIST)),
    "cifar10": ImageDataset((3, 32, 32), _load_cifar10),
}


def _mlp_resnet(config: TrainConfig, shape: tuple[int, int, int]) -> nn.Module:
    return MLPResNet(math.prod(shape), config.hidden_dim, config.num_blocks, NUM_CLASSES,
                     drop_prob=config.drop_prob)


def _cnn(config: TrainConfig, shape: tuple[int, int, int]) -> nn.Module:
    return SmallCNN(shape[0], shape[1:], config.width, NUM_CLASSES)


def _resnet9(config: TrainConfig, shape: tuple[int, int, int]) -> nn.Module:
    return ResNet9(in_channels=shape[0])


#: Model name (as on the command line) -> ``build(config, image shape)``.
MODELS: dict[str, Callable[[TrainConfig, tuple[int, int, int]], nn.Module]] = {
    "mlp-resnet": _mlp_resnet,
    "cnn": _cnn,
    "resnet9": _resnet9,
}

#: The image task's defaults are TrainConfig's own (the course's MLP ResNet recipe).
DEFAULTS: dict[str, Any] = {}

#: The models that take flat feature vectors; the others take NCHW images.
FLAT_MODELS = frozenset({"mlp-resnet"})

_DESCRIPTIONS: dict[str, Callable[[TrainConfig], str]] = {
    "mlp-resnet": lambda c: f"MLPResNet(hidden {c.hidden_dim}, {c.num_blocks} blocks)",
    "cnn": lambda c: f"SmallCNN(width {c.width})",
    "resnet9": lambda c: "ResNet9",
}


def load_split(config: TrainConfig, train: bool) -> Dataset:
    """The training (augmented if asked) or test set of ``config.dataset``, limited.

    Raises:
        needle.data.DatasetNotFoundError: the files are missing (the message says how
            to get them).
    """
    transforms = None
    if train and config.augment:
        transforms = [RandomFlipHorizontal(), RandomCrop(config.crop_padding)]
    dataset = DATASETS[config.dataset].load(config, train, transforms)
    return first_n(dataset, config.limit_train if train else config.limit_test)


class ImageClassification:
    """The image-classification task of one run (see :mod:`needle.tasks`).

    Example:
        >>> from needle.training import TrainConfig
        >>> task = ImageClassification(TrainConfig(model="cnn", dataset="cifar10"))
        >>> task.input_shape, task.describe()
        ((3, 32, 32), 'SmallCNN(width 32) on cifar10')
    """

    #: The loss is per image, not per token: no perplexity.
    perplexity = False

    def __init__(self, config: TrainConfig) -> None:
        if config.dataset not in DATASETS:
            raise TrainingError(f"unknown dataset {config.dataset!r} for --model "
                                f"{config.model}; use one of {', '.join(DATASETS)}")
        check_config(config)
        self.config = config
        self.image_shape = DATASETS[config.dataset].shape
        #: The shape of one sample as the model takes it.
        self.input_shape: tuple[int, ...] = (
            (math.prod(self.image_shape),) if config.model in FLAT_MODELS else self.image_shape)

    def dataset(self, train: bool) -> Dataset:
        """The training set (augmented if asked) or the test set."""
        return load_split(self.config, train)

    def build_model(self) -> nn.Module:
        """``config.model`` for this dataset's images (draws its weights)."""
        return MODELS[self.config.model](self.config, self.image_shape)

    def run_epoch(self, loader: Iterable, model: nn.Module, opt: optim.Optimizer | None = None,
                  on_batch: Callable[[BatchResult], None] | None = None,
                  carry: Any = None) -> tuple[float, float]:
        """:func:`~needle.apps.mlp_resnet.run_epoch` with batches in the model's layout.

        Images are independent samples: a pass carries nothing from batch to batch, so
        ``carry`` (always None here) is not used.
        """
        return run_epoch(loader, model, opt, on_batch=on_batch, input_shape=self.input_shape)

    def loader(self, dataset: Dataset, train: bool) -> DataLoader:
        """:func:`~needle.tasks.standard_loader`: shuffled batches for training."""
        return standard_loader(dataset, self.config, train)

    def state(self) -> dict:
        """Nothing: the weights and the config say everything."""
        return {}

    def describe(self) -> str:
        """E.g. ``SmallCNN(width 32) on fashion-mnist``."""
        return f"{_DESCRIPTIONS[self.config.model](self.config)} on {self.config.dataset}"

    def check_eval_data(self, saved: TrainConfig, state: dict) -> None:
        """Refuse data whose images differ in shape from those the model was trained on."""
        trained = DATASETS[saved.dataset].shape
        if trained != self.image_shape:
            raise TrainingError(
                f"the model ({saved.model}) was trained on {saved.dataset} images of shape "
                f"{_shape_text(trained)}; {self.config.dataset} images are "
                f"{_shape_text(self.image_shape)}. Evaluate it on a dataset with "
                f"{_shape_text(trained)} images ({', '.join(_same_shape(trained))})")


def _shape_text(shape: tuple[int, ...]) -> str:
    """``1×28×28``."""
    return "×".join(map(str, shape))


def _same_shape(shape: tuple[int, int, int]) -> list[str]:
    """The dataset names whose images have ``shape``."""
    return [name for name, data in DATASETS.items() if data.shape == shape]


def check_config(config: TrainConfig) -> None:
    """Raise ConfigError for sizes that make a layer 0 wide or a crop blank.

    The MLP ResNet's residual blocks are ``--hidden-dim // 2`` wide inside, so it needs
    ``--hidden-dim`` 2 or more; a crop shifted by a whole image is blank, so
    ``--crop-padding`` stays below the images' height and width.
    """
    if config.model == "mlp-resnet" and config.hidden_dim < 2:
        raise ConfigError(f"--hidden-dim {config.hidden_dim} makes the MLP ResNet's residual "
                          f"blocks 0 wide (they are --hidden-dim // 2 wide inside); use "
                          f"--hidden-dim 2 or more")
    if config.dataset in DATASETS:
        side = min(DATASETS[config.dataset].shape[1:])
        if config.crop_padding >= side:
            raise ConfigError(f"--crop-padding {config.crop_padding} shifts {config.dataset}'s "
                              f"{side}-pixel images out of the crop entirely; use at most "
                              f"{side - 1}")


def create(config: TrainConfig) -> ImageClassification:
    """The task for ``config`` (the entry point :func:`needle.tasks.create` calls)."""
    return ImageClassification(config)
