"""Language modelling for ``needle train``: next-word prediction on PTB-format text.

Models (``--model``), each the course's
:class:`~needle.apps.models_lm.LanguageModel` (embedding ``--embedding-dim``, a
sequence model of ``--num-layers`` layers and ``--hidden-dim`` units, a linear head over
the vocabulary):

* ``rnn-lm`` — an Elman RNN (tanh); ``lstm-lm`` — an LSTM;
* ``transformer-lm`` — the course's causal Transformer (``--seq-len`` positions).

Datasets (``--dataset``): ``kjv`` (default; the King James Bible from Debian's
``bible-kjv``, converted PTB-style on first use, see
:mod:`needle.data.datasets.kjv`) and ``ptb`` (a folder ``--data-dir`` with Penn
Treebank's own ``train.txt``/``valid.txt``/``test.txt``). Words are read with the
course's :class:`~needle.data.Corpus` (``train.txt`` then ``test.txt``, ``<eos>`` at
every line end); the per-epoch evaluation and ``needle eval`` use ``test.txt``.

Training is the course's truncated backpropagation through time: each split is
``batchify``-ed into ``--batch-size`` columns and cut into ``--seq-len`` chunks taken
in order (:func:`bptt_chunks`); the task's objective, :class:`NextToken`, carries the
hidden state, detached, from chunk to chunk, and it starts afresh every epoch. A
"sample" is a token: the loss is the mean negative log-likelihood per token, the error
the fraction of wrongly predicted next tokens, and the run reports the perplexity
``exp(loss)``.

:func:`generate` samples text from a checkpoint (``needle generate``).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

import needle as ndl
from needle import distributed, nn
from needle.apps.models_lm import LanguageModel
from needle.autograd import Tensor
from needle.backends import Device
from needle.data import Corpus, Dataset, DatasetNotFoundError, batchify, get_batch
from needle.data.datasets.kjv import UNK, kjv_folder, ptb_tokens
from needle.data.datasets.ptb import EOS
from needle.loop import Forward
from needle.tasks import Task
from needle.training import (
    CheckpointError,
    TrainConfig,
    TrainingError,
    checkpoint_config,
    load_checkpoint,
)

__all__ = [
    "MODELS",
    "DATASETS",
    "DEFAULTS",
    "NextToken",
    "detach_state",
    "bptt_chunks",
    "TokenStream",
    "BPTTLoader",
    "LanguageModelling",
    "create",
    "corpus_folder",
    "build_language_model",
    "saved_vocabulary",
    "unigram_perplexity",
    "encode_prompt",
    "sample_next",
    "generate",
    "Generated",
]

#: Model name (as on the command line) -> the LanguageModel's ``seq_model``.
MODELS: dict[str, str] = {"rnn-lm": "rnn", "lstm-lm": "lstm", "transformer-lm": "transformer"}

#: The language task's defaults (TrainConfig's are the image recipe's): small batches of
#: short chunks, so that even a few thousand tokens make enough steps to learn from; a
#: high learning rate for Adam, kept stable by clipping the gradient norm; no weight
#: decay or dropout, which only slow down runs this short. ``needle train --model lstm-lm
#: --epochs 1 --limit-train 20000`` reaches a test perplexity well below the unigram
#: baseline (docs/training.md).
DEFAULTS: dict[str, Any] = {
    "epochs": 2,
    "batch_size": 16,
    "seq_len": 20,
    "embedding_dim": 128,
    "hidden_dim": 256,
    "lr": 0.005,
    "weight_decay": 0.0,
    "drop_prob": 0.0,
    "clip_grad": 1.0,
}


def detach_state(h: Any) -> Any:
    """A hidden state cut from its graph: a Tensor, a tuple of them (LSTM), or None."""
    if h is None:
        return None
    if isinstance(h, tuple):
        return tuple(detach_state(part) for part in h)
    return h.detach()


class NextToken:
    """Language modelling's objective: a batch is a BPTT chunk ``(X, y)``, token ids
    ``(L, B)`` and next-token targets ``(L·B,)``; ``model(X, h)`` gives logits
    ``(L·B, vocabulary)`` and the new hidden state. The loss is the mean softmax loss per
    token, an error a token whose arg-max prediction is wrong, and the hidden state is
    carried, detached, into the next chunk (gradients flow through one chunk, the state
    through the whole text).

    Args:
        loss_fn: the loss of ``(logits, y)`` (default :class:`~needle.nn.SoftmaxLoss`).

    Example:
        >>> model = LanguageModel(4, 6, 5, seq_model="lstm")
        >>> X, y = Tensor(np.zeros((3, 2), "float32")), Tensor(np.arange(6) % 6)
        >>> forward = NextToken()(model, (X, y), None)
        >>> forward.size, [tuple(part.shape) for part in forward.carry]
        (6, [(1, 2, 5), (1, 2, 5)])
    """

    def __init__(self, loss_fn: nn.Module | None = None) -> None:
        self.loss_fn = nn.SoftmaxLoss() if loss_fn is None else loss_fn

    def __call__(self, model: nn.Module, batch: tuple[Tensor, Tensor], carry: Any) -> Forward:
        """The loss, tokens and errors of one chunk, starting from the hidden state ``carry``."""
        X, y = batch
        logits, h = model(X, carry)
        labels = y.numpy()
        errors = int(np.sum(logits.numpy().argmax(axis=1) != labels))
        return Forward(self.loss_fn(logits, y), labels.shape[0], errors, detach_state(h))


def bptt_chunks(
    data: np.ndarray, seq_len: int, device: Device | None = None, dtype: str = "float32"
) -> Iterator[tuple[Tensor, Tensor]]:
    """The :func:`~needle.data.get_batch` chunks ``(X (L, B), y (L·B,))`` of ``data`` in order."""
    for i in range(0, data.shape[0] - 1, seq_len):
        yield get_batch(data, i, seq_len, device=device, dtype=dtype)


def _ptb_folder(data_dir: str | None) -> Path:
    """``--data-dir`` for ``--dataset ptb`` (required, with the three files)."""
    if data_dir is None:
        raise DatasetNotFoundError(
            "--dataset ptb needs --data-dir DIR: a folder with Penn Treebank's train.txt, "
            "valid.txt and test.txt (ptb.train.txt etc. renamed); without PTB use "
            "--dataset kjv (sudo apt-get install bible-kjv)"
        )
    return Path(data_dir)


#: Dataset name (as on the command line; the first is the default) -> its folder
#: of PTB-format files for ``--data-dir`` (None: the default place).
DATASETS: dict[str, Callable[[str | None], Path]] = {"kjv": kjv_folder, "ptb": _ptb_folder}


def corpus_folder(config: TrainConfig) -> Path:
    """The folder of ``--dataset``'s ``train.txt``/``test.txt`` (KJV: converted).

    Raises:
        needle.data.DatasetNotFoundError: the files are missing; the message says how
            to get them.
    """
    dataset = config.data.dataset
    folder = DATASETS[dataset](config.data.data_dir)
    for name in ("train.txt", "test.txt"):
        if not (folder / name).is_file():
            raise DatasetNotFoundError(
                f"{dataset}: no {folder / name}; the folder must hold PTB-format "
                f"train.txt, valid.txt and test.txt (one sentence per line). For the "
                f"KJV corpus: sudo apt-get install bible-kjv, then --dataset kjv"
            )
    return folder


class TokenStream(Dataset):
    """A split of a corpus as one stream of token ids; a sample is a token.

    Example:
        >>> len(TokenStream([4, 5, 6])), TokenStream([4, 5, 6])[1]
        (3, 5)
    """

    def __init__(self, ids: Iterable[int]) -> None:
        super().__init__()
        self.ids = np.asarray(list(ids), dtype=np.int64)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> int:
        return int(self.ids[index])


class BPTTLoader:
    """The consecutive BPTT chunks of a :class:`TokenStream`, as the loop's loader.

    The stream is ``batchify``-ed into ``batch_size`` columns; iterating yields
    :func:`~needle.data.get_batch`'s ``(X (L, B), y (L·B,))`` for ``i = 0, seq_len, …``.
    ``len()`` is the number of chunks; ``sampler`` is None (the order is fixed). As with a
    :class:`~needle.data.DataLoader`, :meth:`batch_indices` lists a pass's batches (here
    the start of each chunk) and :meth:`batches` yields those of such a list.

    Raises:
        TrainingError: the stream is too short for one chunk of ``batch_size`` columns.
    """

    sampler = None

    def __init__(self, dataset: TokenStream, batch_size: int, seq_len: int) -> None:
        if len(dataset) // batch_size < 2:
            raise TrainingError(
                f"{len(dataset)} tokens cannot make BPTT chunks of --batch-size "
                f"{batch_size} columns: each column needs at least 2 tokens (an input and "
                f"its target); use a smaller --batch-size or more text"
            )
        self.dataset = dataset
        self.seq_len = seq_len
        self.columns = batchify(dataset.ids, batch_size)

    def __len__(self) -> int:
        return math.ceil((self.columns.shape[0] - 1) / self.seq_len)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        return bptt_chunks(self.columns, self.seq_len)

    def batch_indices(self) -> list[np.ndarray]:
        """The start of every chunk, in order (one 1-element array per chunk)."""
        starts = np.arange(0, self.columns.shape[0] - 1, self.seq_len, dtype=np.int64)
        return [starts[k : k + 1] for k in range(len(starts))]

    def batches(self, ordering: list[np.ndarray]) -> Iterator[tuple[Tensor, Tensor]]:
        """The chunks starting at the positions of ``ordering`` (see :meth:`batch_indices`)."""
        for start in ordering:
            yield get_batch(self.columns, int(start[0]), self.seq_len)


class LanguageModelling(Task):
    """The language-modelling task of one run (see :mod:`needle.tasks`).

    The corpus is read once, when first needed (the model's output size is its
    vocabulary size).
    """

    #: The loss is per token: the run reports perplexity.
    perplexity = True

    def __init__(self, config: TrainConfig) -> None:
        model, dataset = config.network.model, config.data.dataset
        if dataset not in DATASETS:
            raise TrainingError(
                f"unknown dataset {dataset!r} for --model {model}; use one of {', '.join(DATASETS)}"
            )
        if distributed.is_initialized() and distributed.world_size() > 1:
            raise TrainingError(
                f"--model {model} trains on one process only (the "
                f"hidden state runs through the whole text); start it "
                f"without mpiexec"
            )
        self.config = config
        #: Next-token loss and errors, the hidden state carried from chunk to chunk.
        self.objective = NextToken()
        self._corpus: Corpus | None = None

    @property
    def corpus(self) -> Corpus:
        """The run's :class:`~needle.data.Corpus` (read on first use)."""
        if self._corpus is None:
            self._corpus = Corpus(corpus_folder(self.config))
        return self._corpus

    @property
    def vocabulary(self) -> list[str]:
        """The words, by id."""
        return self.corpus.dictionary.idx2word

    def dataset(self, train: bool) -> TokenStream:
        """The training or test tokens, the first ``--limit-train``/``--limit-test``."""
        ids = self.corpus.train if train else self.corpus.test
        data = self.config.data
        limit = data.limit_train if train else data.limit_test
        return TokenStream(ids if limit is None else ids[:limit])

    def loader(self, dataset: TokenStream, train: bool) -> BPTTLoader:
        """The consecutive BPTT chunks (the same order for training and evaluation)."""
        return BPTTLoader(dataset, self.config.optim.batch_size, self.config.network.seq_len)

    def build_model(self) -> LanguageModel:
        """The LanguageModel of ``config`` over this corpus's vocabulary."""
        return build_language_model(self.config, len(self.vocabulary))

    def describe(self) -> str:
        """E.g. ``LanguageModel(lstm, …, vocabulary 10000) on kjv tokens``."""
        net = self.config.network
        layers = f"{net.num_layers} layer{'s' if net.num_layers != 1 else ''}"
        return (
            f"LanguageModel({MODELS[net.model]}, embedding {net.embedding_dim}, hidden "
            f"{net.hidden_dim}, {layers}, vocabulary {len(self.vocabulary)}) on "
            f"{self.config.data.dataset} tokens"
        )

    def state(self) -> dict[str, Any]:
        """The vocabulary (for ``needle generate`` and to check ``needle eval``'s data)."""
        return {"vocabulary": "\n".join(self.vocabulary)}

    def check_eval_data(self, saved: TrainConfig, state: dict[str, Any]) -> None:
        """Refuse a corpus whose vocabulary differs from the one the model was trained on."""
        if saved_vocabulary(state) != self.vocabulary:
            raise TrainingError(
                f"the model ({saved.network.model}) was trained on {saved.data.dataset} with "
                f"another vocabulary than {self.config.data.dataset}'s here "
                f"({len(self.vocabulary)} words); evaluate it on the corpus it was trained on"
            )


