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
or ``(batch, C, H, W)``, by the task's objective, :class:`Classification` (the hook
:func:`~needle.loop.run_batches` calls for every batch; the course's ``epoch`` and
``epoch_general_cifar10`` use it too).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from needle import nn
from needle.apps.models_conv import ResNet9, SmallCNN
from needle.apps.models_mlp import MLPResNet
from needle.autograd import Tensor
from needle.data import (
    MNIST,
    CIFAR10Dataset,
    DataLoader,
    Dataset,
    DatasetNotFoundError,
    FashionMNIST,
    RandomCrop,
    RandomFlipHorizontal,
    default_data_dir,
    download_cifar10,
)
from needle.data.datasets.cifar10 import FOLDER as CIFAR10_FOLDER
from needle.loop import Forward
from needle.tasks import Task, first_n, standard_loader
from needle.training_errors import ConfigError, TrainingError

if TYPE_CHECKING:
    from needle.options import TrainConfig

__all__ = [
    "MODELS",
    "DATASETS",
    "DEFAULTS",
    "FLAT",
    "Classification",
    "ImageDataset",
    "ImageClassification",
    "create",
    "load_split",
    "cifar10_folder",
]

NUM_CLASSES = 10

#: :class:`Classification`'s ``input_shape`` that flattens each sample to one vector.
FLAT: tuple[int, ...] = (-1,)


class Classification:
    """Image classification's objective: a batch is ``(X, y)``, images ``(batch, ...)`` and
    integer labels ``(batch,)``; the loss is the mean softmax loss of ``model(X)``'s
    logits ``(batch, classes)``, an error a sample whose arg-max logit is not its label.
    Samples are independent: nothing is carried from batch to batch.

    Args:
        input_shape: the shape of one sample as the model takes it: ``(C, H, W)`` for a
            convolutional network, ``(features,)``, :data:`FLAT` (each sample flattened),
            or None (the batch as it comes). Batches of another shape are reshaped.
        loss_fn: the loss of ``(logits, y)`` (default :class:`~needle.nn.SoftmaxLoss`).
        device: move each batch to this device first (None: leave it where it is).

    Example:
        >>> import numpy as np
        >>> forward = Classification(FLAT)(nn.Linear(4, 3), (Tensor(np.ones((2, 2, 2),
        ...     dtype="float32")), Tensor(np.array([0, 1]))), None)
        >>> forward.size, tuple(forward.loss.shape), 0 <= forward.errors <= 2
        (2, (), True)
    """

    def __init__(
        self,
        input_shape: tuple[int, ...] | None = None,
        loss_fn: nn.Module | None = None,
        device: Any = None,
    ) -> None:
        self.input_shape = None if input_shape is None else tuple(input_shape)
        self.loss_fn = nn.SoftmaxLoss() if loss_fn is None else loss_fn
        self.device = device

    def __call__(
        self,
        model: nn.Module,
        batch: tuple[Tensor, Tensor],
        carry: Any = None,
    ) -> Forward:
        """The loss, samples and errors of one batch (``carry`` is unused: always None)."""
        X, y = batch
        if self.device is not None:
            X, y = _on_device(X, self.device), _on_device(y, self.device)
        logits = model(self._in_layout(X))
        errors = int((logits.numpy().argmax(axis=1) != y.numpy()).sum())
        return Forward(self.loss_fn(logits, y), X.shape[0], errors)

    def _in_layout(self, X: Tensor) -> Tensor:
        """``X`` reshaped to ``(batch, *input_shape)`` (a view when it already is)."""
        if self.input_shape is None:
            return X
        shape = (math.prod(X.shape[1:]),) if self.input_shape == FLAT else self.input_shape
        return X if X.shape[1:] == shape else X.reshape((X.shape[0], *shape))


def _on_device(value: Tensor, device: Any) -> Tensor:
    """``value`` on ``device`` (a copy without gradient if it lives elsewhere)."""
    if value.device == device:
        return value
    return Tensor(value.numpy(), device=device, dtype=value.dtype, requires_grad=False)


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
        return cls(
            root=config.data.data_dir,
            train=train,
            transforms=transforms,
            download=config.data.download,
        )

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
        f"{CIFAR10_FOLDER} folder of an unpacked cifar-10-python.tar.gz"
    )


def _load_cifar10(config: TrainConfig, train: bool, transforms: list | None) -> Dataset:
    """CIFAR-10's training or test batches (see :func:`cifar10_folder`)."""
    return CIFAR10Dataset(
        cifar10_folder(config.data.data_dir, config.data.download),
        train=train,
        transforms=transforms,
    )


