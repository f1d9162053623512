"""Penn Treebank-style text: a word dictionary, a tokenised corpus, and BPTT batches.

The format is plain UTF-8 text, one sentence per line, tokens separated by spaces
(PTB's files also start and end every line with a space). Each line becomes its words
plus ``"<eos>"``. Nothing here draws random numbers.

>>> d = Dictionary()
>>> [d.add_word(w) for w in "the cat saw the dog".split()]
[0, 1, 2, 0, 3]
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator, Sequence

import numpy as np

from ...autograd import Tensor
from ...backends import Device
from .mnist_dataset import DatasetNotFoundError

EOS = "<eos>"
#: The longest line a corpus file may have, in bytes (PTB's longest is under 1 KB).
MAX_LINE_BYTES = 1 << 20


class CorpusFormatError(ValueError):
    """A corpus file is not UTF-8 text of one sentence per line; names the file and line."""


class Dictionary:
    """A two-way map between words and ids; a new word gets the next id (0, 1, 2, …).

    ``word2idx`` is a dict word → id and ``idx2word`` a list id → word.
    """

    def __init__(self) -> None:
        self.word2idx: dict[str, int] = {}
        self.idx2word: list[str] = []

    def add_word(self, word: str) -> int:
        """The id of ``word``, adding it first if it is new."""
        if word not in self.word2idx:
            self.word2idx[word] = len(self.idx2word)
            self.idx2word.append(word)
        return self.word2idx[word]

    def __len__(self) -> int:
        return len(self.idx2word)


class Corpus:
    """The train and test token streams of a PTB-format folder, sharing one dictionary.

    Reads ``base_dir/train.txt`` first, then ``base_dir/test.txt`` (``valid.txt`` is not
    read), each at most ``max_lines`` lines (all when None). Attributes: ``dictionary``,
    ``train`` and ``test`` (flat lists of ids). A missing file raises
    :class:`~needle.data.DatasetNotFoundError` naming the path.
    """

    def __init__(self, base_dir: str | os.PathLike, max_lines: int | None = None) -> None:
        if max_lines is not None and (not isinstance(max_lines, int) or max_lines < 0):
            raise ValueError(f"Corpus: max_lines must be None or an int >= 0, got {max_lines!r}")
        self.dictionary = Dictionary()
        self.train = self.tokenize(os.path.join(base_dir, "train.txt"), max_lines)
        self.test = self.tokenize(os.path.join(base_dir, "test.txt"), max_lines)

    def tokenize(self, path: str | os.PathLike, max_lines: int | None = None) -> list[int]:
        """The ids of the first ``max_lines`` lines of ``path``, each line's words then <eos>.

        Words are ``line.split()`` (any whitespace), added to the dictionary as met.

        Raises:
            DatasetNotFoundError: the file does not exist.
            CorpusFormatError: a line is not UTF-8 or is too long (see :func:`read_lines`).
        """
        if not os.path.isfile(path):
            raise DatasetNotFoundError(
                f"Corpus: no file {os.fspath(path)!r}; a PTB-format folder holds train.txt and "
                f"test.txt, one sentence per line with space-separated tokens"
            )
        ids = []
        for line in read_lines(path, max_lines):
            ids.extend(self.dictionary.add_word(word) for word in line.split() + [EOS])
        return ids


def read_lines(path: str | os.PathLike, max_lines: int | None = None) -> Iterator[str]:
    """The first ``max_lines`` lines of a UTF-8 text file (all when None), decoded one by one.

    Lines end with ``\\n``; none may be longer than :data:`MAX_LINE_BYTES` (reading stops
    at the first byte past it), so a file without line breaks is never read whole.

    Raises:
        CorpusFormatError: a line is not valid UTF-8 (the message names the file, the
            line, the column and the byte) or is too long.
    """
    with open(path, "rb") as file:
        for number in itertools.count(1):
            if max_lines is not None and number > max_lines:
                return
            raw = file.readline(MAX_LINE_BYTES + 1)
            if not raw:
                return
            if len(raw) > MAX_LINE_BYTES:
                raise CorpusFormatError(
                    f"{os.fspath(path)}, line {number}: longer than {MAX_LINE_BYTES} bytes; "
                    f"a PTB-format file holds one sentence per line"
                )
            yield _decoded(path, number, raw)


def _decoded(path: str | os.PathLike, number: int, raw: bytes) -> str:
    """Line ``number`` of ``path`` decoded from UTF-8, or CorpusFormatError saying where not."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as error:
        bad = raw[error.start : error.end].hex(" ")
        raise CorpusFormatError(
            f"{os.fspath(path)}, line {number}, column {error.start + 1}: not UTF-8 "
            f"(byte {bad}: {error.reason}); convert the file to UTF-8, e.g. with "
            f"iconv -f latin1 -t utf-8"
        ) from None


def batchify(
    data: Sequence[int], batch_size: int, device: Device | None = None, dtype: str = "float32"
) -> np.ndarray:
    """Arrange a token stream into ``batch_size`` contiguous columns: (nbatch, batch_size).

    ``nbatch = len(data) // batch_size``; the remainder is dropped. Column j is
    ``data[j·nbatch : (j+1)·nbatch]``. Returns a NumPy array; ``device`` and ``dtype``
    are accepted for the course's signature (``get_batch`` makes the tensors).

    >>> batchify(list(range(7)), 2).tolist()
    [[0, 3], [1, 4], [2, 5]]
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)):
        raise TypeError(f"batchify: batch_size must be an int, got {type(batch_size).__name__}")
    if batch_size <= 0 or len(data) // batch_size == 0:
        raise ValueError(
            f"batchify: batch_size={batch_size} for {len(data)} tokens: need "
            f"1 <= batch_size <= {len(data)} so every column gets at least one token"
        )
    nbatch = len(data) // batch_size
    return np.asarray(data[: nbatch * batch_size]).reshape(batch_size, nbatch).T


def get_batch(
    batches: np.ndarray, i: int, bptt: int, device: Device | None = None, dtype: str | None = None
) -> tuple[Tensor, Tensor]:
    """The BPTT chunk starting at row ``i`` of ``batches`` (nbatch, B) and its targets.

    With ``L = min(bptt, nbatch - 1 - i)``: ``data`` is rows ``i … i+L-1``, shape (L, B),
    and ``target`` rows ``i+1 … i+L`` flattened time-major, shape (L·B,), matching the
    language model's logits. Both float32 (when ``dtype`` is None) constant Tensors.

    >>> data, target = get_batch(batchify(list(range(8)), 2), 0, 2)
    >>> data.numpy().tolist(), target.numpy().tolist()
    ([[0.0, 4.0], [1.0, 5.0]], [1.0, 5.0, 2.0, 6.0])
    """
    length = min(bptt, len(batches) - 1 - i)
    if length < 1 or i < 0:
        raise ValueError(
            f"get_batch: no chunk at i={i} with bptt={bptt} in {len(batches)} rows; "
            f"need bptt >= 1 and 0 <= i <= {len(batches) - 2}"
        )
    dtype = "float32" if dtype is None else dtype
    data = batches[i : i + length]
    target = batches[i + 1 : i + 1 + length].reshape(-1)
    return (
        Tensor(data, device=device, dtype=dtype, requires_grad=False),
        Tensor(target, device=device, dtype=dtype, requires_grad=False),
    )


__all__ = ["Dictionary", "Corpus", "CorpusFormatError", "read_lines", "batchify", "get_batch"]
