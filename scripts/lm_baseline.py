"""Print the add-one unigram perplexity of a language-model corpus's test split (the baseline).

Usage: python scripts/lm_baseline.py [--dataset kjv|ptb] [--data-dir DIR] [--limit-train N]

The unigram model is counted on train.txt (its first N tokens with --limit-train, to
compare with ``needle train --limit-train N``); the vocabulary is the course's Corpus's
(train.txt then test.txt, with <eos>), as ``needle train --model *-lm`` sees it.
"""

from __future__ import annotations

import argparse

from needle.data import Corpus
from needle.tasks.language import DATASETS, corpus_folder, unigram_perplexity
from needle.training import TrainConfig


def main() -> None:
    """Parse the options, read the corpus, print the baseline."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=list(DATASETS), default="kjv")
    parser.add_argument("--data-dir", metavar="DIR")
    parser.add_argument(
        "--limit-train",
        type=int,
        metavar="N",
        help="count the unigram model on the first N training tokens only",
    )
    args = parser.parse_args()
    config = TrainConfig(model="lstm-lm", dataset=args.dataset, data_dir=args.data_dir)
    corpus = Corpus(corpus_folder(config))
    train = corpus.train[: args.limit_train] if args.limit_train else corpus.train
    ppl = unigram_perplexity(train, corpus.test, len(corpus.dictionary))
    print(
        f"{args.dataset}: unigram (add-one) test perplexity {ppl:.2f} "
        f"({len(train)} train / {len(corpus.test)} test tokens, "
        f"vocabulary {len(corpus.dictionary)})"
    )


if __name__ == "__main__":
    main()
