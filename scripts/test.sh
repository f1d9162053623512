#!/usr/bin/env bash
# The test command: install Fashion-MNIST and the package with its dev extras, then run
# the test suite (the slow end-to-end runs are deselected; `-m slow` selects them).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-fashion-mnist.sh
python -m pip install -q -e ".[dev]"
python -m pytest -q "$@"
