"""`needle train` / `needle eval` with the convolutional models and CIFAR-10 (needle.tasks).

Fashion-MNIST runs use the Debian package's files on small limits (skipped without it);
CIFAR-10 runs use generated batch files in the official format (tests/helpers/datasets.py,
as in tests/data/test_cifar10.py). The MLP ResNet's own behaviour is tested in test_cli.py.
"""

from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path

import numpy as np
import pytest
from helpers.cli import FASHION_DIR, assert_same_state, needs_fashion, run_main
from helpers.datasets import TRAIN, make_batch, py2_dumps

import needle as ndl
from needle import nn, tasks, training
from needle.apps.mlp_resnet import run_epoch
from needle.apps.models_conv import ResNet9, SmallCNN
from needle.data import DataLoader, read_idx

# A CNN small enough for seconds per epoch on 2 cores.
CNN = ["--model", "cnn", "--width", "8", "--batch-size", "50", "--lr", "0.002"]
SMALL = ["--limit-train", "600", "--limit-test", "100"]  # test error ~0.37 after 2 epochs


def summary(text: str, epoch: int) -> dict[str, float]:
    """The numbers of epoch ``epoch``'s summary line in ``text``."""
    line = next(row for row in text.splitlines() if row.startswith(f"epoch {epoch}/"))
    values = re.findall(r"(train|test) loss (\S+) err (\S+)", line)
    return {
        f"{split}_{name}": float(v)
        for split, loss, err in values
        for name, v in (("loss", loss), ("err", err))
    }


def skip_curves(patch: pytest.MonkeyPatch) -> None:
    """Train without drawing curves.png: matplotlib took ~1.7 s per epoch, most of these
    runs' time. The curves are tested with the MLP runs (test_cli.py); these tests are about
    the CNN's checkpoints, metrics and resume."""
    patch.setattr(training, "plot_curves", lambda *args, **kwargs: False)


@pytest.fixture(scope="module")
def cnn_run(tmp_path_factory) -> tuple[Path, str]:
    """`needle train --model cnn` for 2 epochs on 600/100 Fashion-MNIST images."""
    if not (FASHION_DIR / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"Fashion-MNIST not in {FASHION_DIR}")
    out = tmp_path_factory.mktemp("cnn") / "out"
    with pytest.MonkeyPatch.context() as patch:
        lines: list[str] = []
        patch.setattr("builtins.print", lambda *a, **k: lines.append(" ".join(map(str, a))))
        skip_curves(patch)
        assert run_main("train", *CNN, *SMALL, "--epochs", "2", "--out", out) == 0
    return out, "\n".join(lines)


# ----- the task: layout and models ----------------------------------------------------------


def test_every_model_and_dataset_is_listed_for_the_command_line():
    assert tasks.model_names() == [
        "mlp-resnet",
        "cnn",
        "resnet9",
        "rnn-lm",
        "lstm-lm",
        "transformer-lm",
    ]
    assert tasks.dataset_names() == ["fashion-mnist", "mnist", "cifar10", "kjv", "ptb"]


@pytest.mark.parametrize(
    "model, dataset, shape",
    [
        ("mlp-resnet", "fashion-mnist", (784,)),
        ("mlp-resnet", "cifar10", (3072,)),
        ("cnn", "mnist", (1, 28, 28)),
        ("resnet9", "cifar10", (3, 32, 32)),
    ],
)
def test_input_layout_is_flat_for_the_mlp_and_nchw_for_convnets(model, dataset, shape):
    task = tasks.create(training.TrainConfig(model=model, dataset=dataset))
    assert task.input_shape == shape
    np.random.seed(0)
    net = task.build_model()
    assert net(ndl.Tensor(np.zeros((2, *shape), np.float32))).shape == (2, 10)


@needs_fashion
def test_convnets_see_the_idx_images_as_nchw():
    """The batch reaching the model is the IDX file's images, reshaped to (N, 1, 28, 28)."""
    seen = []

    class Record(nn.Module):
        def forward(self, x):
            seen.append(x.numpy())
            return ndl.Tensor(np.zeros((x.shape[0], 10), np.float32))

    config = training.TrainConfig(model="cnn", limit_test=7)
    task = tasks.create(config)
    task.run_epoch(DataLoader(task.dataset(train=False), 5), Record())
    raw = read_idx(FASHION_DIR / "t10k-images-idx3-ubyte.gz")[:7]
    np.testing.assert_allclose(np.concatenate(seen), raw[:, None] / np.float32(255))


def test_run_epoch_reshapes_only_to_the_given_input_shape():
    X = np.random.default_rng(0).random((4, 2, 3, 3)).astype(np.float32)
    loader = DataLoader(ndl.data.NDArrayDataset(X, np.arange(4) % 2), 4)
    shapes = []

    class Shape(nn.Module):
        def forward(self, x):
            shapes.append(x.shape)
            return ndl.Tensor(np.zeros((x.shape[0], 2), np.float32))

    run_epoch(loader, Shape())
    run_epoch(loader, Shape(), input_shape=(2, 3, 3))
    run_epoch(loader, Shape(), input_shape=(2, 9))
    assert shapes == [(4, 18), (4, 2, 3, 3), (4, 2, 9)]