def build_language_model(config: TrainConfig, vocabulary_size: int) -> LanguageModel:
    """``config``'s LanguageModel with ``vocabulary_size`` outputs (draws its weights)."""
    net = config.network
    return LanguageModel(
        net.embedding_dim,
        vocabulary_size,
        net.hidden_dim,
        net.num_layers,
        MODELS[net.model],
        seq_len=net.seq_len,
        dropout=net.drop_prob,
    )


def saved_vocabulary(state: dict[str, Any]) -> list[str]:
    """The vocabulary kept in a checkpoint's ``"task"`` entry (empty if none)."""
    text = state.get("vocabulary", "")
    return text.split("\n") if text else []


def unigram_perplexity(
    train_ids: Iterable[int], test_ids: Iterable[int], vocabulary_size: int
) -> float:
    """The test perplexity of the add-one unigram model of ``train_ids`` (the baseline).

    ``p(w) = (count_train(w) + 1) / (len(train) + vocabulary_size)`` for every id below
    ``vocabulary_size``; the perplexity is ``exp(-mean log p(w))`` over ``test_ids``.

    Example:
        >>> round(unigram_perplexity([0, 0, 1], [0, 1], 2), 4)  # p = 3/5 and 2/5
        2.0412
    """
    counts = np.bincount(np.asarray(list(train_ids), dtype=np.int64), minlength=vocabulary_size)
    log_p = np.log(counts + 1.0) - math.log(counts.sum() + vocabulary_size)
    return float(np.exp(-log_p[np.asarray(list(test_ids), dtype=np.int64)].mean()))


