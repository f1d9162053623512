"""Small data sets in real formats, written by the tests: PTB text folders, CIFAR-10 batches."""

from __future__ import annotations

import io
import pickle
import struct
from pathlib import Path

import numpy as np

# ----- PTB-format text (tests/training/) -----------------------------------------------------

WORDS = ("the cat dog saw a big small red house tree ran sat on under and with of to in 's").split()


def write_ptb_folder(folder: Path, seed: int = 0, lines: tuple[int, int] = (60, 15)) -> Path:
    """A PTB-format folder of random sentences over WORDS (train, valid, test)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for name, count in zip(("train.txt", "valid.txt", "test.txt"), (lines[0], *lines[1:] * 2)):
        sentences = [" ".join(rng.choice(WORDS, size=rng.integers(3, 9))) for _ in range(count)]
        (folder / name).write_text("".join(f" {s} \n" for s in sentences))
    return folder


# ----- CIFAR-10 batches as the official files hold them (tests/data/, tests/training/) ------

TRAIN = [f"data_batch_{i}" for i in range(1, 6)]


class Py2Pickler(pickle._Pickler):
    """Pickles as Python 2's cPickle did: str and bytes both as (SHORT_)BINSTRING."""

    dispatch = dict(pickle._Pickler.dispatch)

    def save_py2_string(self, obj):
        data = obj.encode("latin-1") if isinstance(obj, str) else obj
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    dispatch[bytes] = save_py2_string
    dispatch[str] = save_py2_string


def py2_dumps(obj) -> bytes:
    buf = io.BytesIO()
    Py2Pickler(buf, protocol=2).dump(obj)
    return buf.getvalue().replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")


def make_batch(rng, n: int, label: str) -> dict:
    return {
        b"batch_label": label.encode(),
        b"labels": [int(v) for v in rng.integers(0, 10, n)],
        b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
        b"filenames": [f"img_{i}.png".encode() for i in range(n)],
    }
