"""The course's public names: everything its ``import needle as ndl`` exposes, here too.

The course's ``needle/__init__.py`` (hw1-hw4) imports ``ops`` (and ``from .ops import *``),
``Tensor``/``cpu``/``all_devices`` from ``autograd``, ``init`` with ``ones``, ``zeros``,
``zeros_like``, ``ones_like``, the subpackages ``data``, ``nn``, ``optim``, and
``from .backend_selection import *``. Each name must exist and behave as course code uses it.
"""

from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys

import numpy as np
import pytest

import needle as ndl

BACKEND_NAMES = [
    "BACKEND",
    "array_api",
    "NDArray",
    "Device",
    "cpu",
    "cuda",
    "cpu_numpy",
    "all_devices",
    "default_device",
]
TOP_LEVEL = [
    "Tensor",
    "TensorTuple",
    "Value",
    "ops",
    "autograd",
    "init",
    "data",
    "nn",
    "optim",
    "ones",
    "zeros",
    "ones_like",
    "zeros_like",
    "backend_ndarray",
    "backend_selection",
    "backend_numpy",
    *BACKEND_NAMES,
]
OPS = [
    "EWiseAdd",
    "add",
    "AddScalar",
    "add_scalar",
    "EWiseMul",
    "multiply",
    "MulScalar",
    "mul_scalar",
    "EWisePow",
    "power",
    "PowerScalar",
    "power_scalar",
    "EWiseDiv",
    "divide",
    "DivScalar",
    "divide_scalar",
    "Transpose",
    "transpose",
    "Reshape",
    "reshape",
    "BroadcastTo",
    "broadcast_to",
    "Summation",
    "summation",
    "MatMul",
    "matmul",
    "Negate",
    "negate",
    "Log",
    "log",
    "Exp",
    "exp",
    "ReLU",
    "relu",
    "Tanh",
    "tanh",
    "Sigmoid",
    "sigmoid",
    "LogSoftmax",
    "logsoftmax",
    "LogSumExp",
    "logsumexp",
    "Stack",
    "stack",
    "Split",
    "split",
    "Flip",
    "flip",
    "Dilate",
    "dilate",
    "UnDilate",
    "undilate",
    "Conv",
    "conv",
    "MakeTensorTuple",
    "make_tuple",
    "TupleGetItem",
    "tuple_get_item",
    "FusedAddScalars",
    "fused_add_scalars",
]
AUTOGRAD = [
    "Value",
    "Op",
    "TensorOp",
    "TensorTupleOp",
    "Tensor",
    "TensorTuple",
    "find_topo_sort",
    "compute_gradient_of_variables",
    "LAZY_MODE",
    "TENSOR_COUNTER",
    "cpu",
    "all_devices",
    "NDArray",
    "array_api",
]
INIT = [
    "rand",
    "randn",
    "constant",
    "ones",
    "zeros",
    "randb",
    "one_hot",
    "zeros_like",
    "ones_like",
    "xavier_uniform",
    "xavier_normal",
    "kaiming_uniform",
    "kaiming_normal",
]
NN = [
    "Parameter",
    "Module",
    "Identity",
    "Linear",
    "Flatten",
    "ReLU",
    "Sequential",
    "SoftmaxLoss",
    "BatchNorm1d",
    "BatchNorm2d",
    "LayerNorm1d",
    "Dropout",
    "Residual",
    "Conv",
    "Sigmoid",
    "Tanh",
    "RNNCell",
    "RNN",
    "LSTMCell",
    "LSTM",
    "Embedding",
    "MultiHeadAttention",
    "AttentionLayer",
    "TransformerLayer",
    "Transformer",
]
OPTIM = ["Optimizer", "SGD", "Adam"]
DATA = [
    "Dataset",
    "DataLoader",
    "MNISTDataset",
    "NDArrayDataset",
    "RandomFlipHorizontal",
    "RandomCrop",
    "CIFAR10Dataset",
    "Dictionary",
    "Corpus",
    "batchify",
    "get_batch",
]