def create(config: TrainConfig) -> LanguageModelling:
    """The task for ``config`` (the entry point :func:`needle.tasks.create` calls)."""
    return LanguageModelling(config)


# ----- generation -------------------------------------------------------------------------


def encode_prompt(prompt: str, vocabulary: list[str]) -> tuple[list[int], list[str]]:
    """The ids of ``prompt``'s PTB-style tokens, and the words not in ``vocabulary``.

    Unknown words become ``<unk>`` (when the vocabulary has it; else they are dropped).

    Example:
        >>> encode_prompt("The zyzzyva", ["<eos>", "the", "<unk>"])
        ([1, 2], ['zyzzyva'])
    """
    index = {word: i for i, word in enumerate(vocabulary)}
    ids, unknown = [], []
    for word in ptb_tokens(prompt):
        if word in index:
            ids.append(index[word])
            continue
        unknown.append(word)
        if UNK in index:
            ids.append(index[UNK])
    return ids, unknown


def sample_next(logits: np.ndarray, temperature: float, rng: np.random.Generator) -> int:
    """A token id drawn from ``softmax(logits / temperature)``; temperature 0: the arg-max.

    Example:
        >>> sample_next(np.array([0.1, 2.0, 0.5]), 0.0, np.random.default_rng(0))
        1
    """
    if temperature == 0:
        return int(np.argmax(logits))
    scaled = logits.astype(np.float64) / temperature
    probs = np.exp(scaled - scaled.max())
    return int(rng.choice(len(probs), p=probs / probs.sum()))


