"""Print a run's metrics.csv as the results table of docs/results.md (Markdown).

Usage: python scripts/results_table.py runs/default/metrics.csv

The README's default-run table is this script's output for ``needle train --out
runs/default``; rerun both to regenerate it (on a quiet machine: the seconds per epoch
depend on the load, the losses and errors only on the backend and the BLAS thread count).
The last test error is in bold.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

COLUMNS = ("train_loss", "train_err", "test_loss", "test_err")


def results_table(rows: list[dict[str, str]]) -> str:
    """The Markdown table of ``metrics.csv``'s rows, one line per epoch.

    Example:
        >>> print(results_table([{"epoch": "1", "train_loss": "0.5", "train_err": "0.2",
        ...                       "test_loss": "0.4", "test_err": "0.18", "seconds": "1.26"}]))
        | epoch | train loss | train err | test loss | test err | s/epoch |
        |---:|---:|---:|---:|---:|---:|
        | 1 | 0.5000 | 0.2000 | 0.4000 | **0.1800** | 1.3 |
    """
    lines = [
        "| epoch | train loss | train err | test loss | test err | s/epoch |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for index, row in enumerate(rows):
        values = [f"{float(row[c]):.4f}" for c in COLUMNS]
        if index == len(rows) - 1:
            values[-1] = f"**{values[-1]}**"
        lines.append(f"| {row['epoch']} | {' | '.join(values)} | {float(row['seconds']):.1f} |")
    return "\n".join(lines)


def main() -> None:
    """Read the CSV named on the command line and print its table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("metrics", type=Path, help="a metrics.csv written by needle train")
    with open(parser.parse_args().metrics, newline="") as file:
        print(results_table(list(csv.DictReader(file))))


if __name__ == "__main__":
    main()