#: Dataset name (as on the command line) -> its image shape and loader.
DATASETS: dict[str, ImageDataset] = {
    "fashion-mnist": ImageDataset((1, 28, 28), _load_idx(FashionMNIST)),
    "mnist": ImageDataset((1, 28, 28), _load_idx(MNIST)),
    "cifar10": ImageDataset((3, 32, 32), _load_cifar10),
}


def _mlp_resnet(config: TrainConfig, shape: tuple[int, int, int]) -> nn.Module:
    net = config.network
    return MLPResNet(
        math.prod(shape), net.hidden_dim, net.num_blocks, NUM_CLASSES, drop_prob=net.drop_prob
    )


def _cnn(config: TrainConfig, shape: tuple[int, int, int]) -> nn.Module:
    return SmallCNN(shape[0], shape[1:], config.network.width, NUM_CLASSES)


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
    "mlp-resnet": lambda c: (
        f"MLPResNet(hidden {c.network.hidden_dim}, {c.network.num_blocks} blocks)"
    ),
    "cnn": lambda c: f"SmallCNN(width {c.network.width})",
    "resnet9": lambda c: "ResNet9",
}


def load_split(config: TrainConfig, train: bool) -> Dataset:
    """The training (augmented if asked) or test set of ``--dataset``, limited.

    Raises:
        needle.data.DatasetNotFoundError: the files are missing (the message says how
            to get them).
    """
    data = config.data
    transforms = None
    if train and data.augment:
        transforms = [RandomFlipHorizontal(), RandomCrop(data.crop_padding)]
    dataset = DATASETS[data.dataset].load(config, train, transforms)
    return first_n(dataset, data.limit_train if train else data.limit_test)


class ImageClassification(Task):
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
        model, dataset = config.network.model, config.data.dataset
        if dataset not in DATASETS:
            raise TrainingError(
                f"unknown dataset {dataset!r} for --model {model}; use one of {', '.join(DATASETS)}"
            )
        check_config(config)
        self.config = config
        self.image_shape = DATASETS[dataset].shape
        #: The shape of one sample as the model takes it.
        self.input_shape: tuple[int, ...] = (
            (math.prod(self.image_shape),) if model in FLAT_MODELS else self.image_shape
        )
        #: Batches reshaped to :attr:`input_shape`, softmax loss, arg-max errors.
        self.objective = Classification(self.input_shape)

    def dataset(self, train: bool) -> Dataset:
        """The training set (augmented if asked) or the test set."""
        return load_split(self.config, train)

    def build_model(self) -> nn.Module:
        """``--model`` for this dataset's images (draws its weights)."""
        return MODELS[self.config.network.model](self.config, self.image_shape)

    def loader(self, dataset: Dataset, train: bool) -> DataLoader:
        """:func:`~needle.tasks.standard_loader`: shuffled batches for training."""
        return standard_loader(dataset, self.config, train)

    def state(self) -> dict:
        """Nothing: the weights and the config say everything."""
        return {}

    def describe(self) -> str:
        """E.g. ``SmallCNN(width 32) on fashion-mnist``."""
        config = self.config
        return f"{_DESCRIPTIONS[config.network.model](config)} on {config.data.dataset}"

    def check_eval_data(self, saved: TrainConfig, state: dict) -> None:
        """Refuse data whose images differ in shape from those the model was trained on."""
        trained = DATASETS[saved.data.dataset].shape
        if trained != self.image_shape:
            raise TrainingError(
                f"the model ({saved.network.model}) was trained on {saved.data.dataset} "
                f"images of shape {_shape_text(trained)}; {self.config.data.dataset} images are "
                f"{_shape_text(self.image_shape)}. Evaluate it on a dataset with "
                f"{_shape_text(trained)} images ({', '.join(_same_shape(trained))})"
            )


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
    hidden_dim, dataset, padding = (
        config.network.hidden_dim,
        config.data.dataset,
        config.data.crop_padding,
    )
    if config.network.model == "mlp-resnet" and hidden_dim < 2:
        raise ConfigError(
            f"--hidden-dim {hidden_dim} makes the MLP ResNet's residual "
            f"blocks 0 wide (they are --hidden-dim // 2 wide inside); use "
            f"--hidden-dim 2 or more"
        )
    if dataset in DATASETS:
        side = min(DATASETS[dataset].shape[1:])
        if padding >= side:
            raise ConfigError(
                f"--crop-padding {padding} shifts {dataset}'s "
                f"{side}-pixel images out of the crop entirely; use at most "
                f"{side - 1}"
            )


def create(config: TrainConfig) -> ImageClassification:
    """The task for ``config`` (the entry point :func:`needle.tasks.create` calls)."""
    return ImageClassification(config)