@dataclass(frozen=True)
class Generated:
    """The result of :func:`generate`: the text and the prompt words it did not know."""

    text: str
    unknown: list[str]


def generate(
    checkpoint: str | os.PathLike,
    prompt: str = "",
    length: int = 50,
    temperature: float = 1.0,
    seed: int = 0,
) -> Generated:
    """Continue ``prompt`` by ``length`` words sampled from a language-model checkpoint.

    The prompt is tokenised as the corpus was (:func:`encode_prompt`). The RNN/LSTM
    read the prompt, then one word at a time with their hidden state carried; the
    Transformer rereads the last ``seq_len`` words each step (its context window).
    An empty prompt starts the model from ``<eos>`` (the start of a line). Sampling
    uses its own generator seeded with ``seed``, so NumPy's global one is untouched and
    a seed gives the same text every time.

    Returns:
        :class:`Generated`: the prompt's tokens and the new words, each ``<eos>`` shown
        as a line break.

    Raises:
        CheckpointError: not a readable language-model checkpoint.
        ValueError: ``length`` < 1 or ``temperature`` < 0.
    """
    if length < 1 or temperature < 0 or not math.isfinite(temperature):
        raise ValueError(
            f"generate: need length >= 1 and a finite temperature >= 0, got "
            f"length={length}, temperature={temperature}"
        )
    model, vocabulary, config = _load_language_model(checkpoint)
    ids, unknown = encode_prompt(prompt, vocabulary)
    context = ids or [vocabulary.index(EOS)]
    rng = np.random.default_rng(seed)
    recurrent = MODELS[config.network.model] != "transformer"
    new: list[int] = []
    with ndl.no_grad():
        h, feed = None, context
        for _ in range(length):
            if not recurrent:
                feed, h = (context + new)[-config.network.seq_len :], None
            logits, h = model(
                Tensor(np.array(feed, dtype=np.float32)[:, None], requires_grad=False), h
            )
            new.append(sample_next(logits.numpy()[-1], temperature, rng))
            feed = new[-1:]
    return Generated(_render([vocabulary[i] for i in ids + new]), unknown)


