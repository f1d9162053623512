"""The King James Bible as a Penn-Treebank-style corpus (``needle train --dataset kjv``).

Why this text: the Penn Treebank cannot be downloaded here, and a fresh Debian machine
can get the KJV from its own archive (``apt-get install bible-kjv``, public domain,
31,102 verses, about 790,000 words: PTB's order of size). Debian's ``bible-kjv-text``
keeps it in a compressed binary file read by the ``bible`` program (``bible-kjv``);
``bible -f "Gen1:1-Rev22:21"`` prints one verse per line, ``Ge1:1 In the beginning…``.

The conversion (:func:`build_kjv`), PTB-style:

* one verse per line; the verse reference is dropped;
* lowercase; a possessive ``'s`` becomes its own token (``lord 's``), as in PTB;
  hyphenated words stay one token; numbers become ``N``; all other punctuation is
  dropped;
* the split is by blocks of :data:`BLOCK_VERSES` consecutive verses, so every book
  contributes to every split and the held-out text is contiguous (the hidden state
  carried across batches sees running text): of every 20 blocks, block 18 goes to
  ``valid.txt``, block 19 to ``test.txt`` and the other 18 to ``train.txt`` (90/5/5);
* the vocabulary is the :data:`VOCAB_WORDS` most frequent words of the *training*
  split (ties broken alphabetically); every other word becomes ``<unk>``. With the
  ``<eos>`` the course's :class:`~needle.data.Corpus` adds, that is 10,000 ids, as PTB.

The three files are written into a temporary folder beside the target and renamed
into place, so a reader never sees a half-written corpus.

>>> ptb_tokens("And the LORD's 12 sheep-folds, Jesus' (sic).")
['and', 'the', 'lord', "'s", 'N', 'sheep-folds', 'jesus', 'sic']
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

from .mnist_dataset import DatasetNotFoundError, default_data_dir

__all__ = [
    "VOCAB_WORDS",
    "BLOCK_VERSES",
    "KJV_VERSES",
    "SPLIT_FILES",
    "INSTALL_COMMAND",
    "UNK",
    "ptb_tokens",
    "split_of",
    "build_vocabulary",
    "write_corpus",
    "read_kjv_verses",
    "build_kjv",
    "kjv_folder",
    "has_corpus",
]

#: Words kept in the vocabulary besides ``<unk>`` (``<eos>`` is added when reading).
VOCAB_WORDS = 9998
#: Consecutive verses that go to the same split.
BLOCK_VERSES = 50
#: The number of verses of the King James Bible (what ``bible`` must print).
KJV_VERSES = 31102
SPLIT_FILES = ("train.txt", "valid.txt", "test.txt")
UNK = "<unk>"
INSTALL_COMMAND = "sudo apt-get install bible-kjv  (or: bash scripts/install-text-corpus.sh)"
_WHOLE_BIBLE = "Gen1:1-Rev22:21"
_TOKEN = re.compile(r"[a-z]+(?:-[a-z]+)*|'s\b|\d+(?:[.,]\d+)*")


def ptb_tokens(text: str) -> list[str]:
    """The PTB-style tokens of a line: lowercase words, ``'s``, ``N`` for numbers."""
    return ["N" if token[0].isdigit() else token for token in _TOKEN.findall(text.lower())]