@pytest.mark.parametrize(
    "module, names",
    [
        ("needle", TOP_LEVEL + OPS),
        ("needle.ops", OPS),
        ("needle.autograd", AUTOGRAD),
        ("needle.init", INIT),
        ("needle.nn", NN),
        ("needle.optim", OPTIM),
        ("needle.data", DATA),
        ("needle.backend_selection", BACKEND_NAMES),
    ],
    ids=lambda x: x if isinstance(x, str) else "",
)
def test_course_names_exist(module, names):
    mod = importlib.import_module(module)
    missing = [n for n in names if not hasattr(mod, n)]
    assert not missing, f"{module} lacks the course's names {missing}"


def test_backend_names_are_the_selected_backends():
    assert ndl.BACKEND in ("nd", "np") and ndl.BACKEND == ndl.backends.BACKEND
    assert ndl.array_api is ndl.backends.array_api
    assert ndl.NDArray is ndl.backends.NDArray and ndl.Device is ndl.backends.Device
    assert isinstance(ndl.Tensor([1.0]).realize_cached_data(), ndl.NDArray)
    assert isinstance(ndl.cpu(), ndl.Device) and ndl.cpu() in ndl.all_devices()
    assert ndl.default_device() == ndl.cpu() and not ndl.cuda().enabled()
    assert ndl.autograd.cpu() == ndl.cpu() and ndl.autograd.all_devices() == ndl.all_devices()
    np.testing.assert_array_equal(ndl.array_api.ones((2, 3)), np.ones((2, 3)))


@pytest.mark.parametrize("dtype", ["float32", "float64", "int32", "int64", "bool"])
@pytest.mark.parametrize("make, value", [(ndl.ones, 1), (ndl.zeros, 0)])
def test_creation_functions(make, value, dtype):
    t = make(3, 2, dtype=dtype)
    assert t.shape == (3, 2) and t.dtype == dtype and t.device == ndl.cpu()
    assert not t.requires_grad
    np.testing.assert_array_equal(t.numpy(), np.full((3, 2), value, dtype=dtype))
    assert t.numpy().dtype == np.dtype(dtype)


@pytest.mark.parametrize("dtype", ["float32", "float64", "int32", "int64", "bool"])
@pytest.mark.parametrize("like, value", [(ndl.ones_like, 1), (ndl.zeros_like, 0)])
def test_like_functions_keep_shape_dtype_and_device(like, value, dtype):
    source = ndl.Tensor(np.arange(6).reshape(2, 3), dtype=dtype, requires_grad=False)
    t = like(source)
    assert (t.shape, t.dtype, t.device) == ((2, 3), dtype, source.device)
    np.testing.assert_array_equal(t.numpy(), np.full((2, 3), value, dtype=dtype))


def test_course_label_lines():
    """The lines course code writes for class labels."""
    batch = 4
    ones, zeros = ndl.ones(batch, dtype="int32"), ndl.zeros(batch, dtype="int32")
    assert ones.dtype == "int32" and ones.numpy().tolist() == [1, 1, 1, 1]
    logits = ndl.Tensor(np.array([[0.0, 2.0]] * batch), dtype="float32")
    loss = ndl.nn.SoftmaxLoss()(logits, ones)
    expected = np.log(1 + np.exp(-2.0))
    np.testing.assert_allclose(loss.numpy(), expected, rtol=1e-6)
    assert ndl.nn.SoftmaxLoss()(logits, zeros).numpy() == pytest.approx(2 + expected, rel=1e-6)


def _subpackages() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules(ndl.__path__) if not m.name.startswith("_"))


def test_every_subpackage_is_an_attribute():
    names = _subpackages()
    assert {"nn", "optim", "data", "viz", "distributed", "apps"} <= set(names)
    for name in names:
        assert getattr(ndl, name) is importlib.import_module(f"needle.{name}"), name
    assert set(names) <= set(dir(ndl))
    with pytest.raises(AttributeError, match="no attribute 'nonexistent'"):
        ndl.nonexistent  # noqa: B018


def test_subpackages_load_lazily():
    """``import needle`` does not import the heavy subpackages; the attribute does."""
    code = (
        "import sys, needle\n"
        "lazy = ['needle.nn', 'needle.viz', 'needle.distributed', 'needle.data', 'needle.apps']\n"
        "print(sorted(m for m in lazy if m in sys.modules))\n"
        "needle.viz, needle.distributed\n"
        "print(sorted(m for m in lazy if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert out[0] == "[]", f"imported eagerly: {out[0]}"
    assert out[1] == "['needle.distributed', 'needle.viz']"