def _render(words: list[str]) -> str:
    """The words joined by spaces, a line break for each ``<eos>``."""
    lines: list[list[str]] = [[]]
    for word in words:
        if word == EOS:
            lines.append([])
        else:
            lines[-1].append(word)
    return "\n".join(" ".join(line) for line in lines)


def _load_language_model(path: str | os.PathLike) -> tuple[LanguageModel, list[str], TrainConfig]:
    """The model (eval mode), vocabulary and config saved in a language-model checkpoint."""
    state = load_checkpoint(path)
    config = checkpoint_config(path, state)
    if config.network.model not in MODELS:
        raise CheckpointError(
            f"{os.fspath(path)} holds a {config.network.model} model, not a "
            f"language model ({', '.join(MODELS)})"
        )
    vocabulary = saved_vocabulary(state.get("task", {}))
    if not vocabulary:
        raise CheckpointError(f"{os.fspath(path)} keeps no vocabulary")
    rng_state = np.random.get_state()
    try:  # building draws initial weights (then replaced): keep the caller's stream
        model = build_language_model(config, len(vocabulary))
    finally:
        np.random.set_state(rng_state)
    try:
        model.load_state_dict(state["model"])
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"cannot load the model from {os.fspath(path)}: {e}") from e
    model.eval()
    return model, vocabulary, config