def split_of(index: int) -> int:
    """The split (0 train, 1 valid, 2 test) of the verse with this 0-based index."""
    block = (index // BLOCK_VERSES) % 20
    return {18: 1, 19: 2}.get(block, 0)


def build_vocabulary(lines: Iterable[Sequence[str]], size: int = VOCAB_WORDS) -> set[str]:
    """The ``size`` most frequent tokens of ``lines`` (ties: alphabetical order)."""
    counts = Counter(token for line in lines for token in line)
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return {word for word, _ in ranked[:size]}


def write_corpus(
    verses: Sequence[str], folder: str | os.PathLike, vocab_words: int = VOCAB_WORDS
) -> Path:
    """Tokenise, split and write ``verses`` as PTB-format train/valid/test files, atomically.

    Args:
        verses: the text, one verse (or sentence) per item, in order.
        folder: the folder to create; if it already exists it is replaced.
        vocab_words: words kept besides ``<unk>`` (from the training split's counts).

    Returns:
        ``folder`` as a Path.
    """
    tokens = [ptb_tokens(verse) for verse in verses]
    splits: list[list[list[str]]] = [[], [], []]
    for index, line in enumerate(tokens):
        splits[split_of(index)].append(line)
    vocab = build_vocabulary(splits[0], vocab_words)
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
    try:
        for name, lines in zip(SPLIT_FILES, splits):
            with open(tmp / name, "w", encoding="utf-8") as file:
                for line in lines:  # PTB's layout: a space before and after every line
                    file.write(" " + " ".join(w if w in vocab else UNK for w in line) + " \n")
        os.chmod(tmp, 0o755)
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return folder


def read_kjv_verses(program: str = "bible") -> list[str]:
    """Every verse of the KJV, in order, as printed by Debian's ``bible`` program.

    Raises:
        DatasetNotFoundError: the program is missing, fails, or prints another number
            of verses than :data:`KJV_VERSES` (the message says how to install it).
    """
    path = shutil.which(program)
    if path is None:
        raise DatasetNotFoundError(
            f"the KJV corpus needs Debian's `{program}` program and its text; install "
            f"them with: {INSTALL_COMMAND}. Or use --dataset ptb --data-dir DIR with "
            f"PTB-format train.txt, valid.txt and test.txt"
        )
    result = subprocess.run(
        [path, "-f", _WHOLE_BIBLE],
        capture_output=True,
        text=True,
        encoding="utf-8",
        errors="replace",
        check=False,
    )
    # A verse line is "Ref Text"; anything else (warnings, headings) is not a verse.
    verses = [
        line.split(" ", 1)[1]
        for line in result.stdout.splitlines()
        if re.match(r"\S+\d+:\d+ ", line)
    ]
    if result.returncode != 0 or len(verses) != KJV_VERSES:
        raise DatasetNotFoundError(
            f"`{program} -f {_WHOLE_BIBLE}` gave {len(verses)} verses (exit status "
            f"{result.returncode}), expected {KJV_VERSES}: is the text installed? "
            f"{INSTALL_COMMAND}. {result.stderr.strip()[:200]}"
        )
    return verses


def has_corpus(folder: str | os.PathLike) -> bool:
    """True if ``folder`` holds ``train.txt``, ``valid.txt`` and ``test.txt``."""
    return all((Path(folder) / name).is_file() for name in SPLIT_FILES)


def build_kjv(folder: str | os.PathLike | None = None, program: str = "bible") -> Path:
    """Convert the installed KJV into ``folder`` (default: the ``kjv`` cache folder).

    Raises:
        DatasetNotFoundError: ``bible`` or its text is not installed.
    """
    return write_corpus(
        read_kjv_verses(program), default_data_dir("kjv") if folder is None else folder
    )


def kjv_folder(data_dir: str | os.PathLike | None = None) -> Path:
    """The folder of the converted KJV, converting it first if it is not there yet.

    ``data_dir``: where the converted files are (or go); None: ``$NEEDLE_DATA/kjv`` or
    ``~/.cache/needle/kjv``.

    Raises:
        DatasetNotFoundError: not converted yet and ``bible`` is not installed.
    """
    folder = Path(data_dir) if data_dir is not None else default_data_dir("kjv")
    if has_corpus(folder):
        return folder
    # A few seconds of silence before the first epoch would look like a hang.
    print(
        f"converting the King James Bible PTB-style into {folder} (first use only)",
        file=sys.stderr,
        flush=True,
    )
    return build_kjv(folder)


if __name__ == "__main__":  # python -m needle.data.datasets.kjv [FOLDER]
    print(build_kjv(sys.argv[1] if len(sys.argv) > 1 else None))
