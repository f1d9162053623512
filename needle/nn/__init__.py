"""Neural-network building blocks: ``Parameter``, ``Module`` and the layers.

>>> import needle as ndl
>>> model = ndl.nn.Sequential(ndl.nn.Linear(4, 8), ndl.nn.ReLU(), ndl.nn.Linear(8, 2))
>>> model.num_parameters()
58
"""

from . import functional
from .module import IncompatibleKeys, Module, Parameter, StateDictError
from .nn_activations import (
    ELU,
    GELU,
    BCELoss,
    BCEWithLogitsLoss,
    CrossEntropyLoss,
    L1Loss,
    LeakyReLU,
    LogSoftmax,
    MSELoss,
    NLLLoss,
    SiLU,
    Softmax,
    Softplus,
)
from .nn_basic import (
    BatchNorm1d,
    Dropout,
    Flatten,
    Identity,
    LayerNorm1d,
    Linear,
    ReLU,
    Residual,
    Sequential,
    Sigmoid,
    SoftmaxLoss,
    Tanh,
)
from .nn_conv import (
    AdaptiveAvgPool2d,
    AvgPool2d,
    BatchNorm2d,
    Conv,
    Conv2d,
    ConvTranspose2d,
    MaxPool2d,
    Upsample,
)
from .nn_distributed import DistributedDataParallel
from .nn_norm import GroupNorm, LayerNorm, RMSNorm
from .nn_sequence import GRU, LSTM, RNN, Embedding, GRUCell, LSTMCell, RNNCell
from .nn_transformer import AttentionLayer, MultiHeadAttention, Transformer, TransformerLayer

__all__ = [
    "Parameter",
    "Module",
    "StateDictError",
    "IncompatibleKeys",
    "Identity",
    "Linear",
    "Flatten",
    "ReLU",
    "Tanh",
    "Sigmoid",
    "Sequential",
    "Residual",
    "SoftmaxLoss",
    "LayerNorm1d",
    "BatchNorm1d",
    "Dropout",
    "Conv",
    "Conv2d",
    "ConvTranspose2d",
    "BatchNorm2d",
    "MaxPool2d",
    "AvgPool2d",
    "AdaptiveAvgPool2d",
    "Upsample",
    "LayerNorm",
    "RMSNorm",
    "GroupNorm",
    "DistributedDataParallel",
    "Embedding",
    "RNNCell",
    "RNN",
    "LSTMCell",
    "LSTM",
    "GRUCell",
    "GRU",
    "MultiHeadAttention",
    "AttentionLayer",
    "TransformerLayer",
    "Transformer",
    "Softmax",
    "LogSoftmax",
    "GELU",
    "SiLU",
    "LeakyReLU",
    "ELU",
    "Softplus",
    "CrossEntropyLoss",
    "NLLLoss",
    "MSELoss",
    "L1Loss",
    "BCELoss",
    "BCEWithLogitsLoss",
    "functional",
]