@pytest.mark.parametrize("channels, size", [(1, (28, 28)), (3, (32, 32)), (2, (9, 17))])
def test_small_cnn_sizes_its_head_from_the_image(channels, size):
    model = SmallCNN(channels, size, width=4)
    assert model(ndl.init.rand(3, channels, *size)).shape == (3, 10)
    head = model.model.modules[-1]
    assert head.weight.shape == (16 * math.ceil(size[0] / 8) * math.ceil(size[1] / 8), 10)


def test_resnet9_takes_grayscale_images_and_keeps_the_course_default():
    assert ResNet9(in_channels=1)(ndl.init.rand(2, 1, 28, 28)).shape == (2, 10)
    assert ResNet9().num_parameters() == 431946  # the course's: 3 input channels
    assert ResNet9(in_channels=1).num_parameters() == 431946 - 2 * 7 * 7 * 16


# ----- needle train / eval on Fashion-MNIST ---------------------------------------------------


def test_cnn_run_writes_files_and_learns(cnn_run):
    out, text = cnn_run
    assert text.splitlines()[0].startswith(
        "SmallCNN(width 8) on fashion-mnist (600 train / 100 test)"
    )
    for name in (training.CHECKPOINT_NAME, training.METRICS_NAME):
        assert (out / name).is_file()
    first, second = summary(text, 1), summary(text, 2)
    assert second["train_loss"] < first["train_loss"]
    assert second["test_err"] < 0.5  # 10 classes: chance is 0.9
    state = ndl.load(out / training.CHECKPOINT_NAME)
    network = state["config"]["network"]
    assert network["model"] == "cnn" and network["width"] == 8
    assert any(key.endswith("conv.weight") for key in state["model"])


def test_eval_of_a_cnn_checkpoint_repeats_the_last_test_metrics(cnn_run, capsys):
    out, text = cnn_run
    assert run_main("eval", "--checkpoint", out / training.CHECKPOINT_NAME) == 0
    printed = capsys.readouterr().out
    last = summary(text, 2)
    assert f"test loss {last['test_loss']:.4f} err {last['test_err']:.4f}" in printed
    assert "(100 samples" in printed


@needs_fashion
def test_cnn_resume_is_bit_identical(tmp_path, capsys, monkeypatch):
    """Epoch 1, then --resume for epoch 2, equals 2 straight epochs (cosine, augmentation)."""
    skip_curves(monkeypatch)
    options = [
        *CNN,
        "--limit-train",
        "100",
        "--limit-test",
        "20",
        "--epochs",
        "2",
        "--scheduler",
        "cosine",
        "--augment",
        "--crop-padding",
        "2",
    ]
    assert run_main("train", *options, "--out", tmp_path / "straight") == 0

    def stop_after_first_epoch(line: str) -> None:
        if line.startswith("epoch 1/"):
            raise KeyboardInterrupt

    saved = training.resume_config(tmp_path / "straight", {})
    config = dataclasses.replace(saved, out=str(tmp_path / "resumed"))
    with pytest.raises(KeyboardInterrupt):
        training.train(config, progress=False, log=stop_after_first_epoch)
    assert run_main("train", "--resume", "--out", tmp_path / "resumed") == 0
    assert "resuming after epoch 1" in capsys.readouterr().out
    assert_same_state(tmp_path / "straight", tmp_path / "resumed")


@needs_fashion
def test_resnet9_trains_on_fashion_mnist(tmp_path, capsys):
    assert (
        run_main(
            "train",
            "--model",
            "resnet9",
            "--limit-train",
            "200",
            "--limit-test",
            "50",
            "--epochs",
            "1",
            "--out",
            tmp_path,
        )
        == 0
    )
    assert capsys.readouterr().out.startswith("ResNet9 on fashion-mnist (200 train / 50 test)")
    assert ndl.load(tmp_path / training.CHECKPOINT_NAME)["config"]["network"]["model"] == "resnet9"


@needs_fashion
def test_resume_with_another_model_is_refused(cnn_run, capsys):
    out, _ = cnn_run
    assert run_main("train", "--resume", "--out", out, "--model", "resnet9") == 2
    assert "--model 'cnn' -> 'resnet9'" in capsys.readouterr().err


@pytest.mark.slow
@needs_fashion
def test_cnn_reaches_under_20_percent_test_error_in_one_epoch_on_10k_images(tmp_path, capsys):
    assert (
        run_main(
            "train",
            "--model",
            "cnn",
            "--width",
            "16",
            "--limit-train",
            "10000",
            "--limit-test",
            "2000",
            "--epochs",
            "1",
            "--lr",
            "0.002",
            "--out",
            tmp_path,
        )
        == 0
    )
    assert summary(capsys.readouterr().out, 1)["test_err"] < 0.20  # 16.2% measured


# ----- CIFAR-10 on generated files ----------------------------------------------------------


@pytest.fixture
def cifar_root(tmp_path) -> tuple[Path, dict]:
    """``root/cifar-10-batches-py``: 5 train batches of 20 images, a test batch of 10."""
    rng = np.random.default_rng(1)
    folder = tmp_path / "cifar" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    batches = {}
    for i, name in enumerate(TRAIN + ["test_batch"]):
        batches[name] = make_batch(rng, 10 if name == "test_batch" else 20, f"batch {i}")
        (folder / name).write_bytes(py2_dumps(batches[name]))
    return folder, batches


@pytest.mark.parametrize("model", ["cnn", "resnet9", "mlp-resnet"])
def test_train_and_eval_on_cifar10_files(cifar_root, tmp_path, capsys, model):
    folder, _ = cifar_root
    out = tmp_path / "run"
    assert (
        run_main(
            "train",
            "--model",
            model,
            "--width",
            "4",
            "--dataset",
            "cifar10",
            "--data-dir",
            folder.parent,
            "--batch-size",
            "25",
            "--epochs",
            "2",
            "--augment",
            "--out",
            out,
        )
        == 0
    )
    text = capsys.readouterr().out
    assert "on cifar10 (100 train / 10 test)" in text.splitlines()[0]
    last = summary(text, 2)
    assert run_main("eval", "--checkpoint", out / training.CHECKPOINT_NAME) == 0
    assert (
        f"test loss {last['test_loss']:.4f} err {last['test_err']:.4f}" in capsys.readouterr().out
    )


def test_cifar10_batches_reach_the_model_as_chw_in_file_order(cifar_root):
    """The data-dir may be the batch folder itself; images arrive as the file's planes."""
    folder, batches = cifar_root
    task = tasks.create(training.TrainConfig(model="cnn", dataset="cifar10", data_dir=str(folder)))
    X, y = next(iter(DataLoader(task.dataset(train=False), 10)))
    raw = batches["test_batch"][b"data"].reshape(10, 3, 32, 32)
    np.testing.assert_allclose(X.numpy(), raw / np.float32(255))
    assert y.numpy().tolist() == batches["test_batch"][b"labels"]


# ----- errors -------------------------------------------------------------------------------


def test_unknown_model_on_the_command_line_is_a_usage_error(capsys):
    assert run_main("train", "--model", "vgg16") == 2
    err = capsys.readouterr().err
    assert "--model" in err and "'vgg16'" in err and "cnn" in err


def test_unknown_model_or_dataset_in_the_python_api(tmp_path):
    with pytest.raises(
        training.TrainingError,
        match=r"unknown model 'vgg16'; use one of "
        r"mlp-resnet, cnn, resnet9",
    ):
        training.train(training.TrainConfig(model="vgg16", out=str(tmp_path)), log=None)
    with pytest.raises(training.TrainingError, match=r"unknown dataset 'svhn'.*cifar10"):
        tasks.create(training.TrainConfig(model="cnn", dataset="svhn"))


@needs_fashion
def test_eval_on_images_of_another_shape_is_refused(cnn_run, cifar_root, capsys):
    out, _ = cnn_run
    folder, _ = cifar_root
    assert (
        run_main(
            "eval",
            "--checkpoint",
            out / training.CHECKPOINT_NAME,
            "--dataset",
            "cifar10",
            "--data-dir",
            folder,
        )
        == 2
    )
    err = capsys.readouterr().err
    assert err.startswith(
        "needle eval: error: the model (cnn) was trained on fashion-mnist "
        "images of shape 1×28×28; cifar10 images are 3×32×32"
    )
    assert "(fashion-mnist, mnist)" in err and len(err.strip().splitlines()) == 1


def test_missing_cifar10_folder_says_where_it_looked_and_how_to_get_it(tmp_path, capsys):
    nowhere = tmp_path / "nowhere"
    assert (
        run_main(
            "train",
            "--model",
            "cnn",
            "--dataset",
            "cifar10",
            "--data-dir",
            nowhere,
            "--out",
            tmp_path / "o",
        )
        == 2
    )
    err = capsys.readouterr().err
    assert err.startswith("needle train: error: CIFAR-10 not found")
    for hint in (
        str(nowhere / "cifar-10-batches-py"),
        "--download",
        "--data-dir",
        "cifar-10-python.tar.gz",
    ):
        assert hint in err
    assert "Traceback" not in err


def test_missing_cifar10_batch_names_the_file(cifar_root, tmp_path, capsys):
    folder, _ = cifar_root
    (folder / "data_batch_3").unlink()
    assert (
        run_main(
            "train",
            "--model",
            "cnn",
            "--dataset",
            "cifar10",
            "--data-dir",
            folder,
            "--out",
            tmp_path / "o",
        )
        == 2
    )
    assert "data_batch_3" in capsys.readouterr().err


def test_damaged_cifar10_batch_is_a_one_line_error(cifar_root, tmp_path, capsys):
    folder, _ = cifar_root
    (folder / "test_batch").write_bytes(b"not a pickle")
    assert (
        run_main(
            "train",
            "--model",
            "cnn",
            "--dataset",
            "cifar10",
            "--data-dir",
            folder,
            "--out",
            tmp_path / "o",
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "test_batch" in err and "Traceback" not in err
